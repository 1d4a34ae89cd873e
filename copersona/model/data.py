"""Training data (App. A's protocol): examples, each method's inputs for them, and token sequences.

Appendix A trains on the held-out reviews before the validation target, predicted
autoregressively. With few held-out reviews per user that is little data, so, as the issue
allows, earlier profile reviews are added as targets too: review ``j`` of the profile is
predicted from reviews ``1..j-1``. Their own histories hold only earlier reviews, but the user's
facet states (and so the soft prompt) were built from the whole profile, which includes these
targets. A soft prompt for such an example therefore hides the user's facets whose evidence
rests on the target or a later review (:func:`hidden_facets`), so training sees what test time
sees: facet states built from reviews before the target. Held-out targets (validation, test)
never enter a facet state and hide nothing.

Every method trains on the same target tokens: a target is cut only at ``target_limit(window)``,
whatever the method's prompt, and prompts are cut to make room, so validation losses compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from copersona.data.records import Example
from copersona.facets.records import FacetSummary, ReviewRef
from copersona.methods import Method, example_key
from copersona.model.soft_prompt import IGNORE_INDEX
from copersona.store import Store

# The end-of-turn marker of ChatML templates (SmolLM2, Qwen): training targets end with it so the
# model learns to stop; for other templates the tokenizer's EOS token is used.
CHATML_END = "<|im_end|>"


def training_examples(store: Store, limit: int | None = None) -> list[Example]:
    """Held-out train targets first, then every profile review after the first, oldest first, per user."""
    held_out = store.examples("train")
    earlier = []
    for user_id, profile in sorted(store.profiles().items()):
        earlier.extend(
            Example(user_id=user_id, split="train", profile=profile[:j], target=profile[j])
            for j in range(1, len(profile))
        )
    examples = held_out + earlier
    return examples[:limit] if limit is not None else examples


def validation_examples(store: Store, limit: int) -> list[Example]:
    """The validation targets of the first ``limit`` users by id (as ``evaluate --limit`` picks)."""
    examples = sorted(store.examples("validation"), key=lambda e: e.user_id)
    return examples[:limit]


def examples_digest(examples: list[Example]) -> str:
    """Identifies a training set by its examples' keys and target texts."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([example_key(e), len(e.profile), e.target.text]).encode())
    return digest.hexdigest()[:16]


@dataclass
class Sequence:
    """One tokenized example: the prompt's labels are ``IGNORE_INDEX``, the target's are its tokens."""

    example: str
    user_id: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool  # the target was cut at the window's target limit
    hidden: list[int] = field(default_factory=list)  # the user's facets that rest on the target or later reviews

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def end_of_turn(tokenizer) -> str:
    """The ChatML end-of-turn marker where the tokenizer knows it as a token, else its EOS token.

    Looked up by id: ``get_vocab()`` builds the whole 49k-entry vocabulary on every call (46 ms here,
    once per training example), and it was where most samples of a slow encoding stage landed."""
    token_id = tokenizer.convert_tokens_to_ids(CHATML_END)
    return CHATML_END if token_id is not None and token_id != tokenizer.unk_token_id else tokenizer.eos_token


def target_limit(window: int) -> int:
    """The most target tokens a training example keeps: half the window, the same for every method."""
    return window // 2


def encode_example(method: Method, example: Example, tokenizer, max_length: int) -> Sequence:
    """The method's chat messages as the prompt, the target review (and end of turn) as the labels.

    The target is cut only at :func:`target_limit`, never for the prompt's sake; methods build
    prompts for the training window, and a prompt that still overflows keeps its end (the
    request), losing the oldest context.
    """
    messages = method.training_input(example).messages
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(example.target.text.strip() + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    room = target_limit(max_length)
    truncated = len(target_ids) > room
    target_ids = target_ids[:room]
    prompt_ids = prompt_ids[-(max_length - len(target_ids)) :]
    return Sequence(
        example=example_key(example),
        user_id=example.user_id,
        input_ids=prompt_ids + target_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + target_ids,
        truncated=truncated,
    )


def hidden_facets(example: Example, states: dict[str, FacetSummary], facet_keys: list[str]) -> list[int]:
    """Indices (in ``facet_keys``) of the user's facets whose evidence reaches beyond ``example.profile``.

    A facet state rests on the reviews its summary sentences and quotes came from; when one of them
    is not in the example's profile (it is the target or written after it), the state would show
    the model the answer, so its soft prompt hides it.
    """
    before = {ReviewRef.of(review) for review in example.profile}
    return [
        m
        for m, key in enumerate(facet_keys)
        if (state := states.get(key)) is not None
        and any(ref not in before for ref in [*state.summary_sources, *state.quote_sources])
    ]


def collate(
    sequences: list[Sequence], pad_id: int, user_rows: dict[str, int] | None, facets: int = 0
) -> dict[str, torch.Tensor]:
    """Right-padded tensors of a micro-batch; ``users`` holds graph rows when a personalizer needs them,
    ``hidden`` ``(B, facets)`` the facets each example hides."""
    width = max(len(s.input_ids) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        n = len(s.input_ids)
        input_ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, :n] = torch.tensor(s.labels)
        mask[row, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
    if user_rows is not None:
        batch["users"] = torch.tensor([user_rows[s.user_id] for s in sequences])
        batch["hidden"] = torch.zeros((len(sequences), facets), dtype=torch.bool)
        for row, s in enumerate(sequences):
            batch["hidden"][row, s.hidden] = True
    return batch
