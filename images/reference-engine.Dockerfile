# The reference engine on CPU: lets a cluster without GPUs run `engine.kind: Reference`
# (the demo, the e2e tests, trying detinfer out). Build from the repository root:
#   docker build -f images/reference-engine.Dockerfile -t detinfer-reference-engine .
# Pin the base by digest when you build (DESIGN.md): pass
#   --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# with the digest from `docker buildx imagetools inspect python:3.11-slim-bookworm`. The machines
# this project is developed on reach no registry, so no digest here could be checked, and a
# digest nobody checked is worse than a tag that says so.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# torch's CPU wheels come from PyTorch's own index (a few hundred MB instead of the CUDA build).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4" \
 && pip install ".[engine]" \
 && rm -rf /src

# Non-root, read-only root filesystem friendly: the engine writes nothing to disk.
USER 65532:65532
EXPOSE 30000
ENTRYPOINT ["detinfer", "engine"]
CMD ["--model-path", "tiny", "--host", "0.0.0.0", "--port", "30000", "--enable-metrics"]
