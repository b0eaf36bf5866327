#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU only) from the llama.cpp source that the
# `llama-cpp-python` sdist on PyPI vendors, with that source's own CMake. No
# GitHub download, no Docker: pip fetches the sdist from the registry.
#
# Usage:
#   hack/build-llama-server.sh            # the version pinned in hack/versions.env
#
# Layout (DETINFER_CACHE defaults to ~/.cache/detinfer):
#   $DETINFER_CACHE/llama.cpp/<version>/bin/llama-server   the server; when it
#       exists the build is skipped ("cached").
#   $DETINFER_CACHE/llama.cpp/<version>/models/ggml-vocab-*.gguf   the vocab-only
#       tokenizer files the sdist ships (a random-weight model copies one:
#       python -m detinfer.engines.llamacpp.model).
#   The sdist and the build tree live in a temporary folder, removed at the end.
#
# Environment: DETINFER_CACHE, PIP (default: pip of .venv, else pip3),
#   NICE (default 19), JOBS (default 2: make -j).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"

VERSION="${LLAMA_CPP_PYTHON_VERSION}"
CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
DEST="${CACHE}/llama.cpp/${VERSION}"
NICE="${NICE:-19}"
JOBS="${JOBS:-2}"
PIP="${PIP:-$([ -x "${HACK_DIR}/../.venv/bin/pip" ] && echo "${HACK_DIR}/../.venv/bin/pip" || echo pip3)}"

log() { printf '%s\n' "$*" >&2; }
die() { log "build-llama-server: $*"; exit 1; }

if [ -x "${DEST}/bin/llama-server" ] && compgen -G "${DEST}/models/ggml-vocab-*.gguf" >/dev/null; then
  log "llama-server ${VERSION}: cached (${DEST}/bin/llama-server)"
  exit 0
fi
command -v cmake >/dev/null || die "cmake not found on PATH"

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
started=$(date +%s)

log "llama-server ${VERSION}: downloading the llama-cpp-python sdist from PyPI"
"${PIP}" download --quiet --no-deps --no-binary :all: "llama-cpp-python==${VERSION}" -d "${WORK}" \
  || die "pip could not download llama-cpp-python==${VERSION}"
tar -xzf "${WORK}/llama_cpp_python-${VERSION}.tar.gz" -C "${WORK}"
SRC="${WORK}/llama_cpp_python-${VERSION}/vendor/llama.cpp"
[ -f "${SRC}/CMakeLists.txt" ] || die "no vendor/llama.cpp/CMakeLists.txt in the sdist"

# CPU only, no tests or examples, no network: this llama.cpp has dropped libcurl
# (LLAMA_CURL is only a deprecation warning now) and downloads over its own HTTP
# client, which LLAMA_OPENSSL=OFF leaves without HTTPS; the server loads a local
# file. LLAMA_USE_PREBUILT_UI=OFF: the web UI would otherwise be fetched from a
# Hugging Face bucket at build time. GGML_NATIVE=ON tunes for this CPU, as a local
# build of llama.cpp does by default. BUILD_SHARED_LIBS=OFF: one self-contained
# binary that can be copied into the cache.
log "llama-server ${VERSION}: configuring (cmake, CPU only)"
nice -n "${NICE}" cmake -S "${SRC}" -B "${WORK}/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON >"${WORK}/cmake.log" 2>&1 || { tail -30 "${WORK}/cmake.log" >&2; die "cmake failed"; }

log "llama-server ${VERSION}: building the llama-server target (make -j${JOBS}, nice ${NICE})"
nice -n "${NICE}" cmake --build "${WORK}/build" --target llama-server -j "${JOBS}" >"${WORK}/build.log" 2>&1 \
  || { tail -30 "${WORK}/build.log" >&2; die "the build failed"; }

mkdir -p "${DEST}/bin" "${DEST}/models"
cp "${SRC}"/models/ggml-vocab-*.gguf "${DEST}/models/"
# The binary last: its presence is what marks the cache complete.
install -m 0755 "${WORK}/build/bin/llama-server" "${DEST}/bin/llama-server.tmp"
mv "${DEST}/bin/llama-server.tmp" "${DEST}/bin/llama-server"
log "llama-server ${VERSION}: built in $(( $(date +%s) - started )) s -> ${DEST}/bin/llama-server"
