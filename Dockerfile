# Disco Diffusion (CLIP RN50) as a Jina Flow, served over gRPC on port 51000 and HTTP on 51001
# (REST, and the web page at /ui/).
#
#   docker build -t disco-diffusion-jina:1.0 .
#   docker volume create disco-models
#   # optional: fetch the weights ahead of time (~4.5 GB with both UNets) instead of on first start
#   docker run --rm -v disco-models:/models disco-diffusion-jina:1.0 python -m disco_service.client.download
#   docker run --gpus all -p 51000:51000 -p 51001:51001 -v disco-models:/models disco-diffusion-jina:1.0
#
# Weights are never baked into the image: they live in the /models volume (DISCO_MODEL_DIR).
#
# CUDA: torch 2.14.1 from PyPI is built for CUDA 13.0 and brings its own CUDA, cuBLAS and cuDNN
# libraries (the nvidia-* wheels), so the base is CUDA 13.0's small "base" flavour: the host needs
# an NVIDIA driver for CUDA 13.0 (R580 or newer), which the NVIDIA container toolkit checks before
# the container starts (the base image's NVIDIA_REQUIRE_CUDA). For an older driver, build with a
# CUDA 12 base and PyTorch's wheel index for that CUDA (it must carry torch 2.14.1 and torchvision
# 0.29.1), e.g. --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (a driver for CUDA 12.8).
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 itself only has 3.10 and an early 3.11.0).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv tini \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

WORKDIR /app
COPY requirements.txt .
# Only what the product runs (requirements.txt; tests and lint are in requirements-dev.txt).
# With TORCH_INDEX_URL, torch and torchvision (the versions pinned there) come from that index first;
# requirements.txt's torch==2.14.1 is then already satisfied by e.g. 2.14.1+cu128.
ARG TORCH_INDEX_URL=
RUN pip install --upgrade pip \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" $(grep -E '^(torch|torchvision)==' requirements.txt); \
    fi \
 && pip install -r requirements.txt

# The code stays owned by root (read-only for the service); /models (weights) and /results (the
# result store: images, kept for DISCO_RESULT_TTL_S) are the user's, so new volumes mounted there
# are writable by it.
COPY . .
# The engine (disco) and the service (disco_service) as an installed project, in place (serve.py
# and flow.yml stay in /app); its requirements are installed above.
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin disco \
 && mkdir -p /models /results \
 && chown disco:disco /models /results

# DISCO_USE_GPU=1: the executors refuse to start without a usable GPU (-e DISCO_USE_GPU=0 for the CPU).
# DISCO_STATE_DIR: the state store (SQLite: the gateway's queue and the executors' job board) on the
# results volume, so it outlives the container; several gateways and hosts share one through
# DISCO_DATABASE_URL (PostgreSQL) instead.
ENV DISCO_MODEL_DIR=/models \
    DISCO_RESULTS_DIR=/results \
    DISCO_STATE_DIR=/results/state \
    TORCH_HOME=/models/torch \
    HF_HOME=/models/huggingface \
    JINA_OPTOUT_TELEMETRY=1 \
    DISCO_USE_GPU=1
VOLUME /models /results
USER disco
EXPOSE 51000 51001

# The first start may download the weights into an empty volume: allow for it before failures count.
HEALTHCHECK --interval=30s --timeout=20s --start-period=30m --retries=3 \
    CMD ["jina", "ping", "flow", "grpc://localhost:51000", "--timeout", "10000"]

# serve.py is `jina flow --uses flow.yml` with DISCO_SAMPLER_REPLICAS samplers (one GPU each when several).
# tini as PID 1: it hands SIGTERM to serve.py (which drains its jobs) and reaps the processes
# that the Flow's executors leave behind.
ENV DISCO_SAMPLER_REPLICAS=1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "serve.py"]
