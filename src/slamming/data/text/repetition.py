"""Self-repetition of a text: auto-BLEU, the paper's filter of preference data and a generation metric.

The DPO data filter (:func:`slamming.data.preference.text.filter_auto_bleu`) drops triples that
repeat themselves; generation (``slamming predict``) reports it over transcripts and, with units
written as words, over unit sequences (:func:`slamming.eval.genppl.unit_auto_bleu`).
"""

from __future__ import annotations

import re

__all__ = ["auto_bleu"]

_PUNCTUATION = re.compile(r"[^\w\s]+")


def _words(text: str) -> list[str]:
    return _PUNCTUATION.sub("", text.lower()).split()


def auto_bleu(text: str, n: int = 2) -> float:
    """Auto-BLEU (Lin et al.): the share of word n-gram positions whose n-gram recurs in the text.

    Words are the lower-cased, punctuation-stripped, whitespace-separated tokens. Position ``i``
    counts when the n-gram starting there also starts at some other position ``j != i``; the score
    is the count divided by the number of n-grams. It measures self-repetition: 0 for text that never
    repeats a bigram, near 1 for a loop.

    Example:
        ``"The cat, the cat!"`` → words ``the cat the cat`` → bigrams ``(the cat)``, ``(cat the)``,
        ``(the cat)``. Positions 0 and 2 share ``(the cat)``; ``(cat the)`` occurs once. Score 2/3.
        ``"a b c a b"`` → ``(a b) (b c) (c a) (a b)`` → 2 repeated positions of 4 = 0.5.

    Args:
        text: any text.
        n: n-gram order (2 in the Slam paper).

    Returns:
        A fraction in [0, 1]; 0.0 when the text has fewer than two n-grams.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = _words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2:
        return 0.0
    counts: dict[tuple[str, ...], int] = {}
    for gram in grams:
        counts[gram] = counts.get(gram, 0) + 1
    # A position repeats iff its n-gram occurs more than once; counting this way is O(len).
    return sum(1 for gram in grams if counts[gram] > 1) / len(grams)
