"""The sampler: `generate`'s twin for one prompt, batch-independent seeds, EOS and length rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slamming.errors import SlammingError
from slamming.eval.generate import (
    SamplingSettings,
    process_logits,
    prompt_ids,
    prompt_seed,
    sample_continuations,
)
from slamming.models.unit_lm import UnitLMBuilder
from slamming.vocab import EOS_ID, PAD_ID
from tests.conftest import TINY_BACKBONE

K = 20


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K).eval()


PROMPTS = [np.array([3, 4, 5, 6, 7, 8]), np.array([1, 2]), np.array([19, 0, 11, 12, 13, 14, 15, 16, 17])]


def test_one_prompt_reproduces_transformers_generate() -> None:
    """Reference twin: for a batch of one, our sampler is `generate(do_sample=True)` token for token."""
    model = _model()
    settings = SamplingSettings(temperature=0.8, top_k=5, max_new_tokens=40, repetition_penalty=1.1)
    for units, seed in zip(PROMPTS, (11, 12, 13), strict=True):
        ours = sample_continuations(model, [units], [seed], settings)[0]
        torch.manual_seed(seed)
        ids = torch.tensor([prompt_ids(units)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=0.8,
            top_k=5,
            top_p=1.0,
            max_new_tokens=40,
            repetition_penalty=1.1,
            suppress_tokens=[PAD_ID],
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )[0, ids.shape[1] :].tolist()
        if out and out[-1] == EOS_ID:
            out = out[:-1]
        assert ours.units.tolist() == [t - 2 for t in out]
        assert len(ours.units) == 40 or ours.eos


def test_batch_with_left_padding_equals_one_at_a_time() -> None:
    model = _model(1)
    settings = SamplingSettings(max_new_tokens=30)
    seeds = [prompt_seed(7, i) for i in range(len(PROMPTS))]
    batched = sample_continuations(model, PROMPTS, seeds, settings)
    single = [sample_continuations(model, [p], [s], settings)[0] for p, s in zip(PROMPTS, seeds, strict=True)]
    assert [c.units.tolist() for c in batched] == [c.units.tolist() for c in single]
    assert [c.seed for c in batched] == seeds
    # Another batch composition (reordered, a prompt dropped) leaves each prompt's result unchanged.
    again = sample_continuations(model, [PROMPTS[2], PROMPTS[0]], [seeds[2], seeds[0]], settings)
    assert again[0].units.tolist() == single[2].units.tolist()
    assert again[1].units.tolist() == single[0].units.tolist()


def test_length_is_max_new_tokens_unless_eos() -> None:
    model = _model(2)
    settings = SamplingSettings(max_new_tokens=25, top_k=0)
    runs = sample_continuations(model, PROMPTS * 4, list(range(12)), settings)
    assert all(len(c.units) == 25 if not c.eos else len(c.units) < 25 for c in runs)
    assert {c.eos for c in runs} == {True, False}  # both ways of stopping occur with these seeds
    assert all(0 <= int(c.units.min()) and int(c.units.max()) < K for c in runs if len(c.units))
    head = model.get_output_embeddings().weight
    # A model that always says <S> stops at once with an empty continuation.
    with torch.no_grad():
        head.zero_()
        head[EOS_ID] = 1.0
        model.get_input_embeddings().weight.fill_(1.0)
    runs = sample_continuations(model, PROMPTS, [1, 2, 3], SamplingSettings(top_k=1, repetition_penalty=1.0))
    assert all(c.eos and len(c.units) == 0 for c in runs)


def test_process_logits_by_hand() -> None:
    """logits [0, 2, -1, 1, 0.5], ids 1 and 2 already present, penalty 2, temperature 0.5, top-2:
    PAD → -inf; id 1: 2/2 = 1; id 2: -1*2 = -2; /0.5 → [-inf, 2, -4, 2, 1]; top-2 keeps the two 2s."""
    logits = torch.tensor([[0.0, 2.0, -1.0, 1.0, 0.5]])
    present = torch.tensor([[False, True, True, False, False]])
    settings = SamplingSettings(temperature=0.5, top_k=2, repetition_penalty=2.0)
    scores = process_logits(logits, present, settings)
    inf = float("-inf")
    assert scores.tolist() == [[inf, 2.0, inf, 2.0, inf]]


def test_seeds_and_settings() -> None:
    assert prompt_seed(0, 3) == prompt_seed(0, 3)
    assert len({prompt_seed(s, i) for s in range(3) for i in range(50)}) == 150
    assert 0 <= prompt_seed(123, 0) < 2**63
    assert prompt_ids([0, 5]) == [1, 2, 7]
    assert SamplingSettings().to_dict() == {
        "temperature": 0.8,
        "top_k": 25,
        "max_new_tokens": 150,
        "repetition_penalty": 1.1,
    }
    with pytest.raises(SlammingError, match="model.temperature must be > 0"):
        SamplingSettings(temperature=0)
    with pytest.raises(SlammingError, match="model.max_new_tokens must be >= 1"):
        SamplingSettings(max_new_tokens=0)
