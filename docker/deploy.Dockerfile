# Deploy image: the SQUID MONAI Deploy app (DICOM/PNG in; SR, PNG, JSON out) without the
# holoscan packager. The model is mounted, not baked in.
#   docker build -f docker/deploy.Dockerfile -t squid-monai-deploy:0.1.0 .
# CPU-only torch: add --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index>. See docker/README.md.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/squid-monai
COPY pyproject.toml README.md ./
COPY squid_monai ./squid_monai
COPY pipelines ./pipelines

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
RUN if [ -n "${TORCH_INDEX_URL}" ]; then pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; fi \
 && pip install "torch==${TORCH_VERSION}" ".[deploy]"

# The MAP conventions, so the same paths work with or without `monai-deploy package`.
ENV HOLOSCAN_INPUT_PATH=/var/holoscan/input \
    HOLOSCAN_OUTPUT_PATH=/var/holoscan/output \
    HOLOSCAN_MODEL_PATH=/opt/holoscan/models
RUN useradd --create-home --uid 1000 squid && mkdir -p /var/holoscan/output && chown squid /var/holoscan/output
USER squid
ENTRYPOINT ["python", "-m", "pipelines.squid_app"]
