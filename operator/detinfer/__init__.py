"""detinfer: deterministic LLM inference on Kubernetes, deployed and proven."""

__version__ = "0.1.0"
