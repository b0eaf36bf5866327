# The reference engine on CPU: lets a cluster without GPUs run `engine.kind: Reference`
# (the demo, the e2e tests, trying detinfer out). Build from the repository root with the base
# pinned by digest (make images refuses anything else):
#   docker build -f images/reference-engine.Dockerfile \
#     --build-arg PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest> -t detinfer-reference-engine .
# The digest: `docker buildx imagetools inspect python:3.11-slim-bookworm` (docs/install.md).
# The machines this project is developed on reach no image registry, so no digest is written
# here: one nobody could check would be worse than none.
ARG PYTHON_BASE

FROM ${PYTHON_BASE} AS build
# torch's CPU wheels come from PyTorch's own index (a few hundred MB instead of the CUDA build).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# DL3013 (pin versions): this installs the package from source; its dependencies follow
# pyproject.toml's ranges, as `make install` does (the project has no lock file yet).
# hadolint ignore=DL3013
RUN python -m venv --without-pip /opt/detinfer \
 && pip --python /opt/detinfer/bin/python install --index-url "${TORCH_INDEX}" "torch>=2.4" \
 && pip --python /opt/detinfer/bin/python install ".[engine]"

FROM ${PYTHON_BASE}
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel
COPY --from=build /opt/detinfer /opt/detinfer
ENV PATH=/opt/detinfer/bin:${PATH} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root, read-only root filesystem friendly: the engine writes nothing to disk.
USER 65532:65532
EXPOSE 30000
ENTRYPOINT ["detinfer", "engine"]
CMD ["--model-path", "tiny", "--host", "0.0.0.0", "--port", "30000", "--enable-metrics"]
