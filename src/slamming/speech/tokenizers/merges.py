"""Byte-pair merges over units: frequent unit pairs become one unit, so a story takes fewer tokens.

A phone tokeniser (:mod:`.phone`) gives one unit per phoneme, about 180 per story of the embedded
corpus. A tiny LM trained for minutes then sees few stories per step and spends its context on
spelling words out. Byte-pair encoding (Sennrich et al., 2016) applied to the units instead of to
characters learns, from unit strings, the most frequent adjacent pair, gives it a new unit, and
repeats: after 300 merges the embedded stories are about half as long, and the same training steps
lifted topic cloze from 64 % to 88 % (docs/perf-log.md, 2026-12-03).

Merge ``i`` is a pair ``(a, b)`` of units that existed before it; it makes unit ``first_id + i``.
Encoding applies the merges in the order they were learnt, each to every non-overlapping occurrence
from left to right (``a a a`` with ``(a, a)`` gives ``aa a``), so learning and encoding agree. A
merged unit lasts as long as its two parts together, so durations still sum to the utterance's frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slamming.errors import ConfigError

__all__ = ["apply_merges", "check_merges", "learn_merges"]

#: Marks the end of one utterance in a joined array; never a unit, so no merge crosses it.
_SEPARATOR = -1


def check_merges(merges: Sequence[Sequence[int]], first_id: int) -> list[tuple[int, int]]:
    """The merges as ``(a, b)`` int pairs, each naming units that exist before it.

    Raises:
        ConfigError: a merge is not a pair, or names a unit below 0 or not made yet.
    """
    checked = []
    for index, pair in enumerate(merges):
        if len(pair) != 2:
            raise ConfigError(f"merge {index} is {list(pair)!r}; each merge is a pair of units [a, b]")
        a, b = int(pair[0]), int(pair[1])
        if not (0 <= a < first_id + index and 0 <= b < first_id + index):
            raise ConfigError(
                f"merge {index} ({a}, {b}) names a unit that does not exist yet (units 0-{first_id + index - 1}); "
                "the merges are corrupt: fit the tokeniser again"
            )
        checked.append((a, b))
    return checked


def _merge_pair(
    units: np.ndarray, durations: np.ndarray, a: int, b: int, new: int
) -> tuple[np.ndarray, np.ndarray]:
    """Replace every non-overlapping ``a b`` (left to right) by ``new``; its duration is the sum."""
    hits = np.flatnonzero((units[:-1] == a) & (units[1:] == b))
    if len(hits) == 0:
        return units, durations
    if a == b:  # "a a a": the first two merge, the third stays
        kept, last = [], -2
        for hit in hits.tolist():
            if hit > last + 1:
                kept.append(hit)
                last = hit
        hits = np.asarray(kept, dtype=np.int64)
    units, durations = units.copy(), durations.copy()
    units[hits] = new
    durations[hits] += durations[hits + 1]
    keep = np.ones(len(units), dtype=bool)
    keep[hits + 1] = False
    return units[keep], durations[keep]


def _join(sequences: Sequence[np.ndarray]) -> np.ndarray:
    pieces = []
    for sequence in sequences:
        pieces.append(np.asarray(sequence, dtype=np.int64))
        pieces.append(np.array([_SEPARATOR], dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def learn_merges(
    sequences: Sequence[Sequence[int] | np.ndarray], num_merges: int, first_id: int
) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges from unit strings, most frequent adjacent pair first.

    Ties go to the pair with the smaller ``(a, b)``, so the same strings always give the same merges.
    Learning stops early when no pair occurs twice (a merge would then shorten nothing).

    Args:
        sequences: unit strings (one per utterance or text); no pair spans two of them.
        num_merges: how many merges to learn (0 gives none).
        first_id: the first new unit (the number of units before merging).

    Returns:
        The merges in order; merge ``i`` makes unit ``first_id + i``.

    Raises:
        ConfigError: ``num_merges`` is negative.
    """
    if num_merges < 0:
        raise ConfigError(f"the number of unit merges must be >= 0, got {num_merges}")
    joined = _join(sequences)
    durations = np.zeros(len(joined), dtype=np.int64)
    base = first_id + num_merges + 1
    merges: list[tuple[int, int]] = []
    for index in range(num_merges):
        left, right = joined[:-1], joined[1:]
        inside = (left >= 0) & (right >= 0)
        if not inside.any():
            break
        codes, counts = np.unique(left[inside] * base + right[inside], return_counts=True)
        best = int(np.argmax(counts))  # the first maximum: the smallest code among ties
        if counts[best] < 2:
            break
        a, b = divmod(int(codes[best]), base)
        merges.append((a, b))
        joined, durations = _merge_pair(joined, durations, a, b, first_id + index)
    return merges


def apply_merges(
    encoded: Sequence[tuple[np.ndarray, np.ndarray]], merges: Sequence[tuple[int, int]], first_id: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Apply ``merges`` to each utterance's ``(units, durations)``, in the order they were learnt.

    All utterances are merged in one pass per merge (joined with a separator no merge crosses), so
    the cost is the number of merges times the total units, and each result equals that of the
    utterance alone.

    Returns:
        ``(units, durations)`` per utterance, with the input dtypes.
    """
    if not merges or not encoded:
        return [(units.copy(), durations.copy()) for units, durations in encoded]
    units = _join([u for u, _ in encoded])
    durations = _join([d for _, d in encoded])
    for index, (a, b) in enumerate(merges):
        units, durations = _merge_pair(units, durations, a, b, first_id + index)
    ends = np.flatnonzero(units == _SEPARATOR)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [
        (units[s:e].astype(u.dtype), durations[s:e].astype(d.dtype))
        for (u, d), s, e in zip(encoded, starts, ends, strict=True)
    ]
