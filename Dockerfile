# syntax=docker/dockerfile:1
# Switchyard as a container entrypoint: one image runs the endpoint described by the YAML files
# mounted at /config (a Kubernetes ConfigMap, or your own folder for local debugging).
#
#   docker build -t switchyard .
#   docker run --rm -p 5001:5001 -v /path/to/endpoint-folder:/config:ro switchyard
#
# (the README's "Container image" and "Local debugging in Docker" sections show more).
#
# Paths inside the image (Azure's, where Azure has one):
#   /config                          endpoint.yml + one YAML file per deployment (--config-dir)
#   /var/azureml-app                 code: score.py deployments (code_configuration.code)
#   /var/azureml-app/azureml-models  models: mount yours here (the sample models ship in it)
#   /var/cache/switchyard/envs       venvs built from conda files (SWITCHYARD_ENV_CACHE_DIR)
#   /opt/switchyard/bin              the binary and, beside it, libonnxruntime.so (found there
#                                    without any environment variable)
# Ports: 5001 the scoring plane; 5003 the Open Inference Protocol over gRPC (tritonclient.grpc);
# 5002 the admin API (loopback unless --admin-host and a token).

ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm

# --- ONNX Runtime: the pinned PyPI wheel of scripts/setup.sh, checksum verified. ---
FROM ${DEBIAN_IMAGE} AS ort
ARG ORT_VERSION=1.31.1
ARG ORT_WHEEL=onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ARG ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned on purpose: Debian's stable updates replace versions (a pin would stop building).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /ort
RUN python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 "onnxruntime==${ORT_VERSION}" -d /ort/wheel \
 && echo "${ORT_WHEEL_SHA256}  /ort/wheel/${ORT_WHEEL}" | sha256sum -c - \
 && python3 -c 'import shutil, sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); n = next(n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so.")); shutil.copyfileobj(z.open(n), open("/ort/libonnxruntime.so", "wb"))' \
      "/ort/wheel/${ORT_WHEEL}" \
 && rm -rf /ort/wheel

# --- The release binary, built from the locked dependency set. ---
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
# BINARY=prebuilt takes the release binary built on the host and staged at
# target/image/bin/switchyard instead of compiling (scripts/image.sh, where no Rust image can be
# pulled, e.g. CI: it also sets RUST_IMAGE to the Debian base; same glibc as the host's).
# Debug info is stripped (52 MB -> 9 MB; symbols stay, so a backtrace still names functions).
ARG BINARY=cargo
RUN if [ "${BINARY}" = prebuilt ]; then cp target/image/bin/switchyard /switchyard; \
    else CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --locked --bin switchyard \
      && cp target/release/switchyard /switchyard; fi

# --- The runtime image. ---
FROM ${DEBIAN_IMAGE}
# Python 3 with venv for score.py deployments (venvs are built from their conda files at load,
# or baked in at build time: see the README). Unpinned for the reason above.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --no-log-init --system --uid 10001 --user-group --create-home --home-dir /home/switchyard switchyard \
 && mkdir -p /config /var/azureml-app/azureml-models /var/cache/switchyard/envs \
 && chown 10001:10001 /var/cache/switchyard/envs
COPY --from=ort /ort/libonnxruntime.so /opt/switchyard/bin/libonnxruntime.so
COPY --from=builder /switchyard /opt/switchyard/bin/switchyard
COPY models/model-1 /var/azureml-app/azureml-models/model-1
COPY models/model-2 /var/azureml-app/azureml-models/model-2
ENV PATH=/opt/switchyard/bin:$PATH \
    HOME=/home/switchyard \
    SWITCHYARD_ENV_CACHE_DIR=/var/cache/switchyard/envs
WORKDIR /var/azureml-app
USER 10001:10001
EXPOSE 5001 5003
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["switchyard", "probe"]
ENTRYPOINT ["switchyard"]
CMD ["serve", "--host", "0.0.0.0", "--config-dir", "/config"]
