#!/usr/bin/env bash
# Build Ollama (CPU only) from its Go module, fetched through the Go module proxy, as the
# module's docs/development.md says for Linux: `cmake -B build && cmake --build build` for ggml's
# CPU backends, then `go build .` for the binary. No GitHub download, no Docker.
#
# Two parts, as Ollama's Linux release ships them (its Dockerfile: the `cpu` stage's CMake
# preset "CPU" and the `build` stage's `go build`):
#   - bin/ollama: the Go binary, with ggml compiled in by cgo. On its own it works, but its CPU
#     backend is built with cgo's default flags: no SIMD beyond x86-64's baseline (the server
#     logs `msg=system CPU.0.LLAMAFILE=1` and no SSE3/AVX feature).
#   - lib/ollama/: libggml-base.so and one libggml-cpu-<variant>.so per x86 feature level (x64,
#     sse42, sandybridge, haswell, skylakex, icelake, alderlake), built with the module's own
#     CMakeLists.txt. The binary looks in <its folder>/../lib/ollama and loads the variant that
#     scores best on this CPU (`load_backend: loaded CPU backend from .../libggml-cpu-*.so`).
#
# Usage:
#   hack/build-ollama.sh            # the version pinned in hack/versions.env
#
# The module zip lacks one thing the build needs: Go module zips leave out every `vendor/`
# directory, and Ollama keeps llama.cpp's third-party headers in llama/llama.cpp/vendor/
# (nlohmann/json.hpp and json_fwd.hpp, stb/stb_image.h, miniaudio/miniaudio.h), which the cgo
# packages llama/llama.cpp/common and llama/llama.cpp/tools/mtmd include. They come here from
# the same folder of the llama.cpp that the pinned llama-cpp-python sdist vendors (PyPI, the
# source hack/build-llama-server.sh builds from), added to the include path with CGO_CPPFLAGS;
# Ollama patches none of them (llama/patches/).
#
# Layout (DETINFER_CACHE defaults to ~/.cache/detinfer):
#   $DETINFER_CACHE/ollama/<version>/bin/ollama   the binary (the server and the CLI); when it
#       exists the build is skipped ("cached").
#   $DETINFER_CACHE/ollama/<version>/lib/ollama/  ggml's shared libraries (above).
#   $DETINFER_CACHE/ollama/<version>/vendor/      the headers above (a stable path keeps the Go
#       build cache valid across runs).
#   $DETINFER_CACHE/go/mod, $DETINFER_CACHE/go/build   GOMODCACHE and GOCACHE, shared with
#       hack/build-binaries.sh.
#
#   The CMake build tree lives in a temporary folder, removed at the end.
#
# Environment: DETINFER_CACHE, PIP (default: pip of .venv, else pip3), NICE (default 10),
#   JOBS (default 2: the CMake build's parallelism).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"

MODULE=github.com/ollama/ollama
VERSION="${OLLAMA_VERSION#v}"
CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
DEST="${CACHE}/ollama/${VERSION}"
NICE="${NICE:-10}"
JOBS="${JOBS:-2}"
PIP="${PIP:-$([ -x "${HACK_DIR}/../.venv/bin/pip" ] && echo "${HACK_DIR}/../.venv/bin/pip" || echo pip3)}"

export GOMODCACHE="${CACHE}/go/mod"
export GOCACHE="${CACHE}/go/build"
export GOTOOLCHAIN=local        # never download a Go toolchain
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=1            # ggml and llama.cpp are C/C++, built by cgo
unset GOOS GOARCH || true       # build for this machine only

log() { printf '%s\n' "$*" >&2; }
die() { log "build-ollama: $*"; exit 1; }

if [ -x "${DEST}/bin/ollama" ]; then
  log "ollama ${VERSION}: cached (${DEST}/bin/ollama)"
  exit 0
fi
command -v go >/dev/null || die "go not found on PATH"
command -v g++ >/dev/null || die "g++ not found on PATH (cgo builds ggml and llama.cpp)"
command -v cmake >/dev/null || die "cmake not found on PATH"

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
started=$(date +%s)

log "ollama ${VERSION}: llama.cpp's vendor/ headers from the llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} sdist (PyPI)"
"${PIP}" download --quiet --no-deps --no-binary :all: "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d "${WORK}" \
  || die "pip could not download llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"
inner="llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/vendor"
tar -xzf "${WORK}/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz" -C "${WORK}" \
  "${inner}/nlohmann" "${inner}/stb" "${inner}/miniaudio" || die "no vendor/ headers in the sdist"
mkdir -p "${DEST}"
rm -rf "${DEST}/vendor"
cp -r "${WORK}/${inner}" "${DEST}/vendor"

# `go install module@version` builds the module's main package (the repository root, what
# `go build .` builds) from the proxy's zip; ggml's CPU backend (ml/backend/ggml/ggml/src/
# ggml-cpu) and the llama.cpp runner are compiled in by cgo. The ldflags are those of the
# module's scripts/env.sh: the version that /api/version reports, and release mode (gin).
log "ollama ${VERSION}: go install ${MODULE}@${OLLAMA_VERSION} (cgo, nice ${NICE})"
GOBIN="${WORK}/bin" CGO_CPPFLAGS="-I${DEST}/vendor" nice -n "${NICE}" go install -trimpath \
  -ldflags "-w -s -X=${MODULE}/version.Version=${VERSION} -X=${MODULE}/server.mode=release" \
  "${MODULE}@${OLLAMA_VERSION}" >"${WORK}/build.log" 2>&1 \
  || { grep -v '^go: downloading' "${WORK}/build.log" | tail -30 >&2; die "the build failed"; }

# The module as the proxy serves it, unpacked in GOMODCACHE (read-only: CMake writes only into
# its build tree). Configured as the "CPU" preset of CMakePresets.json (Release, nothing else),
# whose binaryDir would be inside the source.
SRC="$(go mod download -json "${MODULE}@${OLLAMA_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -f "${SRC}/CMakeLists.txt" ] || die "no CMakeLists.txt in ${SRC}"
log "ollama ${VERSION}: ggml's CPU backends with the module's CMake (-j${JOBS}, nice ${NICE})"
nice -n "${NICE}" cmake -S "${SRC}" -B "${WORK}/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="${WORK}/dist" >"${WORK}/cmake.log" 2>&1 \
  || { tail -30 "${WORK}/cmake.log" >&2; die "cmake failed"; }
nice -n "${NICE}" cmake --build "${WORK}/build" --parallel "${JOBS}" >"${WORK}/cmake-build.log" 2>&1 \
  || { tail -30 "${WORK}/cmake-build.log" >&2; die "the CMake build failed"; }
cmake --install "${WORK}/build" --component CPU --strip >"${WORK}/install.log" 2>&1 \
  || { tail -30 "${WORK}/install.log" >&2; die "cmake --install failed"; }
[ -f "${WORK}/dist/lib/ollama/libggml-base.so" ] || die "no lib/ollama/libggml-base.so installed"

mkdir -p "${DEST}/bin"
rm -rf "${DEST}/lib"
mkdir -p "${DEST}/lib"
cp -a "${WORK}/dist/lib/ollama" "${DEST}/lib/ollama"
# The binary last: its presence is what marks the cache complete.
install -m 0755 "${WORK}/bin/ollama" "${DEST}/bin/ollama.tmp"
mv "${DEST}/bin/ollama.tmp" "${DEST}/bin/ollama"
log "ollama ${VERSION}: built in $(( $(date +%s) - started )) s -> ${DEST}/bin/ollama"
