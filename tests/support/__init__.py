"""What the unit, engine, integration and e2e tests (and the benches) share: the local cluster and
the operator process, objects as the API server hands them, scripted and real engines."""
