#!/usr/bin/env bash
# Build the operator image (operator + validator) and the reference engine's image, with the
# first container builder that works here: docker or podman (its daemon/service answering), or
# buildah. Says so, and fails, where none does.
#
# Usage: PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest> hack/build-images.sh
#   PYTHON_BASE  the images' base, pinned by digest (required: a tag is refused)
#   BUILDER      force one builder (docker, podman, buildah)
#   TAG          the images' tag (default: the package version)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! "${PYTHON_BASE:-}" =~ @sha256:[0-9a-f]{64}$ ]]; then
  echo "build-images: PYTHON_BASE must be pinned by digest (name@sha256:<64 hex>), got '${PYTHON_BASE:-}'" >&2
  echo "  the digest: docker buildx imagetools inspect python:3.11-slim-bookworm" >&2
  exit 2
fi

works() {
  case "$1" in
    docker | podman) command -v "$1" >/dev/null && "$1" info >/dev/null 2>&1 ;;
    buildah) command -v buildah >/dev/null && buildah version >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}
builder=""
for candidate in ${BUILDER:-docker podman buildah}; do
  if works "${candidate}"; then builder="${candidate}"; break; fi
done
if [[ -z "${builder}" ]]; then
  echo "build-images: no working container builder here (tried: ${BUILDER:-docker podman buildah};" \
    "a client without its daemon counts as none); no image built" >&2
  exit 1
fi

tag="${TAG:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' operator/detinfer/__init__.py)}"
build() { # dockerfile image
  if [[ "${builder}" == buildah ]]; then
    buildah bud -f "$1" --build-arg "PYTHON_BASE=${PYTHON_BASE}" -t "$2:${tag}" .
  else
    "${builder}" build -f "$1" --build-arg "PYTHON_BASE=${PYTHON_BASE}" -t "$2:${tag}" .
  fi
  echo "built $2:${tag} with ${builder}; push it and pass its digest to the chart (docs/install.md)"
}
build images/operator.Dockerfile detinfer-operator
build images/reference-engine.Dockerfile detinfer-reference-engine
