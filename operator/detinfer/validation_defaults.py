"""The defaults of a validation run, shared by the spec (api/spec.py) and `detinfer validate`.

It imports nothing, so that the command's parser (cli.py builds it on every call) stays cheap.
"""

TRIALS = 16
MAX_NEW_TOKENS = 64
SAMPLING_SEED = 42
TIMEOUT_SECONDS = 1800
"""The spec's deadline of a validation Job, and `detinfer validate --timeout-seconds`."""
