# chemoscreen worker image: CUDA PyTorch + Ray + chemoscreen, used for every node of a cluster
# (Ray cluster launcher `docker.image`, KubeRay head and worker pods).
#
# Build from the repository root (the context must hold pyproject.toml and the packages):
#   docker build -f infra/docker/worker.Dockerfile -t chemoscreen-worker:0.1.0 .
# The file worker.Dockerfile.dockerignore beside this one keeps .venv, stores and outputs out of the context.
#
# The PyTorch CUDA wheels bring their own CUDA runtime and cuDNN; the host needs only the NVIDIA driver
# and the NVIDIA container toolkit (Kubernetes: the NVIDIA device plugin, which exposes nvidia.com/gpu).
# Pick the wheel that matches the cluster's driver with the build arguments, e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# The image must carry the same Ray and Python versions as the machines that submit jobs to it.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG RAY_VERSION=2.60.0

# wget: KubeRay's readiness/liveness probes call it; tini reaps the processes `ray start --block` leaves.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget tini \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged user with the home directory KubeRay and the cluster launcher expect.
RUN useradd --create-home --uid 1000 --shell /bin/bash ray
ENV VIRTUAL_ENV=/opt/chemoscreen \
    PATH=/opt/chemoscreen/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_AUTH_MODE=token
RUN python -m venv "${VIRTUAL_ENV}" && chown -R ray:ray "${VIRTUAL_ENV}"

USER 1000
WORKDIR /home/ray

# CUDA torch first, from its own index, so the project install below keeps it instead of the CPU wheel.
RUN pip install --upgrade pip \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install "ray[default]==${RAY_VERSION}"

# The project itself, with the PostgreSQL/S3 clients that runs need to reach the tracking server.
COPY --chown=ray:ray pyproject.toml README.md /home/ray/chemoscreen/
COPY --chown=ray:ray mechanics /home/ray/chemoscreen/mechanics
COPY --chown=ray:ray inverse /home/ray/chemoscreen/inverse
COPY --chown=ray:ray candidates /home/ray/chemoscreen/candidates
COPY --chown=ray:ray screening /home/ray/chemoscreen/screening
RUN pip install "/home/ray/chemoscreen[cluster]" \
    && python -c "import torch, ray, mlflow, screening; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# Secrets (RAY_AUTH_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD) come from the environment at run time,
# never from the image.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["bash"]
