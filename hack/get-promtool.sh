#!/usr/bin/env bash
# Fetch promtool (Prometheus' rule checker and rule unit-test runner) and the prometheus server
# (the e2e tests run one on loopback: tests/e2e/test_monitoring.py) from Debian's `prometheus`
# package through apt, without installing the package (no service, no config): the .deb is
# downloaded and only its two binaries are kept.
#
# Layout (DETINFER_CACHE defaults to ~/.cache/detinfer), as hack/build-binaries.sh:
#   $DETINFER_CACHE/bin/prometheus-<version>/{promtool,prometheus}   skipped when both exist
#   $DETINFER_CACHE/bin/current/{promtool,prometheus}                symlinks to them
# Environment: DETINFER_CACHE, PROMETHEUS_DEB_VERSION (from hack/versions.env).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"
CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
VERSION="${PROMETHEUS_DEB_VERSION}"
DEST="${CACHE}/bin/prometheus-${VERSION}"
BINARIES=(promtool prometheus)

if [[ ! -x "${DEST}/promtool" || ! -x "${DEST}/prometheus" ]]; then
  command -v apt-get >/dev/null || { echo "get-promtool: apt-get not found" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  # The pinned version must be in the apt lists; refresh them once if it is not.
  if ! apt-cache madison prometheus | grep -qF " ${VERSION} "; then
    apt-get update -qq
  fi
  # A Debian mirror keeps only the newest revision of a release: a superseded pin fails here.
  if ! apt-cache madison prometheus | grep -qF " ${VERSION} "; then
    echo "get-promtool: prometheus=${VERSION} is not in the apt sources; pin one of these in" \
      "hack/versions.env (PROMETHEUS_DEB_VERSION):" >&2
    apt-cache madison prometheus >&2 || true
    exit 1
  fi
  (cd "${work}" && apt-get download -qq "prometheus=${VERSION}")
  dpkg-deb -x "${work}"/prometheus_*.deb "${work}/root"
  mkdir -p "${DEST}"
  for binary in "${BINARIES[@]}"; do
    install -m 0755 "${work}/root/usr/bin/${binary}" "${DEST}/${binary}"
  done
  echo "get-promtool: ${DEST}/{promtool,prometheus}" >&2
else
  echo "get-promtool: ${DEST}/{promtool,prometheus} (cached)" >&2
fi
mkdir -p "${CACHE}/bin/current"
for binary in "${BINARIES[@]}"; do
  ln -sfn "${DEST}/${binary}" "${CACHE}/bin/current/${binary}"
done
