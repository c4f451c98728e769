"""Preference-pair forwards for DPO: chosen and rejected completions scored in one pass.

Running the two sides as one batch halves the kernel launches and keeps one set of activations per
step (torchtune's DPO recipes do the same); ``tests/tasks/test_preference.py`` checks it equals two
separate forwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slamming.eval.logprobs import sequence_logprobs
from slamming.vocab import IGNORE_INDEX, PAD_ID


def _pad_to(batch: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    extra = length - batch["input_ids"].shape[1]
    if extra == 0:
        return batch
    return {
        "input_ids": F.pad(batch["input_ids"], (0, extra), value=PAD_ID),
        "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0),
        "labels": F.pad(batch["labels"], (0, extra), value=IGNORE_INDEX),
    }


def concatenated_logprobs(
    model: torch.nn.Module,
    chosen: dict[str, torch.Tensor],
    rejected: dict[str, torch.Tensor],
    with_counts: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Summed completion log-probabilities of the chosen and the rejected sequences, one forward.

    Each side is a right-padded batch: ``input_ids``, ``attention_mask`` (1 = real token) and
    ``labels`` aligned with the inputs (``labels[:, t]`` is the target of position ``t``;
    ``IGNORE_INDEX`` on the prompt and padding). The sides are padded to a common length and stacked.

    Returns:
        ``(chosen_logps, rejected_logps)``, each ``(B,)`` in fp32; with ``with_counts`` also the
        number of scored tokens of each side, ``(chosen_counts, rejected_counts)``.
    """
    length = max(chosen["input_ids"].shape[1], rejected["input_ids"].shape[1])
    a, b = _pad_to(chosen, length), _pad_to(rejected, length)
    both = {key: torch.cat([a[key], b[key]]) for key in a}
    logits = model(input_ids=both["input_ids"], attention_mask=both["attention_mask"], use_cache=False).logits
    logps, counts = sequence_logprobs(logits, both["labels"])
    n = chosen["input_ids"].shape[0]
    if with_counts:
        return logps[:n], logps[n:], counts[:n], counts[n:]
    return logps[:n], logps[n:]
