#!/usr/bin/env bash
# The Prometheus Operator's CRDs (monitoring.coreos.com/v1: ServiceMonitor, PodMonitor,
# PrometheusRule and the rest), as that project publishes them in its Go module
# (example/prometheus-operator-crd/, generated there by controller-gen from its API types), so a
# local API server can check the chart's monitoring objects against the real schemas. The module
# comes through the Go module proxy (`go mod download`); nothing is built.
#
# Layout (DETINFER_CACHE defaults to ~/.cache/detinfer):
#   $DETINFER_CACHE/prometheus-operator-crds-<version>/*.yaml   skipped when it exists
#   $DETINFER_CACHE/go/mod                                      GOMODCACHE, as build-binaries.sh
# Prints the CRD folder on stdout. Environment: DETINFER_CACHE, PROMETHEUS_OPERATOR_VERSION (from
# hack/versions.env).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"
CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
VERSION="${PROMETHEUS_OPERATOR_VERSION}"
MODULE=github.com/prometheus-operator/prometheus-operator
DEST="${CACHE}/prometheus-operator-crds-${VERSION}"

if ! compgen -G "${DEST}/monitoring.coreos.com_*.yaml" >/dev/null; then
  command -v go >/dev/null || { echo "get-monitoring-crds: go not found on PATH" >&2; exit 1; }
  export GOMODCACHE="${CACHE}/go/mod" GOTOOLCHAIN=local GOFLAGS=-mod=mod
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  # Outside any module: `go mod download` then fetches just this one.
  dir="$(cd "${work}" && go mod download -json "${MODULE}@${VERSION}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  src="${dir}/example/prometheus-operator-crd"
  compgen -G "${src}/monitoring.coreos.com_*.yaml" >/dev/null \
    || { echo "get-monitoring-crds: no CRDs in ${src}" >&2; exit 1; }
  tmp="${DEST}.tmp.$$"
  rm -rf "${tmp}" && mkdir -p "${tmp}"
  install -m 0644 "${src}"/monitoring.coreos.com_*.yaml "${tmp}/"
  rm -rf "${DEST}" && mv "${tmp}" "${DEST}"
  echo "get-monitoring-crds: ${DEST} (${MODULE}@${VERSION})" >&2
else
  echo "get-monitoring-crds: ${DEST} (cached)" >&2
fi
echo "${DEST}"
