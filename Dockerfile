# sdlocal in a container: the same lock and the same launcher checks as ./webui.sh.
#
#   docker compose up                       (GPU; see compose.yaml and the README's "Docker" section)
#   docker build -t sdlocal .               (PyPI's torch: the CUDA 13.0 build, needs an NVIDIA driver >= 580)
#   docker build -t sdlocal:cpu --build-arg TORCH=cpu .       (no GPU: PyTorch's CPU build, about 1 GB smaller)
#   docker build -t sdlocal:cu126 --build-arg TORCH=cu126 .   (CUDA 12.6: drivers 560-579, or GPUs older than
#                                                              Turing, which CUDA 13 no longer supports)
#   docker run --gpus all -p 7860:7860 -v sdlocal-data:/data sdlocal [sdlocal flags...]
#
# Two layers that matter: the dependencies (rebuilt only when requirements.lock or the torch choice changes) and
# sdlocal's own code (a code change rebuilds in seconds). No model weights are baked in: they live in /data.
FROM python:3.11-slim-bookworm

# cuda: PyPI's torch (CUDA 13.0). cpu: PyTorch's CPU index. cuXYZ: that CUDA build from PyTorch's index, if the
# pinned torch is published for it (pip says "no matching distribution" otherwise). TORCH_INDEX_URL overrides all
# of them, e.g. for a mirror.
ARG TORCH=cuda
ARG TORCH_INDEX_URL=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SDLOCAL_DATA_DIR=/data \
    SDLOCAL_MODELS_DIRS=/models \
    SDLOCAL_PORT=7860 \
    HF_HOME=/cache/huggingface

WORKDIR /app

# The dependency layer: exactly requirements.lock. torch==2.13.0 in the lock matches every build of that release;
# the extra index offers 2.13.0+cpu / +cu126, which pip prefers over PyPI's 2.13.0 (a local build label sorts
# higher), so the chosen build is installed and every other package keeps its pinned version.
COPY requirements.lock ./
RUN set -eu; \
    case "$TORCH" in \
      cuda) index="" ;; \
      cpu) index="https://download.pytorch.org/whl/cpu" ;; \
      cu[0-9]*) index="https://download.pytorch.org/whl/$TORCH" ;; \
      *) echo "TORCH=$TORCH: use cuda (PyPI's CUDA 13.0 build), cpu, or a PyTorch CUDA build such as cu126" >&2; \
         exit 1 ;; \
    esac; \
    index="${TORCH_INDEX_URL:-$index}"; \
    pip install --no-cache-dir ${index:+--extra-index-url "$index"} -r requirements.lock; \
    python -c "import torch; print('installed torch', torch.__version__, 'CUDA', torch.version.cuda)"

# A user without root, its folders (volumes keep the owner of the folder they are mounted over), and the
# `sdlocal` command for `docker compose exec sdlocal sdlocal doctor`.
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin sdlocal \
    && mkdir -p /data /cache/huggingface /models \
    && chown sdlocal:sdlocal /data /cache /cache/huggingface \
    && printf '%s\n' '#!/bin/sh' 'exec python -m sdlocal "$@"' > /usr/local/bin/sdlocal \
    && chmod 0755 /usr/local/bin/sdlocal

# The code layer.
COPY launch.py pyproject.toml LICENSE NOTICE ./
COPY presets ./presets
COPY sdlocal ./sdlocal

# Numeric, so Kubernetes runAsNonRoot and hosts without this user name can check it (hadolint DL3066).
USER 1000:1000
VOLUME ["/data", "/cache"]
EXPOSE 7860

# Liveness: /health answers while the first model loads; the start period covers a first start that imports
# torch on a slow disk. Orchestrators that route traffic should probe /ready (with the API login) instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 CMD ["python", "-m", "sdlocal.healthcheck"]

# Always --listen --api behind a login (sdlocal/container.py); flags given to `docker run` are added to them.
ENTRYPOINT ["python", "-m", "sdlocal.container"]
CMD []
