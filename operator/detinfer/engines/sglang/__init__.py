"""SGLang: its flags in every supported release (flags/), what changes from one release to the
next (features.py), its deterministic numerics environment (numerics.py), and what the operator
renders for it (kind.py)."""
