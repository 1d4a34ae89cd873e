"""Where a store's models come from: the one place that opens a store's generator, embedder and trained models.

The generator is the configured spec, else the LLM the store was built with; the embedder is
the one the store was built with (pinned: its vectors are in the store); trained models are the
ones given, else those ``copersona train`` registered for methods that cannot run without one.
"""

from __future__ import annotations

from collections.abc import Callable

from copersona.backends import LLMSpec, load_embedder, load_llm_backend
from copersona.backends.embed import Embedder
from copersona.backends.llm import LLM, LLMBackend
from copersona.config import HarnessConfig
from copersona.methods import METHODS
from copersona.model.trained import TrainedModel
from copersona.store import Store

#: The embedder of stores written before the embedder was pinned.
DEFAULT_EMBEDDER = "minilm"


def generator_spec(store: Store, config: HarnessConfig) -> str:
    """The configured generator, else the LLM the store was built with."""
    return config.llm or (store.get_meta("build_config") or {}).get("llm", "smollm2")


def store_embedder(store: Store) -> Callable[[], Embedder]:
    """A factory of the embedder whose vectors the store holds (loaded on first call)."""
    spec = (store.get_meta("pinned_config") or {}).get("embedder", DEFAULT_EMBEDDER)
    return lambda: load_embedder(spec)


def cached_llm(store: Store, spec: str) -> LLM:
    """The generator of ``spec`` with the store as its answer cache."""
    return LLM(load_llm_backend(spec), cache=store)


def finetuned_backend(model: TrainedModel, config: HarnessConfig) -> LLMBackend:
    """The runtime of a trained model.

    With an ``openai:`` generator configured, the server runs the adapter under the model's key
    (vLLM: ``--enable-lora --lora-modules KEY=FOLDER/adapter``, plus ``--enable-prompt-embeds`` for
    soft prompts, which are embedded locally from the base checkpoint). Otherwise the fastest
    local runtime: llama.cpp with the LoRA GGUF (soft prompts decoded as embeddings) where the
    adapter was exported, else transformers with the adapter merged.
    """
    if config.llm and (served := LLMSpec.parse(config.llm)).served:
        from copersona.backends.openai_http import OpenAICompatibleBackend

        embeddings = model.checkpoint if model.soft_prompt_length else None
        return OpenAICompatibleBackend(served.base_url, model.key, prompt_embeddings=embeddings)
    if model.llama_cpp_adapter:
        return load_llm_backend(model.base, lora_path=model.folder / model.llama_cpp_adapter)
    from copersona.backends.transformers_local import TransformersBackend

    return TransformersBackend(model.checkpoint, adapter=model.adapter_dir, batch_size=config.generation.batch_size)


def registered_models(store: Store) -> dict[str, TrainedModel]:
    """The models ``copersona train`` registered in the store for methods that cannot generate without
    one (soft prompts), by method; a moved folder is skipped."""
    found = {}
    for method, path in store.trained_models().items():
        if method not in METHODS or METHODS[method].soft_prompt is None:
            continue
        try:
            found[method] = TrainedModel.load(path)
        except FileNotFoundError:
            continue
    return found
