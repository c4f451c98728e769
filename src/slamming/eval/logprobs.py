"""Per-sequence log-probabilities of a causal LM's targets: what pair scoring and DPO both need.

The docstring's example is checked by ``tests/eval/test_logprobs.py``.
"""

from __future__ import annotations

import torch

from slamming.vocab import IGNORE_INDEX


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's real targets, in fp32.

    ``labels`` are aligned with ``logits`` (``labels[b, t]`` is the target of position ``t``) and
    hold ``IGNORE_INDEX`` wherever a position does not count (the prompt, padding): for DPO only the
    completion's tokens are scored, as the authors' TRL-based trainer does.

    Example: one sequence over a 2-id vocabulary, logits ``[[0, 0], [ln 3, 0]]``, labels ``[0, 1]``:
    log p = ln(1/2) + ln(1/4) = -3 ln 2 ≈ -2.0794, with 2 targets; with the first label ignored,
    -2 ln 2 ≈ -1.3863 and 1 target.

    Returns:
        ``(logps, counts)``, each of shape ``(B,)``.
    """
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(dim=-1), mask.sum(dim=-1)
