"""Pure loss and schedule functions against numbers derived by hand in their docstrings."""

from __future__ import annotations

import math

import torch

from slamming.tasks.losses import next_unit_loss
from slamming.tasks.schedules import InverseSqrt, WarmupCosine
from slamming.vocab import IGNORE_INDEX


def test_next_unit_loss_hand_example() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    loss, n = next_unit_loss(logits, torch.tensor([[0, 1]]))
    assert abs(float(loss) - 1.5 * math.log(2.0)) < 1e-6
    assert int(n) == 2
    loss, n = next_unit_loss(logits, torch.tensor([[0, IGNORE_INDEX]]))
    assert abs(float(loss) - math.log(2.0)) < 1e-6
    assert int(n) == 1


def test_next_unit_loss_upcasts_bf16_and_handles_no_targets() -> None:
    logits = torch.randn(2, 3, 5).bfloat16()
    labels = torch.tensor([[1, 2, 3], [4, 0, IGNORE_INDEX]])
    loss, n = next_unit_loss(logits, labels)
    assert loss.dtype == torch.float32 and int(n) == 5
    ref = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, 5), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert abs(float(loss) - float(ref)) < 1e-6
    empty, n0 = next_unit_loss(logits, torch.full((2, 3), IGNORE_INDEX))
    assert float(empty) == 0.0 and int(n0) == 0


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


def test_dpo_loss_hand_example_and_signs() -> None:
    from slamming.tasks.losses import dpo_loss

    t = torch.tensor
    loss, chosen, rejected = dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.1)
    assert abs(float(loss) - math.log1p(math.exp(-0.2))) < 1e-6  # 0.598139
    assert abs(float(chosen[0]) - 0.1) < 1e-6 and abs(float(rejected[0]) + 0.1) < 1e-6
    # Preferring the rejected side raises the loss; equal rewards give ln 2.
    worse, _, _ = dpo_loss(t([-3.0]), t([-1.0]), t([-2.0]), t([-2.0]), beta=0.1)
    assert float(worse) > float(loss)
    even, _, _ = dpo_loss(t([-2.0]), t([-2.0]), t([-2.0]), t([-2.0]))
    assert abs(float(even) - math.log(2.0)) < 1e-6
    # Label smoothing eps mixes in the flipped pair: eps = 0.5 makes the loss symmetric.
    half, _, _ = dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.1, label_smoothing=0.5)
    assert abs(float(half) - 0.5 * (math.log1p(math.exp(-0.2)) + math.log1p(math.exp(0.2)))) < 1e-6
