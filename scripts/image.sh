#!/usr/bin/env bash
# Builds the project's Dockerfile into a real image and runs it, on a machine that cannot pull
# from any image registry (CI, this sandbox): only Debian's apt mirrors and PyPI are reachable.
#
#   scripts/image.sh            build with the host's release binary (--build-arg
#                               BINARY=prebuilt, the builder stage on the Debian base), then
#                               run the image and check it
#   scripts/image.sh --full     the full multi-stage build (cargo inside the image) on a Rust
#                               base made locally from the host's toolchain (slow: minutes)
#   scripts/image.sh --no-run   build only
#
# Steps, each cached under target/image/ across runs:
#   1. buildah, podman, runc and debootstrap from Debian, pinned (about 50 s the first time);
#   2. a `debian:bookworm-slim` equivalent: `debootstrap --variant=minbase bookworm`, trimmed like
#      the official slim image (no docs, man pages or apt lists), imported under the name the
#      Dockerfile's FROM expects, docker.io/library/debian:bookworm-slim;
#   3. the Dockerfile, built with `--pull-never` (nothing is fetched from a registry; the ONNX
#      Runtime stage still downloads the pinned wheel from PyPI and checks its sha256, and apt
#      installs Python 3 from Debian);
#   4. the image run with podman in its own network namespace (loopback only) on the sample
#      endpoint (deploy/kubernetes/configmap.yaml's two ONNX deployments) plus a score.py
#      deployment, checked from inside the container: the HEALTHCHECK (`switchyard probe`)
#      exits 0, `/health/ready` answers 200, and requests are scored by the CLI in the image.
# Images live in a private container store (target/image/storage), never the machine's own.
# Needs root (or passwordless sudo) for apt, debootstrap and the container store.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDAH_VERSION=1.28.2+ds1-3+deb12u1+b3
PODMAN_VERSION=4.3.1+ds1-8+deb12u1+b3
DEBOOTSTRAP_VERSION=1.0.128+nmu2+deb12u2
# runc, not Debian's default crun: crun 1.8 refuses a host with cgroup v1 plus a v2 hierarchy
# that has a controller ("cgroups in hybrid mode not supported"), as this sandbox has.
RUNC_VERSION=1.1.5+ds1-1+deb12u1
SUITE=bookworm
MIRROR=${SWITCHYARD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_NAME=docker.io/library/debian:bookworm-slim
IMAGE=${SWITCHYARD_IMAGE:-localhost/switchyard:ci}

full=0
run=1
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    --no-run) run=0 ;;
    *) echo "image.sh: unknown argument $arg (expected --full or --no-run)" >&2; exit 2 ;;
  esac
done

say() { echo "image.sh: $*" >&2; }
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { say "needs root (apt, debootstrap, the container store) or sudo"; exit 1; }
  SUDO=sudo
fi
elapsed() { echo $(($(date +%s) - $1)); }

# --- 1. The tools, pinned. ---
need=()
for pkg in "buildah=$BUILDAH_VERSION" "podman=$PODMAN_VERSION" "debootstrap=$DEBOOTSTRAP_VERSION" "runc=$RUNC_VERSION"; do
  [ "$(dpkg-query -W -f '${Version}' "${pkg%%=*}" 2>/dev/null)" = "${pkg#*=}" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  t=$(date +%s)
  say "installing ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  say "tools installed in $(elapsed "$t") s"
fi

# --- The private container store (overlay where the kernel allows it, vfs otherwise). ---
STATE=$PWD/target/image
mkdir -p "$STATE"
if [ ! -f "$STATE/storage.conf" ]; then
  driver=vfs
  probe_dir=$(mktemp -d "$STATE/overlay-probe.XXXX")
  mkdir -p "$probe_dir"/{l,u,w,m}
  if $SUDO mount -t overlay overlay -o "lowerdir=$probe_dir/l,upperdir=$probe_dir/u,workdir=$probe_dir/w" "$probe_dir/m" 2>/dev/null; then
    $SUDO umount "$probe_dir/m"
    driver=overlay
  fi
  rm -rf "$probe_dir"
  printf '[storage]\ndriver = "%s"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' \
    "$driver" "$STATE" "$STATE" >"$STATE/storage.conf"
fi
export CONTAINERS_STORAGE_CONF=$STATE/storage.conf
has_image() { $SUDO env CONTAINERS_STORAGE_CONF="$CONTAINERS_STORAGE_CONF" podman image exists "$1"; }
podman() { $SUDO env CONTAINERS_STORAGE_CONF="$CONTAINERS_STORAGE_CONF" podman --cgroup-manager cgroupfs --runtime runc "$@"; }
buildah() { $SUDO env CONTAINERS_STORAGE_CONF="$CONTAINERS_STORAGE_CONF" buildah "$@"; }

# --- 2. The base image. ---
# The name changes whenever what the base holds changes (the cache is this file).
base_tar=$STATE/base/$SUITE-minbase-slim-r2.tar
if [ ! -f "$base_tar" ]; then
  t=$(date +%s)
  rootfs=$STATE/base/rootfs
  $SUDO rm -rf "$rootfs"
  mkdir -p "$STATE/base/debs"
  say "debootstrap --variant=minbase $SUITE (from $MIRROR)"
  $SUDO debootstrap --variant=minbase --cache-dir="$STATE/base/debs" "$SUITE" "$rootfs" "$MIRROR" >"$STATE/base/debootstrap.log"
  # What the official slim image does: no docs/man/locales from later installs, no apt caches.
  $SUDO tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  # Its apt sources too: point-release updates and security fixes, no translations.
  $SUDO rm -f "$rootfs/etc/apt/sources.list"
  $SUDO tee "$rootfs/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  echo 'Acquire::Languages "none";' | $SUDO tee "$rootfs/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
  $SUDO tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  $SUDO find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  $SUDO rm -rf "$rootfs"/usr/share/{man,info,locale,groff,lintian}/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
  $SUDO tar -C "$rootfs" --numeric-owner -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
  $SUDO rm -rf "$rootfs"
  say "base rootfs made in $(elapsed "$t") s ($(du -m "$base_tar" | cut -f1) MB)"
fi
if ! has_image "$BASE_NAME"; then
  podman import --quiet --change 'CMD ["bash"]' "$base_tar" "$BASE_NAME" >/dev/null
  say "imported $base_tar as $BASE_NAME"
fi

# --- 3. The image. ---
# Where the host trusts extra CAs (a TLS-intercepting proxy in front of PyPI and crates.io, as
# in this sandbox), the build's RUN steps see them too: installing ca-certificates adds every
# /usr/local/share/ca-certificates/*.crt to the bundle that pip and cargo check. The image then
# trusts them as well; it is a local test image.
ca_mount=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  ca_mount=(--volume /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi
build_args=(--pull-never --format docker --isolation chroot --network host --layers -f Dockerfile -t "$IMAGE" "${ca_mount[@]}")
if [ "$full" = 1 ]; then
  # A Rust base from the host's toolchain: the slim base plus rustup's active toolchain (its
  # binaries and libraries) and a
  # C linker, under the name the Dockerfile's RUST_IMAGE expects.
  rust_image=$(sed -n 's/^ARG RUST_IMAGE=//p' Dockerfile)
  if ! has_image "docker.io/library/$rust_image"; then
    t=$(date +%s)
    toolchain=$(rustc --print sysroot)
    ctr=$(buildah from --pull-never "$BASE_NAME")
    buildah run --isolation chroot --network host "${ca_mount[@]}" "$ctr" -- sh -c \
      'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
    for part in bin lib libexec etc; do  # not share/ (docs, 0.8 GB)
      [ ! -d "$toolchain/$part" ] || buildah copy --quiet "$ctr" "$toolchain/$part" "/usr/local/rust/$part" >/dev/null
    done
    buildah config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env CARGO_HOME=/usr/local/cargo "$ctr"
    buildah commit --quiet --rm "$ctr" "docker.io/library/$rust_image" >/dev/null
    say "made docker.io/library/$rust_image from $toolchain in $(elapsed "$t") s"
  fi
else
  bin=${SWITCHYARD_IMAGE_BINARY:-target/release/switchyard}
  if [ -z "${SWITCHYARD_IMAGE_BINARY:-}" ]; then
    t=$(date +%s)
    cargo build --release --locked --bin switchyard
    say "release binary ready in $(elapsed "$t") s"
  fi
  mkdir -p target/image/bin
  # Without its debug info, as the Dockerfile's own cargo build makes it.
  strip --strip-debug -o target/image/bin/switchyard.tmp "$bin" 2>/dev/null || cp "$bin" target/image/bin/switchyard.tmp
  mv target/image/bin/switchyard.tmp target/image/bin/switchyard
  build_args+=(--build-arg BINARY=prebuilt --build-arg "RUST_IMAGE=$BASE_NAME")
fi
t=$(date +%s)
say "building $IMAGE (${build_args[*]})"
buildah build "${build_args[@]}" . >"$STATE/build.log" 2>&1 || { tail -40 "$STATE/build.log" >&2; say "build failed (log: $STATE/build.log)"; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE in $(elapsed "$t") s: $((size / 1000000)) MB"
echo "image_size_bytes=$size"
[ "$run" = 1 ] || exit 0

# --- 4. Run it and check it from inside. ---
t=$(date +%s)
work=$(mktemp -d)
name=switchyard-image-check-$$
cleanup() { podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
# The ConfigMap's files, as the kubelet mounts them, plus a score.py deployment (no environment:
# the image's python3) at 0 traffic.
python3 - "$work" <<'EOF'
import os, re, sys
text = open("deploy/kubernetes/configmap.yaml").read()
data = text.split("\ndata:\n", 1)[1]
for name, body in re.findall(r"^  (\S+): \|\n((?:    .*\n|\n)*)", data, re.M):
    with open(os.path.join(sys.argv[1], name), "w") as f:
        f.write("".join(line[4:] + "\n" for line in body.rstrip("\n").split("\n")))
EOF
cat >"$work/py-deployment.yml" <<'EOF'
name: python-probe
endpoint_name: my-endpoint
model:
  path: /var/azureml-app/probe/model
code_configuration:
  code: /var/azureml-app/probe/code
  scoring_script: score.py
instance_type: Standard_DS3_v2
instance_count: 1
EOF
cp sample-requests/model-1.json "$work/request.json" 2>/dev/null || cp tests/fixtures/seed/sample-request.json "$work/request.json"
echo '{"do": "ok"}' >"$work/py-request.json"
chmod -R a+rX "$work"
# Explicit rlimits: podman's defaults raise them, which needs CAP_SYS_RESOURCE (sandboxes such
# as this one drop it): the open-file limit as it is here, processes at 32768 at most.
nofile=$(ulimit -Hn)
[ "$nofile" != unlimited ] || nofile=1048576
nproc=$(ulimit -Hu)
{ [ "$nproc" != unlimited ] && [ "$nproc" -le 32768 ]; } || nproc=32768
# (podman 4.3 logs that it cannot reach systemd to time the HEALTHCHECK; it is run by hand below.)
podman run -d --name "$name" --network none --health-interval disable --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
  -v "$work":/config:ro -v "$PWD/tests/fixtures/python/probe":/var/azureml-app/probe:ro \
  "$IMAGE" >/dev/null 2>"$STATE/run.err" || { cat "$STATE/run.err" >&2; exit 1; }
in_ctr() { podman exec "$name" "$@"; }
# Ready within two minutes (the HEALTHCHECK's own start period is 60 s).
ready=0
for _ in $(seq 240); do
  if podman healthcheck run "$name" >/dev/null 2>&1; then ready=1; break; fi
  [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || break
  sleep 0.5
done
if [ "$ready" != 1 ]; then
  podman logs "$name" >&2 || true
  say "the container never became healthy"; exit 1
fi
say "HEALTHCHECK (switchyard probe) exits 0"
in_ctr switchyard probe --url http://127.0.0.1:5001/health/ready
answer=$(in_ctr switchyard online-endpoint invoke --name my-endpoint --request-file /config/request.json)
echo "$answer" | grep -q '\[' || { say "unexpected answer from the ONNX deployment: $answer"; exit 1; }
say "scored by blue (ONNX, model-1) inside the container: $answer"
answer=$(in_ctr switchyard online-endpoint invoke --name my-endpoint --deployment-name python-probe --request-file /config/py-request.json)
echo "$answer" | grep -q 'pid' || { say "unexpected answer from the score.py deployment: $answer"; exit 1; }
say "scored by python-probe (score.py on the image's python3) inside the container: $answer"
user=$(in_ctr id -u 2>/dev/null || podman inspect --format '{{.Config.User}}' "$name")
say "running as uid $user; checks took $(elapsed "$t") s"
echo "image.sh: OK"
