"""Generation speed with trained adapters: every runtime path against plain llama.cpp.

    python3 benchmarks/finetuned_generation.py [--store runs/bench-mi-1000.sqlite] [--prompts 8] [--tokens 64]

The fine-tuned evaluation generates for every method with its own adapter, so this is its cost.
The same copersona-np prompts (real users of the store) go through each path, greedy, with the
same answer room; tokens/s counts generated tokens over wall time, prompt processing included,
and every ratio is against plain llama.cpp measured in the same run.

Paths:
1. llama.cpp, base model (the reference).
2. llama.cpp with the LoRA exported to GGUF (what the fine-tuned evaluation uses).
3. as 2 with a soft prompt of L = 20 virtual tokens per request, decoded as embeddings
   (copersona, copersona-p, dep).
4. transformers + peft adapter unmerged, one request at a time (the issue's 9 tokens/s path).
5. transformers, adapter merged into the weights, one request at a time.
6. transformers merged, batches of ``--prompts``.
7. as 6 with the soft prompt (transformers' way of taking prompt embeddings).

Adapter and soft prompt values do not change speed, so a fresh adapter (random B) and random soft
prompts stand in for trained ones unless ``--model`` names a trained model folder. The soft
prompt's per-request overhead is reported within each runtime (3 against 2, 7 against 6), plus
the store lookup of a cached soft prompt.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from copersona.backends import load_llm_backend
from copersona.backends.llm import Request, SoftPrompt
from copersona.backends.transformers_local import TransformersBackend
from copersona.config import HarnessConfig, TrainingConfig
from copersona.inference import STOP, open_runtime
from copersona.model.base_model import checkpoint_for, load_base_model
from copersona.model.gguf_lora import export_lora_gguf
from copersona.model.trained import TrainedModel
from copersona.store import Store

ROOT = Path(__file__).resolve().parents[1]


def fresh_adapter(folder: Path) -> Path:
    """A LoRA adapter with the training config's shape and non-zero B (an untrained one is a no-op)."""
    from peft import LoraConfig, get_peft_model

    lora = TrainingConfig().lora
    base = load_base_model("smollm2", device="cpu")
    model = get_peft_model(
        base.model,
        LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules),
    )
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=1e-3)
    model.save_pretrained(folder)
    return folder


def timed(backend, requests: list[Request], batch: int) -> tuple[int, float]:
    """(generated tokens, wall seconds) for ``requests`` sent ``batch`` at a time."""
    tokens, started = 0, time.perf_counter()
    for start in range(0, len(requests), batch):
        tokens += sum(c.completion_tokens for c in backend.complete(requests[start : start + batch]))
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=ROOT / "runs" / "bench-mi-1000.sqlite")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--model", type=Path, help="a trained model folder (else a fresh adapter)")
    args = parser.parse_args()
    if not args.store.exists():
        from benchmarks.harness import ensure_store

        ensure_store(args.store)
    store = Store(args.store)
    examples = store.examples("test")[: args.prompts]
    runtime = open_runtime(store, HarnessConfig())
    inputs = [runtime.inputs("copersona-np", e) for e in examples]
    plain = [Request.chat(i.messages, temperature=0.0, max_tokens=args.tokens, stop=STOP) for i in inputs]

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            adapter = TrainedModel.load(args.model).adapter_dir
        else:
            adapter = fresh_adapter(Path(tmp) / "adapter")
        gguf = export_lora_gguf(adapter, Path(tmp) / "adapter.gguf")
        hidden = load_base_model("smollm2", device="cpu").hidden_size
        rng = np.random.default_rng(0)
        soft = [
            Request.chat(
                i.messages,
                temperature=0.0,
                max_tokens=args.tokens,
                stop=STOP,
                soft_prompt=SoftPrompt(f"bench/{k}", rng.normal(0, 0.02, (20, hidden)).astype(np.float32)),
            )
            for k, i in enumerate(inputs)
        ]
        rows: list[tuple[str, int, float]] = []

        def run(label: str, backend, requests: list[Request], batch: int) -> None:
            timed(backend, requests[:1], 1)  # warm-up: first-call allocations are not generation speed
            tokens, seconds = timed(backend, requests, batch)
            rows.append((label, tokens, seconds))
            print(f"  {label}: {tokens} tokens in {seconds:.1f} s", flush=True)

        llama = load_llm_backend("smollm2")
        run("llama.cpp, base", llama, plain, 1)
        llama.close()
        llama = load_llm_backend("smollm2", lora_path=gguf)
        run("llama.cpp + LoRA GGUF", llama, plain, 1)
        run("llama.cpp + LoRA GGUF + soft prompt", llama, soft, 1)
        llama.close()
        checkpoint = checkpoint_for("smollm2")
        unmerged = TransformersBackend(checkpoint, batch_size=1)
        from peft import PeftModel

        unmerged.model = PeftModel.from_pretrained(unmerged.model, str(adapter)).eval()
        run("transformers + peft (unmerged), batch 1", unmerged, plain, 1)
        del unmerged
        merged = TransformersBackend(checkpoint, adapter=adapter, batch_size=args.prompts)
        run("transformers, merged LoRA, batch 1", merged, plain, 1)
        run(f"transformers, merged LoRA, batch {args.prompts}", merged, plain, args.prompts)
        run(f"transformers, merged LoRA + soft prompt, batch {args.prompts}", merged, soft, args.prompts)

    reference = rows[0][1] / rows[0][2]
    print(f"\n{len(plain)} copersona-np prompts, greedy, up to {args.tokens} new tokens each\n")
    print(f"| {'path':<55} | tokens | seconds | tokens/s | vs llama.cpp |")
    print(f"|{'-' * 57}|--------|---------|----------|--------------|")
    for label, tokens, seconds in rows:
        speed = tokens / seconds
        print(f"| {label:<55} | {tokens:>6} | {seconds:>7.1f} | {speed:>8.1f} | {speed / reference:>12.2f} |")
    for runtime, (without, with_soft) in {
        "llama.cpp": (rows[1], rows[2]),
        "transformers": (rows[-2], rows[-1]),
    }.items():
        per_request = (with_soft[2] - without[2]) / len(plain)
        share = per_request / (without[2] / len(plain)) * 100
        print(f"\nSoft prompt overhead per request in {runtime}: {per_request * 1000:+.0f} ms ({share:+.1f}%)")
    lookups = []
    user_ids = [e.user_id for e in examples]
    key = "bench@lookup"
    store.write_soft_prompts(key, user_ids, np.zeros((len(user_ids), 20, hidden), dtype=np.float32))
    for user in user_ids * 50:
        started = time.perf_counter()
        store.soft_prompt(key, user)
        lookups.append(time.perf_counter() - started)
    store.write_soft_prompts(key, [], np.zeros((0, 20, hidden), dtype=np.float32))
    print(f"Cached soft prompt lookup in the store: p50 {statistics.median(lookups) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
