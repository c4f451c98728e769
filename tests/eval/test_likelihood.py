"""Pair scoring: per-sequence log-likelihoods, batched = alone (D2), outcomes and aggregation by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slamming.eval.intervals import accuracy_interval
from slamming.eval.likelihood import (
    flat_accuracy,
    pair_outcomes,
    score_sequences,
    score_units,
    summarize_pairs,
    zerospeech_accuracy,
)
from slamming.models.unit_lm import UnitLMBuilder
from slamming.vocab import BOS_ID, EOS_ID
from tests.conftest import TINY_BACKBONE

K = 20


class _Uniform(torch.nn.Module):
    """A causal LM whose logits are all zero: every target has probability 1/V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool) -> object:
        logits = torch.zeros(*input_ids.shape, self.vocab) + 0 * self.anchor

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K).eval()


def _alone(model: torch.nn.Module, ids: np.ndarray) -> tuple[float, float]:
    """Mean and sum of log p(ids[t] | ids[:t]) for t >= 1, by a direct unpadded forward."""
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(ids)[None]).logits[0].double()
    logps = torch.log_softmax(logits, dim=-1)[torch.arange(len(ids) - 1), torch.as_tensor(ids[1:])]
    return float(logps.mean()), float(logps.sum())


def test_uniform_model_scores_log_one_over_v() -> None:
    v = K + 2
    seqs = [
        np.array([BOS_ID, 5, 7, EOS_ID]),
        np.array([BOS_ID, EOS_ID]),
        np.array([BOS_ID, 3, 3, 3, 3, EOS_ID]),
    ]
    mean = score_sequences(_Uniform(v), seqs, mean=True)
    total = score_sequences(_Uniform(v), seqs, mean=False)
    assert mean.dtype == torch.float32
    assert torch.allclose(mean, torch.full((3,), -math.log(v)), atol=1e-6)
    # 3, 1 and 5 targets: the opening <S> is never predicted, the closing one always is.
    assert torch.allclose(total, torch.tensor([-3, -1, -5]) * math.log(v), atol=1e-5)


def test_batched_scores_equal_each_sequence_alone(model: torch.nn.Module) -> None:
    """D2: right padding + attention mask change nothing beyond float rounding."""
    rng = np.random.default_rng(0)
    units = [rng.integers(0, K, size=n) for n in (1, 7, 30, 3, 55, 12, 0, 41)]
    docs = [np.concatenate([[BOS_ID], u + 2, [EOS_ID]]) for u in units]
    expected = [_alone(model, d) for d in docs]
    for batch_size in (None, 3, 1):
        mean = score_sequences(model, docs, mean=True, batch_size=batch_size)
        total = score_sequences(model, docs, mean=False, batch_size=batch_size)
        assert np.allclose(mean.numpy(), [e[0] for e in expected], atol=1e-5, rtol=0)
        assert np.allclose(total.numpy(), [e[1] for e in expected], atol=1e-5 * 60, rtol=1e-6)
    scores, cut = score_units(model, units, mean=True)
    assert cut == 0 and np.allclose(scores.numpy(), [e[0] for e in expected], atol=1e-5)


def test_spans_average_over_the_units_a_merged_id_stands_for(model: torch.nn.Module) -> None:
    """With merges, the mean divides the summed log-likelihood by the units spanned, not the ids."""
    spans = np.ones(K, dtype=np.int64)
    spans[10:] = 3  # units 10.. stand for three units each
    units = [np.array([1, 12, 4]), np.array([0]), np.array([11, 11])]
    sums, _ = score_units(model, units, mean=False)
    per_id, _ = score_units(model, units, mean=True)
    per_unit, _ = score_units(model, units, mean=True, spans=spans)
    # targets: the units then the closing <S> (counting 1)
    assert np.allclose(
        per_unit.numpy(), sums.numpy() / np.array([1 + 3 + 1 + 1, 1 + 1, 3 + 3 + 1]), atol=1e-6
    )
    assert np.allclose(per_id.numpy(), sums.numpy() / np.array([4, 2, 3]), atol=1e-6)
    same, _ = score_units(model, units, mean=True, spans=np.ones(K, dtype=np.int64))
    assert np.allclose(same.numpy(), per_id.numpy(), atol=1e-7)  # no merges: the paper's mean
    assert torch.equal(score_units(model, units, mean=False, spans=spans)[0], sums)


def test_too_long_documents_keep_their_end(model: torch.nn.Module) -> None:
    units = [np.arange(15) % K, np.arange(3)]
    scores, cut = score_units(model, units, mean=True, max_length=8)
    full = np.concatenate([[BOS_ID], units[0] + 2, [EOS_ID]])
    assert cut == 1
    assert scores[0].item() == pytest.approx(_alone(model, full[-8:])[0], abs=1e-5)
    assert scores[1].item() == pytest.approx(_alone(model, np.array([BOS_ID, 2, 3, 4, EOS_ID]))[0], abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 ids"):
        score_sequences(model, [np.array([BOS_ID])])


def test_a_memo_runs_each_distinct_document_once_and_gives_the_same_scores(model: torch.nn.Module) -> None:
    rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: rows.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    try:
        rng = np.random.default_rng(1)
        units = [rng.integers(0, K, size=n) for n in (5, 9, 14)]
        sides = [units[0], units[1], units[0], units[2], units[1]]  # 3 distinct of 5
        plain, _ = score_units(model, sides, mean=True)
        assert sum(rows) == 5
        memo: dict[bytes, float] = {}
        rows.clear()
        first, _ = score_units(model, sides, mean=True, memo=memo)
        assert sum(rows) == 3 and len(memo) == 3
        assert np.allclose(first.numpy(), plain.numpy(), atol=1e-6)
        assert first[0] == first[2] and first[1] == first[4]
        rows.clear()
        again, _ = score_units(model, [units[2], units[0], np.arange(4) % K], mean=True, memo=memo)
        assert sum(rows) == 1 and len(memo) == 4  # only the new document ran
        assert again[0] == first[3] and again[1] == first[0]
    finally:
        hook.remove()


def test_outcomes_and_aggregations_by_hand() -> None:
    outcomes = pair_outcomes(np.array([-1.0, -2.0, -3.0, -1.5]), np.array([-2.0, -2.0, -1.0, -1.6]))
    assert outcomes.tolist() == [1.0, 0.5, 0.0, 1.0]
    assert flat_accuracy(outcomes) == pytest.approx(2.5 / 4)
    # id a: 1, 0.5 (two voices) -> 0.75; id b: 0 -> 0; id c: 1 -> 1; mean 1.75 / 3.
    ids = ["a", "a", "b", "c"]
    assert zerospeech_accuracy(outcomes, ids) == pytest.approx(1.75 / 3)
    summary = summarize_pairs(outcomes, ids, ["x", "x", "y", ""], zerospeech=True)
    assert summary["pairs"] == 4 and summary["accuracy"] == pytest.approx(0.625)
    assert summary["zerospeech_accuracy"] == pytest.approx(1.75 / 3)
    assert summary["groups"] == {
        "x": {
            "pairs": 2,
            "accuracy": 0.75,
            "ci95": list(accuracy_interval([1.0, 0.5])),
            "zerospeech_accuracy": 0.75,
        },
        "y": {
            "pairs": 1,
            "accuracy": 0.0,
            "ci95": list(accuracy_interval([0.0])),
            "zerospeech_accuracy": 0.0,
        },
    }
    flat = summarize_pairs(outcomes, ids, [""] * 4, zerospeech=False)
    assert flat == {"pairs": 4, "accuracy": 0.625, "ci95": list(accuracy_interval(outcomes))}
    assert math.isnan(flat_accuracy(np.array([])))
