"""The reference engine: a small torch LLM server that speaks SGLang's HTTP API.

It exists so that detinfer's operator, validator, CI and demo run on machines without a GPU, and
so that the validator is proven against nondeterminism that is real, not scripted: by default its
reductions split the way GPU kernels do, with a split that depends on the batch, so outputs change
with the batch; with `--enable-deterministic-inference` every reduction has one fixed order.
It is not a production engine. torch comes from the `engine` extra.
"""
