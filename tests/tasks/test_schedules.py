"""Learning-rate schedules (multipliers of the peak rate) against values derived by hand."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import get_inverse_sqrt_schedule

from slamming.errors import SlammingError
from slamming.tasks.schedules import InverseSqrt, WarmupCosine, make_schedule


def test_warmup_cosine_hand_values() -> None:
    f = WarmupCosine(warmup_ratio=0.2, total_steps=10, min_ratio=0.05)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0]
    assert abs(f(6) - 0.525) < 1e-12
    assert abs(f(10) - 0.05) < 1e-12 and abs(f(50) - 0.05) < 1e-12
    flat = WarmupCosine(warmup_ratio=0.0, total_steps=10, min_ratio=1.0)
    assert all(flat(s) == 1.0 for s in range(12))
    f.resize(20)  # warmup 4, decay over 16 steps: step 12 is half way
    assert f.warmup_steps == 4 and f(1) == 0.5 and abs(f(12) - 0.525) < 1e-12


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


def test_inverse_sqrt_hand_values() -> None:
    # W = 4 (time scale 4): warmup s / 4 for s < 4, then 1 / sqrt(s / 4) = 2 / sqrt(s).
    f = InverseSqrt(warmup_steps=4)
    assert [f(0), f(1), f(2), f(3), f(4)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert abs(f(16) - 0.5) < 1e-12 and abs(f(64) - 0.25) < 1e-12 and abs(f(9) - 2 / 3) < 1e-12
    f.resize(10)  # no horizon: unchanged
    assert abs(f(16) - 0.5) < 1e-12
    # W = 0: the time scale falls back to 10,000, so 1 at s = 0 and 1/2 at s = 30,000.
    g = InverseSqrt(0)
    assert g(0) == 1.0 and abs(g(30_000) - 0.5) < 1e-12 and abs(g(10_000) - math.sqrt(0.5)) < 1e-12
    # An explicit time scale: W = 2, tau = 8 -> shift 6; s = 26: 1 / sqrt(32 / 8) = 0.5.
    h = InverseSqrt(2, timescale=8)
    assert [h(0), h(1), h(2)] == [0.0, 0.5, 1.0] and abs(h(26) - 0.5) < 1e-12


def test_inverse_sqrt_the_authors_dpo_values() -> None:
    # slamkit's DPO: warmup 100, so lr = 5e-5 * sqrt(100 / s) after step 100.
    f = InverseSqrt(warmup_steps=100)
    assert f(1) == 0.01 and f(50) == 0.5 and f(100) == 1.0 and f(400) == 0.5
    assert f(813) == pytest.approx(0.3507153, abs=1e-7)
    assert 5e-5 * f(813) == pytest.approx(1.7536e-5, abs=1e-9)


@pytest.mark.parametrize(("warmup", "timescale"), [(100, None), (9, None), (1, None), (0, None), (3, 20)])
def test_inverse_sqrt_equals_hugging_face_at_every_step(warmup: int, timescale: int | None) -> None:
    ours = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5e-5), InverseSqrt(warmup, timescale)
    )
    hf = get_inverse_sqrt_schedule(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5e-5), warmup, timescale=timescale
    )
    for _ in range(1000):
        assert ours.get_last_lr() == hf.get_last_lr()  # bit for bit
        for sched in (ours, hf):
            sched.optimizer.step()  # no gradients: changes nothing, keeps the call order torch expects
            sched.step()


def test_make_schedule_builds_each_named_schedule() -> None:
    inv = make_schedule("inverse_sqrt", warmup_steps=100, total_steps=None)
    assert isinstance(inv, InverseSqrt) and inv.warmup_steps == inv.timescale == 100
    # From a ratio: ceil(0.01 * 813) = ceil(8.13) = 9 warmup steps.
    assert make_schedule("inverse_sqrt", warmup_ratio=0.01, total_steps=813).warmup_steps == 9
    cos = make_schedule("cosine", warmup_steps=2, total_steps=10, min_ratio=0.1)
    assert isinstance(cos, WarmupCosine) and cos.warmup_steps == 2
    # W = 2 over T = 10: half way through the decay (s = 6) the multiplier is 0.1 + 0.9 / 2 = 0.55.
    assert [cos(0), cos(1), cos(2)] == [0.5, 1.0, 1.0] and cos(6) == pytest.approx(0.55, abs=1e-12)
    cos.resize(18)  # a fixed warmup stays at 2 when the budget moves the horizon; s = 10 is half way
    assert (
        cos.warmup_steps == 2 and cos(10) == pytest.approx(0.55, abs=1e-12) and cos(18) == pytest.approx(0.1)
    )
    ratio = make_schedule("cosine", warmup_ratio=0.2, total_steps=10, min_ratio=0.1)
    ratio.resize(20)  # a warmup ratio follows it: ceil(0.2 * 20) = 4
    assert ratio.warmup_steps == 4
    flat = make_schedule("constant", warmup_steps=4, total_steps=None, min_ratio=0.1)
    assert [flat(s) for s in (0, 1, 3, 4, 100, 10_000)] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]


def test_make_schedule_refuses_unknown_names_and_ambiguous_warmups() -> None:
    with pytest.raises(
        SlammingError, match=r"model.schedule must be one of inverse_sqrt, cosine, constant; got 'linear'"
    ):
        make_schedule("linear", warmup_steps=1, total_steps=10)
    with pytest.raises(ValueError, match="exactly one"):
        make_schedule("cosine", warmup_steps=1, warmup_ratio=0.1, total_steps=10)
    with pytest.raises(ValueError, match="needs total_steps"):
        make_schedule("cosine", warmup_steps=1)
    with pytest.raises(SlammingError, match="warmup_steps must be >= 0"):
        InverseSqrt(-1)
