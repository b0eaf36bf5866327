"""Why a validation run could not test: the errors that end a run with exit code 2."""

from __future__ import annotations


class CouldNotTest(Exception):
    """The run cannot reach a verdict: an endpoint is down, answered wrongly, or timed out.

    The message is one line that names the endpoint and what went wrong; it becomes the reason
    of a CouldNotTest verdict, never of a determinism verdict.
    """


class ProtocolError(CouldNotTest):
    """An endpoint answered, but not in the shape the protocol promises."""


class ConfigError(ValueError):
    """An option that cannot work; the message names the option, the value and what is allowed."""
