"""What determinism costs: the same fixed workload against a deterministic endpoint and a
baseline, alternately (`detinfer bench`, docs/overhead.md)."""
