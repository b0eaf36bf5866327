# The operator and the validator: one image, two commands (`detinfer run`, the Deployment's
# command; `detinfer validate`, the validation Jobs'). Build from the repository root with the
# base pinned by digest (make images refuses anything else):
#   docker build -f images/operator.Dockerfile \
#     --build-arg PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest> -t detinfer-operator .
# The digest: `docker buildx imagetools inspect python:3.11-slim-bookworm` (docs/install.md).
ARG PYTHON_BASE

FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A virtualenv without pip of its own: only the package and its dependencies go to the image.
# DL3013 (pin versions): this installs the package from source; its dependencies follow
# pyproject.toml's ranges, as `make install` does (the project has no lock file yet).
# hadolint ignore=DL3013
RUN python -m venv --without-pip /opt/detinfer \
 && pip --python /opt/detinfer/bin/python install ".[validator]"

FROM ${PYTHON_BASE}
# The base's own installer goes too: the final image builds and installs nothing.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel
COPY --from=build /opt/detinfer /opt/detinfer
ENV PATH=/opt/detinfer/bin:${PATH} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root (the chart's pod runs as 65532 too); nothing is written to the root filesystem.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["detinfer"]
CMD ["run", "--no-scanning"]
