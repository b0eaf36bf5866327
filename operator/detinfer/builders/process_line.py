"""The process line of detinfer's own containers: the builders write it, the local pod runner
reads it back, both through the names and functions here (a layout change cannot pass one by)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detinfer.api import constants as c

ENGINE_COMMAND = ("detinfer", "engine")
VALIDATOR_COMMAND = ("detinfer", "validate")
BENCH_COMMAND = ("detinfer", "bench")
HOST_FLAG = "--host"
ADMIN_KEY_FLAG = "--admin-api-key"
# An engine whose admin key no Secret names starts behind this: it appends a random admin key
# to the process line, made when the container starts and kept only in the process (python3 is
# in every image that runs an engine: SGLang and detinfer are Python).
ADMIN_KEY_WRAPPER = (
    "python3",
    "-c",
    "import os, secrets, sys; "
    f"os.execvp(sys.argv[1], sys.argv[1:] + ['{ADMIN_KEY_FLAG}', secrets.token_hex(32)])",
)
SUMMARY_FILE_FLAG = "--summary-file"

# kind LlamaCpp: llama-server where llama.cpp's server images have it (ghcr.io/ggml-org/llama.cpp,
# the :server tags: ENTRYPOINT ["/app/llama-server"]), started behind a check of the GGUF file's
# sha256: the container runs this shell line with the sha256, the file and the server's command
# line as its arguments, and the server never starts on a file that is not the pinned one.
LLAMA_SERVER_COMMAND = ("/app/llama-server",)
GGUF_CHECK = (
    "/bin/sh",
    "-c",
    '[ -r "$2" ] || { echo "model $2 cannot be read (model.path)" >&2; exit 1; }; '
    'seen=$(sha256sum "$2" | cut -d " " -f 1); '
    'if [ "$seen" != "$1" ]; then '
    'echo "model $2 has sha256 $seen, not the pinned $1 (model.sha256)" >&2; exit 1; fi; '
    'shift 2; exec "$@"',
    "gguf-sha256-check",
)


class LayoutError(ValueError):
    """A process line that is not laid out as the builders write it."""


# The engines' liveness probe (exec, in the engine's container): GET model_info on the pod's own
# port, with the client key when the container has one, and fail unless the model path and the
# weight version are the ones the pod was started with. A weight update changes them (SGLang's
# /model_info reports "the model a weight update swapped in"), so a pod changed behind its
# verdict is restarted with its pinned weights, and validated again, within minutes of the
# change instead of at the next revalidation. Unreachable: fails, as an httpGet probe would.
MODEL_INFO_PROBE = (
    "python3",
    "-c",
    "import json, os, sys, urllib.request\n"
    "url, path, version = sys.argv[1:4]\n"
    f"key = os.environ.get('{c.API_KEY_ENV}')\n"
    "headers = {'Authorization': 'Bearer ' + key} if key else {}\n"
    "info = json.load(urllib.request.urlopen(urllib.request.Request(url, headers=headers), "
    "timeout=8))\n"
    "seen = (info.get('model_path'), info.get('weight_version', version))\n"
    "if seen != (path, version):\n"
    "    sys.exit(f'model_info says model_path {seen[0]!r}, weight_version {seen[1]!r}; "
    "the pod was started with {path!r}, {version!r}')\n",
)
PROBE_URL_INDEX = len(MODEL_INFO_PROBE)


def model_info_probe(path: str, model_path: str, weight_version: str, port: int) -> list[str]:
    """The probe's command for an engine serving on `port` at `path` (/model_info, or
    /get_model_info before SGLang 0.5.6)."""
    return [*MODEL_INFO_PROBE, f"http://127.0.0.1:{port}{path}", model_path, weight_version]


def probe_url_on(command: Sequence[str], host: str) -> list[str]:
    """The probe's command with its URL's host replaced (the local pod runner's engines listen
    on the pod's IP, not in a network namespace of their own)."""
    n = PROBE_URL_INDEX
    if tuple(command[:n]) != MODEL_INFO_PROBE or len(command) != n + 3:
        raise LayoutError("the exec probe is not the model_info probe the builders write")
    url = command[n]
    prefix = "http://127.0.0.1:"
    if not url.startswith(prefix):
        raise LayoutError(f"the model_info probe's URL {url!r} is not on 127.0.0.1")
    return [*command[:n], f"http://{host}:{url[len(prefix) :]}", *command[n + 1 :]]


def process_line(container: Mapping[str, Any]) -> list[str]:
    """What a container runs: its command, then its args (as the kubelet joins them)."""
    return [*(container.get("command") or []), *(container.get("args") or [])]


def unwrapped(line: Sequence[str]) -> tuple[list[str], bool]:
    """The line the wrapper runs, and whether ADMIN_KEY_WRAPPER starts `line`."""
    n = len(ADMIN_KEY_WRAPPER)
    if tuple(line[:n]) == ADMIN_KEY_WRAPPER:
        return list(line[n:]), True
    return list(line), False


def gguf_checked(line: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """(sha256, model file, llama-server's line) when `line` is GGUF_CHECK in front of
    LLAMA_SERVER_COMMAND, as the builders write a LlamaCpp container; None for any other line."""
    n = len(GGUF_CHECK)
    if tuple(line[:n]) != GGUF_CHECK or len(line) < n + 2 + len(LLAMA_SERVER_COMMAND):
        return None
    server = list(line[n + 2 :])
    if tuple(server[: len(LLAMA_SERVER_COMMAND)]) != LLAMA_SERVER_COMMAND:
        return None
    return line[n], line[n + 1], server


def flag_value(line: Sequence[str], flag: str) -> str:
    """The value after `flag` (the builders write `--flag value`, never `--flag=value`)."""
    try:
        at = list(line).index(flag)
    except ValueError:
        raise LayoutError(f"{flag} is missing from {' '.join(line)!r}") from None
    if at + 1 >= len(line):
        raise LayoutError(f"{flag} has no value in {' '.join(line)!r}")
    return line[at + 1]


def with_flag_value(line: Sequence[str], flag: str, value: str) -> list[str]:
    """The line with `flag`'s value replaced by `value`."""
    flag_value(line, flag)
    out = list(line)
    out[out.index(flag) + 1] = value
    return out
