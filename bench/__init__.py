"""The benchmarks, one module each, run from the repository root as `python -m bench.<name>`:
operator (make bench-operator), validator (make bench-validator), engine (make bench-engine)."""
