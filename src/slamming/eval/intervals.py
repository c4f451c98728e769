"""How sure a pair-benchmark accuracy is: 95 % intervals, and whether two models really differ.

An accuracy over ``n`` pairs is a proportion, so :func:`accuracy_interval` gives its Wilson score
interval (sound near 0 and 1 and for small ``n``, where the normal one is not). Two models scored on
the same pairs are compared pair by pair (:func:`paired_difference`): the mean of the per-pair
differences of their outcomes, with a normal interval from the differences' spread. A pair both get
right or both get wrong adds nothing but ``n``, so the paired interval is narrower than the two
accuracies' intervals side by side suggest, and "DPO helped" holds when it excludes zero.

Per-pair outcomes travel as a string (:func:`encode_outcomes`): ``1`` the positive side scored
higher, ``0`` lower, ``=`` a tie; one character a pair keeps ``eval-results.json`` small even for
sBLIMP's 63,000 pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Z95", "accuracy_interval", "decode_outcomes", "encode_outcomes", "paired_difference"]

#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054
_CODES = {1.0: "1", 0.0: "0", 0.5: "="}
_VALUES = {code: value for value, code in _CODES.items()}


def accuracy_interval(outcomes: Sequence[float] | np.ndarray, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the mean of per-pair outcomes (1, 0 or 0.5 for a tie).

    Returns ``(nan, nan)`` for no pairs.

    Example:
        45 right of 50 gives (0.786, 0.957); 50 of 50 gives (0.929, 1.0).
    """
    values = np.asarray(outcomes, dtype=np.float64)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    p = float(values.mean())
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(
    before: Sequence[float] | np.ndarray, after: Sequence[float] | np.ndarray, z: float = Z95
) -> tuple[float, float, float]:
    """Mean per-pair difference ``after - before`` of two models' outcomes on the same pairs, and its
    normal-approximation interval ``(mean, low, high)``.

    Raises:
        ValueError: the two hold different numbers of pairs, or none.
    """
    a, b = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need the outcomes of the same pairs, got {len(a)} and {len(b)}")
    diff = b - a
    mean = float(diff.mean())
    half = z * float(diff.std(ddof=1)) / math.sqrt(len(diff)) if len(diff) > 1 else float("inf")
    return mean, mean - half, mean + half


def encode_outcomes(outcomes: Sequence[float] | np.ndarray) -> str:
    """Per-pair outcomes (1, 0, 0.5) as one character each: ``1``, ``0``, ``=``.

    Raises:
        ValueError: an outcome other than 1, 0 or 0.5.
    """
    try:
        return "".join(_CODES[float(value)] for value in outcomes)
    except KeyError as err:
        raise ValueError(f"pair outcomes are 1, 0 or 0.5, got {err.args[0]}") from None


def decode_outcomes(text: str) -> np.ndarray:
    """The inverse of :func:`encode_outcomes` (float64).

    Raises:
        ValueError: a character other than ``1``, ``0`` or ``=``.
    """
    try:
        return np.array([_VALUES[code] for code in text], dtype=np.float64)
    except KeyError as err:
        raise ValueError(f"pair outcomes are written as 1, 0 or =, got {err.args[0]!r}") from None
