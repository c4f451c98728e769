"""The benchmark's data: a synthetic unit corpus with speech-like document lengths, and packing statistics.

The documents are random *deduplicated* unit sequences (no unit repeats its predecessor, as after
Slam's dedup step) whose lengths follow a Beta(2, 2) shape between ``min_len`` and ``max_len``: most
documents are mid-length, few are very short or very long, like utterances in LibriSpeech. They are
written with :class:`slamming.data.corpus.writer.CorpusWriter`, so both trainers read the same on-disk
corpus through the same :class:`slamming.data.pretrain.windows.PackedWindowDataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.writer import CorpusWriter
from slamming.data.pretrain.packing import collate_packed
from slamming.data.pretrain.windows import PackedWindowDataset
from slamming.data.sampling import ResumableSampler
from slamming.vocab import IGNORE_INDEX, NUM_SPECIAL, PAD_ID

#: Identity of the benchmark corpus's made-up tokeniser.
BENCH_IDENTITY_KIND = "bench-synthetic"


def synthetic_documents(n: int, num_units: int, min_len: int, max_len: int, seed: int) -> list[np.ndarray]:
    """``n`` deduplicated random unit sequences with lengths in ``[min_len, max_len]``.

    Args:
        n: number of documents.
        num_units: K; units are drawn from ``[0, K)``.
        min_len: shortest document (units).
        max_len: longest document (units).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        int64 arrays of raw units in which no unit equals its predecessor.
    """
    rng = np.random.default_rng(seed)
    lengths = min_len + np.rint((max_len - min_len) * rng.beta(2.0, 2.0, size=n)).astype(np.int64)
    docs = []
    for length in lengths:
        # A step in [1, K) modulo K never lands on the same unit: the sequence is already deduped.
        steps = rng.integers(1, num_units, size=int(length))
        steps[0] = rng.integers(0, num_units)
        docs.append(np.cumsum(steps) % num_units)
    return docs


def write_bench_corpus(
    path: Path, num_documents: int, num_units: int, min_len: int, max_len: int, seed: int = 0
) -> Path:
    """Write the benchmark corpus to ``path`` (replacing an earlier benchmark corpus there)."""
    identity = {
        "kind": BENCH_IDENTITY_KIND,
        "k": num_units,
        "frame_rate": 25,
        "dedup": True,
        "settings_hash": "b0",
    }
    with CorpusWriter(path, tokenizer=identity, num_units=num_units, overwrite=True) as writer:
        for doc in synthetic_documents(num_documents, num_units, min_len, max_len, seed):
            writer.add(doc)
    return path


@dataclass(frozen=True)
class PackingStats:
    """Token accounting of the training batches and of a padded baseline over the same documents.

    Attributes:
        batches: packed batches inspected.
        packed_real_frac: positions of the packed input grid holding a real id (not PAD).
        packed_target_frac: positions of the packed grid that are trained targets (label != -100).
        padded_longest_frac: real (non-PAD) input positions when the same documents, split into
            chunks of at most ``context + 1`` ids, are batched in plan order and padded to the
            longest chunk of each batch (every real input position is also a trained target there).
        padded_context_frac: the same chunks padded to the full context instead.
        padded_batches: padded batches inspected.
    """

    batches: int
    packed_real_frac: float
    packed_target_frac: float
    padded_longest_frac: float
    padded_context_frac: float
    padded_batches: int


def packing_stats(
    corpus_path: Path, context: int, batch_size: int, num_batches: int, seed: int = 0
) -> PackingStats:
    """Count real ids and trained targets in the first ``num_batches`` training batches.

    The packed batches are exactly those the fit sees first: windows of epoch 0 in
    :class:`ResumableSampler` order, collated by :func:`collate_packed`. The padded baseline walks the
    same epoch plan's documents (``<S> u… <S>``, chunked to ``context + 1`` ids with the remainder
    kept, as slamkit does) and counts the grid of ``batch_size`` chunks × (longest − 1) inputs.
    """
    dataset = PackedWindowDataset([UnitCorpus(corpus_path)], context, None, seed, shuffle=True)
    order = list(ResumableSampler(dataset))
    wanted = num_batches * batch_size
    if len(order) < wanted:
        raise ValueError(
            f"the corpus has {len(order)} windows; {wanted} are needed for {num_batches} batches"
        )
    real = targets = grid = 0
    for b in range(num_batches):
        batch = collate_packed([dataset[item] for item in order[b * batch_size : (b + 1) * batch_size]])
        ids, labels = batch["input_ids"], batch["labels"]
        real += int((ids != PAD_ID).sum())
        targets += int((labels != IGNORE_INDEX).sum())
        grid += ids.numel()

    plan = dataset.plan(0)
    doc_ids = np.diff(plan.starts)  # ids per planned document, <S> and <S> included
    assert int(doc_ids.min()) >= NUM_SPECIAL
    chunk_len: list[int] = []
    for n in doc_ids.tolist():
        full, rest = divmod(int(n), context + 1)
        chunk_len.extend([context + 1] * full + ([rest] if rest > 1 else []))
    chunks = torch.tensor(chunk_len, dtype=torch.int64)
    padded_batches = min(num_batches, len(chunk_len) // batch_size)
    chunks = chunks[: padded_batches * batch_size].reshape(padded_batches, batch_size)
    useful = int((chunks - 1).sum())  # each chunk of n ids gives n - 1 input positions, all trained
    longest_grid = int(((chunks.max(dim=1).values - 1) * batch_size).sum())
    return PackingStats(
        batches=num_batches,
        packed_real_frac=real / grid,
        packed_target_frac=targets / grid,
        padded_longest_frac=useful / longest_grid,
        padded_context_frac=useful / (padded_batches * batch_size * context),
        padded_batches=padded_batches,
    )
