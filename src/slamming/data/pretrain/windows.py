"""Epoch plans over one or more corpora and packed-window datasets.

* :class:`EpochPlan`: the order of documents in one epoch, drawn from several corpora with mixture
  weights, deterministic from ``(seed, epoch)``.
* :class:`PackedWindowDataset`: map-style dataset whose index is ``(epoch, window)``; it builds the
  window in O(window) from the plan (see :mod:`slamming.data.pretrain.packing`).

The windows are served in a resumable, rank-sharded order by
:class:`~slamming.data.sampling.resumable.ResumableSampler`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from slamming.data.corpus.format import UnitCorpus
from slamming.data.pretrain.packing import build_window, num_windows
from slamming.vocab import NUM_SPECIAL


class EpochPlan:
    """The documents of one epoch, in order, with their stream offsets.

    With one corpus (or ``weights=None``) every document appears once per epoch, shuffled when
    ``shuffle``. With weights, corpus ``i`` contributes documents (cycling through its own seeded
    permutation, so it may repeat or be cut) until it holds ``weights[i]`` of the epoch's ids; the
    epoch has as many ids as all corpora together, and the chosen documents are shuffled together.
    A corpus of weight 0 contributes no document at all.
    """

    def __init__(
        self,
        corpora: Sequence[UnitCorpus],
        weights: Sequence[float] | None,
        seed: int,
        epoch: int,
        shuffle: bool = True,
    ) -> None:
        sizes = [c.lengths.astype(np.int64) + NUM_SPECIAL for c in corpora]
        self.num_corpora = len(corpora)
        rng = np.random.default_rng([seed, epoch])
        if weights is None:
            which = np.concatenate([np.full(len(s), i, dtype=np.int32) for i, s in enumerate(sizes)])
            index = np.concatenate([np.arange(len(s), dtype=np.int64) for s in sizes])
        else:
            total = sum(int(s.sum()) for s in sizes)
            norm = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
            parts_w, parts_i = [], []
            for i, s in enumerate(sizes):
                target = norm[i] * total
                if target <= 0:  # weight 0: none, not the one document the search below would give
                    parts_w.append(np.zeros(0, dtype=np.int32))
                    parts_i.append(np.zeros(0, dtype=np.int64))
                    continue
                perm = np.random.default_rng([seed, epoch, i]).permutation(len(s))
                reps = int(np.ceil(target / max(int(s.sum()), 1))) + 1
                cycle = np.tile(perm, reps)
                count = int(np.searchsorted(np.cumsum(s[cycle]), target, side="left")) + 1
                chosen = cycle[: min(count, len(cycle))]
                parts_w.append(np.full(len(chosen), i, dtype=np.int32))
                parts_i.append(chosen.astype(np.int64))
            which, index = np.concatenate(parts_w), np.concatenate(parts_i)
        if shuffle:
            order = rng.permutation(len(which))
            which, index = which[order], index[order]
        lengths = np.empty(len(which), dtype=np.int64)
        for i, s in enumerate(sizes):
            sel = which == i
            lengths[sel] = s[index[sel]]
        self.corpus_of = which
        self.doc_of = index
        self.starts = np.zeros(len(which) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.starts[1:])

    @property
    def total_ids(self) -> int:
        """Ids in the epoch's stream."""
        return int(self.starts[-1])

    def ids_per_corpus(self, begin: int = 0, end: int | None = None) -> np.ndarray:
        """How many ids of the stream range ``[begin, end)`` come from each corpus."""
        end = self.total_ids if end is None else end
        n_corpora = self.num_corpora  # a corpus of weight 0 still gets its (zero) count
        first = int(np.searchsorted(self.starts, begin, side="right")) - 1
        last = int(np.searchsorted(self.starts, end, side="left"))
        lo = np.maximum(self.starts[first:last], begin)
        hi = np.minimum(self.starts[first + 1 : last + 1], end)
        return np.bincount(self.corpus_of[first:last], weights=hi - lo, minlength=n_corpora).astype(np.int64)

    def mix_report(self, names: Sequence[str], sizes: Sequence[int]) -> str:
        """One line: each corpus's share of the epoch's ids and how many passes over it that is."""
        counts = self.ids_per_corpus()
        parts = []
        for name, count, size in zip(names, counts, sizes, strict=True):
            parts.append(
                f"{name} {100 * count / max(self.total_ids, 1):.1f} % ({count / max(size, 1):.2f} passes)"
            )
        return "training mix per epoch: " + ", ".join(parts)


class PackedWindowDataset(Dataset):
    """Packed windows of ``context_length + 1`` ids over an epoch plan.

    Items are indexed by ``(epoch, window)`` so that data-loader workers, which hold a copy of the
    dataset, always build the window of the right epoch. Every epoch has the same number of windows
    (that of epoch 0 without weights: all ids of all corpora), so progress bars and schedules agree.
    """

    def __init__(
        self,
        corpora: Sequence[UnitCorpus],
        context_length: int,
        weights: Sequence[float] | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not corpora:
            raise ValueError("PackedWindowDataset needs at least one corpus")
        self.corpora = list(corpora)
        self.context_length = int(context_length)
        self.weights = None if weights is None else list(weights)
        self.seed = int(seed)
        self.shuffle = shuffle
        total = sum(int(c.num_tokens) + NUM_SPECIAL * len(c) for c in self.corpora)
        self.windows_per_epoch = num_windows(total, self.context_length)
        if self.weights is not None:
            # A weighted plan may fall a few ids short of the unweighted total: never ask past it.
            self.windows_per_epoch = min(
                self.windows_per_epoch, num_windows(self.plan(0).total_ids, context_length)
            )

    @functools.lru_cache(maxsize=2)  # noqa: B019 - a dataset lives as long as its plans
    def plan(self, epoch: int) -> EpochPlan:
        """The (cached) plan of ``epoch``; without shuffling every epoch is epoch 0."""
        return EpochPlan(self.corpora, self.weights, self.seed, epoch if self.shuffle else 0, self.shuffle)

    def __len__(self) -> int:
        return self.windows_per_epoch

    def window_ids_per_corpus(self, epoch: int, k: int) -> np.ndarray:
        """How many of window ``k``'s ``L + 1`` ids come from each corpus (for mixture reports)."""
        begin = k * self.context_length
        return self.plan(epoch).ids_per_corpus(begin, begin + self.context_length + 1)

    def mix_report(self, names: Sequence[str]) -> str:
        """The effective mixture of epoch 0 (see :meth:`EpochPlan.mix_report`)."""
        sizes = [int(c.num_tokens) + NUM_SPECIAL * len(c) for c in self.corpora]
        return self.plan(0).mix_report(names, sizes)

    def __getitem__(self, item: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch, k = item
        plan = self.plan(int(epoch))
        corpora, corpus_of, doc_of = self.corpora, plan.corpus_of, plan.doc_of
        return build_window(
            int(k),
            plan.starts,
            lambda j: corpora[corpus_of[j]].document(int(doc_of[j])),
            self.context_length,
        )
