"""Learning-rate schedules (multipliers of the peak rate) against values derived by hand."""

from __future__ import annotations

import math

import pytest

from slamming.tasks.schedules import InverseSqrt, WarmupCosine


def test_warmup_cosine_hand_values() -> None:
    f = WarmupCosine(warmup_ratio=0.2, total_steps=10, min_ratio=0.05)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0]
    assert abs(f(6) - 0.525) < 1e-12
    assert abs(f(10) - 0.05) < 1e-12 and abs(f(50) - 0.05) < 1e-12
    flat = WarmupCosine(warmup_ratio=0.0, total_steps=10, min_ratio=1.0)
    assert all(flat(s) == 1.0 for s in range(12))
    f.resize(20)  # warmup 4, decay over 16 steps: step 12 is half way
    assert f.warmup_steps == 4 and f(1) == 0.5 and abs(f(12) - 0.525) < 1e-12


def test_inverse_sqrt_hand_values() -> None:
    f = InverseSqrt(warmup_steps=4)
    assert [f(0), f(1), f(2), f(3)] == [0.25, 0.5, 0.75, 1.0]
    assert abs(f(15) - 0.5) < 1e-12 and abs(f(63) - 0.25) < 1e-12
    f.resize(10)  # no horizon: unchanged
    assert abs(f(15) - 0.5) < 1e-12
    assert InverseSqrt(0)(0) == 1.0 and abs(InverseSqrt(0)(3) - 0.5) < 1e-12


def test_warmup_cosine_at_every_step_of_a_short_run() -> None:
    # warmup_ratio 0.25 of T = 8 steps: W = ceil(2.0) = 2, decay over T - W = 6 steps, floor m = 0.2.
    # Warmup: s = 0, 1 -> (s + 1) / 2 = 0.5, 1.0.
    # Decay: p = (s - 2) / 6 and m + (1 - m)(1 + cos(pi p)) / 2 = 0.2 + 0.4 (1 + cos(pi p)):
    #   s = 2: p = 0,   cos 0 = 1            -> 0.2 + 0.4 * 2             = 1.0
    #   s = 3: p = 1/6, cos(pi/6) = sqrt3/2  -> 0.2 + 0.4 (1 + 0.8660254) = 0.9464102
    #   s = 4: p = 1/3, cos(pi/3) = 1/2      -> 0.2 + 0.4 * 1.5           = 0.8
    #   s = 5: p = 1/2, cos(pi/2) = 0        -> 0.2 + 0.4                 = 0.6
    #   s = 6: p = 2/3, cos(2pi/3) = -1/2    -> 0.2 + 0.4 * 0.5           = 0.4
    #   s = 7: p = 5/6, cos(5pi/6) = -sqrt3/2 -> 0.2 + 0.4 (1 - 0.8660254) = 0.2535898
    #   s >= 8: p clamped to 1, cos pi = -1   -> 0.2
    half_root3 = math.sqrt(3.0) / 2.0
    expected = [
        0.5,
        1.0,
        1.0,
        0.2 + 0.4 * (1 + half_root3),
        0.8,
        0.6,
        0.4,
        0.2 + 0.4 * (1 - half_root3),
        0.2,
        0.2,
    ]
    f = WarmupCosine(warmup_ratio=0.25, total_steps=8, min_ratio=0.2)
    assert f.warmup_steps == 2
    assert [f(s) for s in range(10)] == pytest.approx(expected, abs=1e-12)


def test_warmup_cosine_rounds_the_warmup_up_and_can_decay_to_zero() -> None:
    # warmup_ratio 0.15 of T = 10: 1.5 steps, rounded up to W = 2; decay over 8 steps to m = 0.
    # Multiplier (1 + cos(pi p)) / 2 = cos^2(pi p / 2) with p = (s - 2) / 8:
    #   s = 4: p = 1/4 -> cos^2(pi/8)  = (2 + sqrt2) / 4 = 0.8535534
    #   s = 6: p = 1/2 -> cos^2(pi/4)  = 1/2
    #   s = 8: p = 3/4 -> cos^2(3pi/8) = (2 - sqrt2) / 4 = 0.1464466
    #   s = 10: p = 1  -> 0
    f = WarmupCosine(warmup_ratio=0.15, total_steps=10, min_ratio=0.0)
    assert f.warmup_steps == 2 and [f(0), f(1)] == [0.5, 1.0]
    root2 = math.sqrt(2.0)
    assert f(4) == pytest.approx((2 + root2) / 4, abs=1e-12)
    assert f(6) == pytest.approx(0.5, abs=1e-12)
    assert f(8) == pytest.approx((2 - root2) / 4, abs=1e-12)
    assert f(10) == pytest.approx(0.0, abs=1e-12) and f(11) == pytest.approx(0.0, abs=1e-12)


def test_inverse_sqrt_with_a_warmup_of_nine() -> None:
    # W = 9. Warmup (s + 1 < 9): (s + 1) / 9, so s = 0 -> 1/9, s = 3 -> 4/9, s = 7 -> 8/9.
    # From s + 1 = 9 on: sqrt(9 / (s + 1)) = 3 / sqrt(s + 1):
    #   s = 8 -> 3/3 = 1; s = 35 -> 3/6 = 1/2; s = 80 -> 3/9 = 1/3; s = 143 -> 3/12 = 1/4.
    f = InverseSqrt(warmup_steps=9)
    steps = [0, 3, 7, 8, 35, 80, 143]
    expected = [1 / 9, 4 / 9, 8 / 9, 1.0, 0.5, 1 / 3, 0.25]
    assert [f(s) for s in steps] == pytest.approx(expected, abs=1e-12)
    # The two pieces meet at 1 (s = 8) and the multiplier never exceeds it.
    assert max(f(s) for s in range(200)) == pytest.approx(1.0, abs=1e-12)
