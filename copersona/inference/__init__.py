"""Inference: the runtime that turns a request into an answer, and where its models come from.

``generate``, ``train``, ``evaluate``, the benchmarks and the server answer through a
:class:`Runtime`; :func:`open_runtime` builds one for a store from its config.
"""

from copersona.inference.loading import (
    cached_llm,
    finetuned_backend,
    generator_spec,
    registered_models,
    store_embedder,
)
from copersona.inference.runtime import NO_GENERATOR, STOP, Prediction, Runtime, open_runtime

__all__ = [
    "NO_GENERATOR",
    "STOP",
    "Prediction",
    "Runtime",
    "cached_llm",
    "finetuned_backend",
    "generator_spec",
    "open_runtime",
    "registered_models",
    "store_embedder",
]
