"""Pure loss functions against numbers derived by hand in their docstrings."""

from __future__ import annotations

import math

import torch

from slamming.tasks.losses import next_unit_loss
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
