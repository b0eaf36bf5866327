"""The client key of a key-protected engine: where `detinfer validate` and `detinfer bench` find it.

SGLang's `--api-key` makes every normal endpoint (/generate, /v1/*, /model_info, /server_info)
answer 401 without `Authorization: Bearer <key>`; /health, /ready and /metrics stay open
(python/sglang/srt/utils/auth.py in SGLang 0.5.23). The key comes from the environment
(DETINFER_API_KEY: the Jobs set it from a Secret with valueFrom.secretKeyRef) or from a file
(--api-key-file), never from an argument: a command line is visible to anyone who can list the
pod or the process. Nothing here prints the key: a message names where it came from, never what
it is.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from detinfer.api.constants import API_KEY_ENV

API_KEY_FILE_OPTION = "--api-key-file"
REFUSED_STATUSES = frozenset({401, 403})


class ClientKeyError(ValueError):
    """The key cannot be read; the message names the option or variable and the path, never the
    key."""


@dataclass(frozen=True)
class ClientKey:
    """The bearer key and where it came from; its repr and str show only where."""

    value: str = field(repr=False)
    source: str
    """DETINFER_API_KEY, or --api-key-file and the path."""

    def __str__(self) -> str:
        return f"a client key from {self.source}"

    def headers(self) -> dict[str, str]:
        """What every request carries (httpx client headers)."""
        return {"Authorization": f"Bearer {self.value}"}


def add_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--api-key-file, with help that documents both ways in."""
    parser.add_argument(
        API_KEY_FILE_OPTION,
        type=Path,
        metavar="FILE",
        help=f"a key-protected engine (SGLang's --api-key): read the client key from FILE "
        f"(stripped). The environment variable {API_KEY_ENV}, when set and not empty, is the "
        "other way; there is no option that takes the key itself. The key is sent as "
        "'Authorization: Bearer <key>' on every request and never printed.",
    )


def read_client_key(
    key_file: Path | None, environ: Mapping[str, str] | None = None
) -> ClientKey | None:
    """The key from DETINFER_API_KEY (set and not empty) or `key_file`; None when neither is
    given. Both at once is refused: two sources that may disagree leave the key in doubt."""
    environ = os.environ if environ is None else environ
    from_env = environ.get(API_KEY_ENV, "").strip()
    if from_env and key_file is not None:
        raise ClientKeyError(
            f"{API_KEY_FILE_OPTION} {key_file} and {API_KEY_ENV} are both set; give the client "
            "key one way"
        )
    if from_env:
        return ClientKey(from_env, API_KEY_ENV)
    if key_file is None:
        return None
    return ClientKey(_read_key_file(key_file), f"{API_KEY_FILE_OPTION} {key_file}")


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        # The OS's reason (no such file, permission denied), never the contents.
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ClientKeyError(f"{API_KEY_FILE_OPTION} {path}: cannot read it ({why})") from None
    key = text.strip()
    if not key:
        raise ClientKeyError(f"{API_KEY_FILE_OPTION} {path}: the file is empty")
    return key


def refusal(request: str, status: int, key_sent: bool) -> str | None:
    """What to say when the server refused `request` (401 or 403): whether a key was sent, never
    the key; None for any other status."""
    if status not in REFUSED_STATUSES:
        return None
    if key_sent:
        hint = "a client key was sent; is it the engine's --api-key?"
    else:
        hint = f"no client key was sent; set {API_KEY_ENV} or pass {API_KEY_FILE_OPTION}"
    return f"the server refused {request} (HTTP {status}): {hint}"
