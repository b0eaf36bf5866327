"""The reference engine (`detinfer engine`, detinfer/engine): its flag table, generated from its
own parser (flags.py), and what the operator renders for it (kind.py)."""
