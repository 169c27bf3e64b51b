# Disco Diffusion (CLIP RN50) as a Jina Flow, served over gRPC on port 51000.
#
#   docker build -t disco-diffusion-jina .
#   docker volume create disco-models
#   # optional: fetch the weights ahead of time (~4.5 GB with both UNets) instead of on first start
#   docker run --rm -v disco-models:/models disco-diffusion-jina python -m disco.weights
#   docker run --gpus all -p 51000:51000 -v disco-models:/models disco-diffusion-jina
#
# Weights are never baked into the image: they live in the /models volume (DISCO_MODEL_DIR).
# Base: the CUDA "base" flavour. PyPI's torch wheels bring their own CUDA, cuBLAS and cuDNN
# libraries (the nvidia-* wheels), so a cudnn-runtime base would only add gigabytes of
# duplicates; the GPU driver is mounted by the NVIDIA container toolkit at run time.
FROM nvidia/cuda:12.4.1-base-ubuntu22.04

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
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

WORKDIR /app
COPY requirements.txt .
RUN pip install --upgrade pip && pip install -r requirements.txt

# The code stays owned by root (read-only for the service); only /models is the user's.
COPY . .
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin disco \
 && mkdir -p /models \
 && chown disco:disco /models

ENV DISCO_MODEL_DIR=/models \
    TORCH_HOME=/models/torch \
    HF_HOME=/models/huggingface \
    PYTHONPATH=/app/executors \
    JINA_OPTOUT_TELEMETRY=1 \
    DISCO_USE_GPU=1
VOLUME /models
USER disco
EXPOSE 51000

# The first start may download the weights into an empty volume: allow for it before failures count.
HEALTHCHECK --interval=30s --timeout=20s --start-period=30m --retries=3 \
    CMD ["jina", "ping", "flow", "grpc://localhost:51000", "--timeout", "10000"]

# serve.py is `jina flow --uses flow.yml` with DISCO_SAMPLER_REPLICAS samplers (one GPU each when several).
ENV DISCO_SAMPLER_REPLICAS=1
CMD ["python", "serve.py"]
