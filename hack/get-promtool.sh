#!/usr/bin/env bash
# Fetch promtool (Prometheus' rule checker and rule unit-test runner) from Debian's `prometheus`
# package through apt, without installing the package (no service, no config): the .deb is
# downloaded and only its promtool binary is kept.
#
# Layout (DETINFER_CACHE defaults to ~/.cache/detinfer), as hack/build-binaries.sh:
#   $DETINFER_CACHE/bin/promtool-<version>/promtool   skipped when it exists ("cached")
#   $DETINFER_CACHE/bin/current/promtool              symlink to it
# Environment: DETINFER_CACHE, PROMETHEUS_DEB_VERSION (from hack/versions.env).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"
CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
VERSION="${PROMETHEUS_DEB_VERSION}"
DEST="${CACHE}/bin/promtool-${VERSION}"

if [[ ! -x "${DEST}/promtool" ]]; then
  command -v apt-get >/dev/null || { echo "get-promtool: apt-get not found" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  # The pinned version must be in the apt lists; refresh them once if it is not.
  if ! apt-cache show "prometheus=${VERSION}" >/dev/null 2>&1; then
    apt-get update -qq
  fi
  (cd "${work}" && apt-get download -qq "prometheus=${VERSION}")
  dpkg-deb -x "${work}"/prometheus_*.deb "${work}/root"
  mkdir -p "${DEST}"
  install -m 0755 "${work}/root/usr/bin/promtool" "${DEST}/promtool"
  echo "get-promtool: ${DEST}/promtool" >&2
else
  echo "get-promtool: ${DEST}/promtool (cached)" >&2
fi
mkdir -p "${CACHE}/bin/current"
ln -sfn "${DEST}/promtool" "${CACHE}/bin/current/promtool"
