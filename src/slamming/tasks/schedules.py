"""Learning-rate schedules as multipliers of the peak rate (for ``torch.optim.lr_scheduler.LambdaLR``)."""

from __future__ import annotations

import math
from collections.abc import Callable


def cosine_with_min_lr(warmup_steps: int, total_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup from 0 to 1 over ``warmup_steps``, then cosine from 1 down to ``min_ratio``.

    The multiplier at optimizer step ``s`` (0-based) is ``(s + 1) / warmup_steps`` during warmup and
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` after it, with
    ``p = (s - warmup_steps) / (total_steps - warmup_steps)`` clamped to [0, 1]. With
    ``min_ratio = 1`` it is warmup followed by a constant rate.

    Example: warmup 2, total 10, min_ratio 0.05: steps 0, 1 → 0.5, 1.0; step 2 → 1.0 (p = 0);
    step 6 → p = 0.5, 0.05 + 0.95 · 0.5 = 0.525; step 10 → 0.05.
    """
    warmup_steps = max(int(warmup_steps), 0)
    decay_steps = max(int(total_steps) - warmup_steps, 1)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier
