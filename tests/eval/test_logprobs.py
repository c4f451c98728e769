"""Per-sequence log-probabilities against the numbers derived by hand in their docstring."""

from __future__ import annotations

import math

import torch

from slamming.eval.logprobs import sequence_logprobs
from slamming.vocab import IGNORE_INDEX


def test_sequence_logprobs_hand_example() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    logps, counts = sequence_logprobs(logits, torch.tensor([[0, 1]]))
    assert abs(float(logps[0]) + 3 * math.log(2.0)) < 1e-6 and int(counts[0]) == 2
    logps, counts = sequence_logprobs(logits, torch.tensor([[IGNORE_INDEX, 1]]))
    assert abs(float(logps[0]) + 2 * math.log(2.0)) < 1e-6 and int(counts[0]) == 1
