"""Epoch plans, mixture weights, rank sharding and the resumable cursor of packed windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slamming.data.corpus.format import UnitCorpus
from slamming.data.pretrain.windows import EpochPlan, PackedWindowDataset
from slamming.data.sampling import ResumableSampler
from tests.conftest import markov_documents, write_corpus


def _corpus(tmp_path: Path, name: str, n: int, seed: int) -> UnitCorpus:
    return UnitCorpus(write_corpus(tmp_path / name, markov_documents(n, seed=seed)))


def test_plan_is_a_seeded_permutation_of_all_documents(tmp_path: Path) -> None:
    c = _corpus(tmp_path, "a", 50, 0)
    p0, p0b, p1 = EpochPlan([c], None, 7, 0), EpochPlan([c], None, 7, 0), EpochPlan([c], None, 7, 1)
    assert np.array_equal(p0.doc_of, p0b.doc_of)
    assert not np.array_equal(p0.doc_of, p1.doc_of)
    assert sorted(p0.doc_of.tolist()) == list(range(50))
    assert p0.total_ids == int(c.num_tokens) + 2 * 50
    assert EpochPlan([c], None, 7, 3, shuffle=False).doc_of.tolist() == list(range(50))


def test_mixture_weights_set_token_shares(tmp_path: Path) -> None:
    a, b = _corpus(tmp_path, "a", 300, 1), _corpus(tmp_path, "b", 60, 2)
    plan = EpochPlan([a, b], [0.5, 0.5], 0, 0)
    lengths = np.diff(plan.starts)
    share_b = lengths[plan.corpus_of == 1].sum() / lengths.sum()
    assert abs(share_b - 0.5) < 0.03  # the small corpus is repeated up to half of the ids
    counts = np.bincount(plan.doc_of[plan.corpus_of == 1], minlength=60)
    assert counts.min() >= 2  # each of its documents appears at least twice


def test_sampler_shards_disjointly_and_resumes_from_cursor(tmp_path: Path) -> None:
    ds = PackedWindowDataset([_corpus(tmp_path, "a", 200, 3)], context_length=32, seed=5)
    n = len(ds)
    r0, r1 = list(ResumableSampler(ds, 2, 0)), list(ResumableSampler(ds, 2, 1))
    assert len(r0) == len(r1) == n // 2
    assert not {k for _, k in r0} & {k for _, k in r1}
    assert {k for _, k in r0} | {k for _, k in r1} == set(range(n // 2 * 2))
    # A sampler resumed with a cursor yields exactly what remained of the uninterrupted order.
    full = list(ResumableSampler(ds, 1, 0))
    resumed = ResumableSampler(ds, 1, 0, cursor=10)
    assert list(resumed) == full[10:] and len(resumed) == n - 10
    # Past the end of an epoch, the cursor moves into the next one with a new document order.
    nxt = ResumableSampler(ds, 1, 0, cursor=n + 3)
    items = list(nxt)
    assert items[0] == (1, 3) and len(items) == n - 3
    assert not np.array_equal(ds[(0, 3)][0], ds[(1, 3)][0])


def test_mixture_of_two_corpora_over_1000_windows(tmp_path: Path) -> None:
    """Acceptance B8: weights 0.7 / 0.3 give token shares within 2 points over 1,000 windows."""
    a, b = _corpus(tmp_path, "a", 2500, 11), _corpus(tmp_path, "b", 700, 12)
    ds = PackedWindowDataset([a, b], context_length=64, weights=[0.7, 0.3], seed=0)
    assert len(ds) >= 1000
    counts = sum(ds.window_ids_per_corpus(0, k) for k in range(1000))
    shares = counts / counts.sum()
    assert abs(shares[0] - 0.7) < 0.02 and abs(shares[1] - 0.3) < 0.02, shares
    report = ds.mix_report(["a", "b"])
    assert report.startswith("training mix per epoch: a 70.") and "b 30." in report
    # each window's counts add up to its L + 1 ids
    assert all(ds.window_ids_per_corpus(0, k).sum() == 65 for k in range(20))
