# Training image: the squid_monai package and the MONAI bundle, CUDA build of torch from PyPI.
#   docker build -f docker/train.Dockerfile -t squid-monai-train:0.1.0 .
# See docker/README.md for running it.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/squid-monai
COPY pyproject.toml README.md ./
COPY squid_monai ./squid_monai
COPY pipelines ./pipelines
COPY bundles ./bundles

# torch pinned as in .ci/run; the PyPI wheel for Linux x86_64 bundles its CUDA libraries.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}" .

# outputs (checkpoints, calibration, MLflow) go to the mounted /runs; data is mounted at /data.
# Arguments after the image name are bundle overrides and replace CMD: keep --output_dir /runs.
VOLUME ["/runs", "/data"]
ENTRYPOINT ["python", "-m", "monai.bundle", "run", "training", "--config_file", "bundles/squid/configs/train.json"]
CMD ["--output_dir", "/runs"]
