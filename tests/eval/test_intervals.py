"""95 % intervals of pair-benchmark accuracies and of paired differences, against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slamming.eval.intervals import (
    Z95,
    accuracy_interval,
    decode_outcomes,
    encode_outcomes,
    paired_difference,
)


def test_wilson_interval_by_hand() -> None:
    # 45 of 50: centre (0.9 + z^2/100) / (1 + z^2/50), half z/(1 + z^2/50) * sqrt(0.09/50 + z^2/10000).
    z2 = Z95 * Z95
    centre = (0.9 + z2 / 100) / (1 + z2 / 50)
    half = Z95 / (1 + z2 / 50) * math.sqrt(0.9 * 0.1 / 50 + z2 / 10000)
    assert accuracy_interval([1.0] * 45 + [0.0] * 5) == pytest.approx((centre - half, centre + half))
    assert accuracy_interval([1.0] * 45 + [0.0] * 5) == pytest.approx((0.7864, 0.9565), abs=1e-4)
    low, high = accuracy_interval([1.0] * 50)
    assert high == 1.0 and low == pytest.approx(50 / (50 + z2))
    # More pairs, a narrower interval around the same accuracy.
    wide, narrow = accuracy_interval([1.0, 0.0] * 50), accuracy_interval([1.0, 0.0] * 500)
    assert narrow[0] > wide[0] and narrow[1] < wide[1] and sum(narrow) / 2 == pytest.approx(0.5)
    assert all(math.isnan(v) for v in accuracy_interval([]))


def test_paired_difference_by_hand() -> None:
    before = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=float)
    after = np.array([1, 1, 0, 1, 1, 1, 0, 0], dtype=float)
    diff = after - before  # 1 0 0 0 0 1 0 -1: mean 1/8
    mean, low, high = paired_difference(before, after)
    half = Z95 * diff.std(ddof=1) / math.sqrt(8)
    assert (mean, low, high) == pytest.approx((0.125, 0.125 - half, 0.125 + half))
    assert low < 0 < high  # 8 pairs show nothing
    # The same pattern over 800 pairs: the interval excludes zero.
    assert paired_difference(np.tile(before, 100), np.tile(after, 100))[1] > 0
    with pytest.raises(ValueError, match="same pairs"):
        paired_difference([1.0], [1.0, 0.0])


def test_outcomes_round_trip_as_one_character_each() -> None:
    outcomes = [1.0, 0.0, 0.5, 1.0]
    assert encode_outcomes(outcomes) == "10=1"
    assert decode_outcomes("10=1").tolist() == outcomes
    with pytest.raises(ValueError, match="1, 0 or 0.5"):
        encode_outcomes([0.7])
    with pytest.raises(ValueError, match="1, 0 or ="):
        decode_outcomes("1x")
