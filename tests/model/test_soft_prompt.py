"""Soft prompts: how virtual tokens join the input, the projector's start, and a real forward pass."""

from __future__ import annotations

import pytest
import torch

from copersona.model.soft_prompt import IGNORE_INDEX, SoftPromptProjector, prepend_soft_prompt

# -- prepend_soft_prompt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch, tokens, length, hidden, with_labels",
    [(1, 5, 3, 4, True), (2, 7, 1, 8, True), (3, 4, 6, 2, False), (2, 1, 20, 16, True)],
)
def test_prepend_shapes_mask_and_labels(batch, tokens, length, hidden, with_labels):
    torch.manual_seed(0)
    embeddings, soft = torch.randn(batch, tokens, hidden), torch.randn(batch, length, hidden)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[0, : tokens // 2] = 0  # left padding in the first row: kept as it is, after the virtual tokens
    labels = torch.randint(0, 100, (batch, tokens)) if with_labels else None
    if labels is not None:
        labels[:, 0] = IGNORE_INDEX
    out, out_mask, out_labels = prepend_soft_prompt(embeddings, mask, soft, labels)

    assert out.shape == (batch, length + tokens, hidden)
    assert torch.equal(out[:, :length], soft) and torch.equal(out[:, length:], embeddings)
    assert out_mask.shape == (batch, length + tokens) and out_mask.dtype == mask.dtype
    assert torch.equal(out_mask[:, :length], torch.ones(batch, length, dtype=torch.long))
    assert torch.equal(out_mask[:, length:], mask)
    if labels is None:
        assert out_labels is None
    else:
        assert out_labels.shape == (batch, length + tokens) and out_labels.dtype == labels.dtype
        assert bool((out_labels[:, :length] == IGNORE_INDEX).all())
        assert torch.equal(out_labels[:, length:], labels)


def test_prepend_casts_the_prompt_to_the_models_dtype():
    embeddings = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    out, _, _ = prepend_soft_prompt(embeddings, torch.ones(2, 3, dtype=torch.long), torch.randn(2, 5, 4))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 8, 4)


def test_prepend_keeps_the_soft_prompt_differentiable():
    soft = torch.randn(1, 2, 4, requires_grad=True)
    out, _, _ = prepend_soft_prompt(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.long), soft)
    out.sum().backward()
    assert torch.equal(soft.grad, torch.ones_like(soft))


# -- the projector ----------------------------------------------------------------------------------


@pytest.mark.parametrize("users, d_in, length, hidden, width", [(1, 8, 4, 6, 16), (5, 32, 20, 12, 64), (3, 4, 1, 2, 8)])
def test_projector_shape(users, d_in, length, hidden, width):
    projector = SoftPromptProjector(d_in, hidden, length=length, width=width)
    out = projector(torch.randn(users, d_in))
    assert out.shape == (users, length, hidden) and torch.isfinite(out).all()


def test_projector_refuses_init_tokens_of_another_shape():
    with pytest.raises(ValueError, match=r"expected \(4, 6\)"):
        SoftPromptProjector(8, 6, length=4, width=16, init_tokens=torch.randn(4, 7))


def test_untrained_projector_starts_at_the_init_tokens_for_every_user():
    torch.manual_seed(0)
    init = torch.randn(5, 16)
    projector = SoftPromptProjector(32, 16, length=5, width=64, init_tokens=init)
    users = 10 * torch.randn(50, 32)  # far-apart user vectors
    out = projector(users).detach()
    assert out.shape == (50, 5, 16)
    spread = (out - init).abs().max()
    assert spread < 0.05 * init.abs().mean(), spread  # every user ~ the init tokens
    assert spread > 0  # but not exactly: the weights are small, not zero, so users can move apart


# -- with the real SmolLM2 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base():
    pytest.importorskip("transformers", reason="needs transformers")
    from copersona.model.base_model import load_base_model

    base = load_base_model("smollm2", device="cpu")
    base.model.eval()
    base.model.requires_grad_(False)
    return base


def _ids(base, text: str) -> torch.Tensor:
    return torch.tensor(base.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_init_tokens_are_the_init_texts_embeddings(base):
    from copersona.model.personalizer import INIT_TEXT, init_token_embeddings

    table = base.model.get_input_embeddings()
    ids = _ids(base, INIT_TEXT)
    length = len(ids) + 3  # longer than the text: its tokens cycle
    init = init_token_embeddings(table, base.tokenizer, length)
    assert init.shape == (length, base.hidden_size) and init.dtype == torch.float32 and not init.requires_grad
    cycled = torch.cat([ids, ids[:3]])
    assert torch.equal(init, table.weight[cycled].detach().float())


def test_untrained_soft_prompt_reads_as_the_init_text(base):
    """Every virtual token of an untrained projector is nearest to the real token it started from."""
    from copersona.model.personalizer import INIT_TEXT, init_token_embeddings

    table = base.model.get_input_embeddings()
    length = 8
    init = init_token_embeddings(table, base.tokenizer, length)
    torch.manual_seed(0)
    projector = SoftPromptProjector(64, base.hidden_size, length=length, width=512, init_tokens=init)
    with torch.no_grad():
        prompts = projector(5 * torch.randn(4, 64))
        distances = torch.cdist(prompts.reshape(-1, base.hidden_size), table.weight.float())
    nearest = distances.argmin(dim=1).reshape(4, length)
    assert torch.equal(nearest, _ids(base, INIT_TEXT)[:length].expand(4, -1))


def test_soft_prompt_of_real_token_embeddings_is_those_tokens(base):
    """Prepending the embeddings of real tokens gives the logits and loss of those tokens as input ids."""
    table = base.model.get_input_embeddings()
    prefix = _ids(base, " A review by a guitarist:")
    texts = [" The strings sound bright and stay in tune.", " Cheap cable."]
    rows = [_ids(base, t) for t in texts]
    width = max(len(r) for r in rows)
    input_ids = torch.full((2, width), base.tokenizer.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.long)
    labels = torch.full((2, width), IGNORE_INDEX)
    for i, r in enumerate(rows):  # right padding, as the trainer's collate makes it
        input_ids[i, : len(r)], mask[i, : len(r)], labels[i, 1 : len(r)] = r, 1, r[1:]
    soft = table(prefix).expand(2, -1, -1)
    embeddings, full_mask, full_labels = prepend_soft_prompt(table(input_ids), mask, soft, labels)
    with torch.no_grad():
        via_soft = base.model(inputs_embeds=embeddings, attention_mask=full_mask, labels=full_labels)
        plain_ids = torch.cat([prefix.expand(2, -1), input_ids], dim=1)
        plain = base.model(input_ids=plain_ids, attention_mask=full_mask, labels=full_labels)
    real = full_mask.bool()
    torch.testing.assert_close(via_soft.logits[real], plain.logits[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(via_soft.loss, plain.loss, rtol=1e-5, atol=1e-5)
    # The virtual positions add nothing to the loss: only the review tokens after the first count.
    n = sum(len(r) - 1 for r in rows)
    logits = plain.logits[:, prefix.numel() :]
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    torch.testing.assert_close(plain.loss, manual / n, rtol=1e-5, atol=1e-5)


def test_real_forward_trains_the_projector(base):
    from copersona.model.personalizer import init_token_embeddings

    length = 4
    init = init_token_embeddings(base.model.get_input_embeddings(), base.tokenizer, length)
    torch.manual_seed(0)
    projector = SoftPromptProjector(16, base.hidden_size, length=length, width=32, init_tokens=init)
    ids = _ids(base, " Solid tuner, easy to read on a dark stage.").unsqueeze(0).expand(2, -1)
    labels = ids.clone()
    labels[:, 0] = IGNORE_INDEX
    embeddings, mask, labels = prepend_soft_prompt(
        base.model.get_input_embeddings()(ids), torch.ones_like(ids), projector(torch.randn(2, 16)), labels
    )
    loss = base.model(inputs_embeds=embeddings, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(loss) and 0 < float(loss.detach()) < 20
    loss.backward()
    for name, parameter in projector.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
