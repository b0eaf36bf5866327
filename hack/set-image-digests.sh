#!/usr/bin/env bash
# Release time: make the chart's default operator image the one just pushed, by digest.
#
# Usage: hack/set-image-digests.sh <registry>/<name>@sha256:<64 hex>
#   the reference the registry reports for the pushed image of `make images`, e.g. from
#   `docker push` ("digest: sha256:..."), `crane digest <ref>` or
#   `docker buildx imagetools inspect <ref>`.
# Writes DEFAULT_REPOSITORY and RELEASE_DIGEST in operator/detinfer/chart.py, then regenerates the
# chart's values.yaml, values.schema.json and docs/helm-values.md (`detinfer crds`). Commit the
# result. NOTES.txt's warning about the zero placeholder then no longer shows.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
ref="${1:-}"
if [[ ! "${ref}" =~ ^([^@[:space:]]+)@(sha256:[0-9a-f]{64})$ ]]; then
  echo "set-image-digests: the argument must be <repository>@sha256:<64 hex>, got '${ref}'" >&2
  exit 2
fi
repository="${BASH_REMATCH[1]}" digest="${BASH_REMATCH[2]}"
if [[ "${repository##*/}" == *:* ]]; then
  echo "set-image-digests: '${repository}' has a tag; give the repository and the digest only" >&2
  exit 2
fi
sed -i -e "s|^DEFAULT_REPOSITORY = .*|DEFAULT_REPOSITORY = \"${repository}\"|" \
  -e "s|^RELEASE_DIGEST = .*|RELEASE_DIGEST = \"${digest}\"|" operator/detinfer/chart.py
"${BIN}/detinfer" crds
echo "set-image-digests: the chart's default image is now ${repository}@${digest}"
