"""Loss functions of slamming's objectives, as pure functions.

Each function's docstring derives a small example by hand; ``tests/tasks/test_losses.py`` checks
the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slamming.vocab import IGNORE_INDEX


def next_unit_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over real targets, computed in fp32.

    ``labels`` are already aligned with ``logits`` (``labels[:, t]`` is the target of position
    ``t``); entries equal to ``IGNORE_INDEX`` (document boundaries, padding) do not count.

    Example: two positions over a 2-id vocabulary, logits ``[[0, 0], [ln 3, 0]]``, labels
    ``[0, 1]``. Position 0: p = 1/2, loss ln 2. Position 1: p(1) = 1 / (3 + 1) = 1/4, loss ln 4.
    Mean = (ln 2 + ln 4) / 2 = 1.5 ln 2 ≈ 1.0397. With label 1 set to ``IGNORE_INDEX`` the loss
    is ln 2 ≈ 0.6931 and the token count 1.

    Args:
        logits: ``(B, T, V)`` in any float dtype (upcast to fp32 here, as the authors do).
        labels: ``(B, T)`` int64.

    Returns:
        ``(loss, num_tokens)``: the mean loss (0 when there is no target) and the number of
        targets that counted (a 0-d int64 tensor).
    """
    flat_labels = labels.reshape(-1)
    num_tokens = (flat_labels != IGNORE_INDEX).sum()
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / num_tokens.clamp(min=1), num_tokens


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sigmoid DPO loss (Rafailov et al., 2023) on summed completion log-probabilities.

    With rewards ``r_c = beta (pi_c - ref_c)`` and ``r_r = beta (pi_r - ref_r)``, the loss of a
    pair is ``-(1 - eps) log sigma(r_c - r_r) - eps log sigma(r_r - r_c)`` (``eps`` =
    ``label_smoothing``, 0 in the paper), averaged over the batch.

    Example (beta 0.1, no smoothing): ``pi_c = -1``, ``ref_c = -2`` (the chosen completion gained 1
    nat), ``pi_r = -3``, ``ref_r = -2`` (the rejected one lost 1): rewards ``+0.1`` and ``-0.1``,
    margin 0.2, loss ``-log sigma(0.2) = log(1 + e^-0.2) ≈ 0.598139``. Equal rewards give ``ln 2``.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``; the rewards are per pair and detached.
    """
    chosen_rewards = beta * (policy_chosen.float() - reference_chosen.float())
    rejected_rewards = beta * (policy_rejected.float() - reference_rejected.float())
    margin = chosen_rewards - rejected_rewards
    losses = -(1.0 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return losses.mean(), chosen_rewards.detach(), rejected_rewards.detach()
