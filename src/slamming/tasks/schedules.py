"""Learning-rate schedules as multipliers of the peak rate (for ``torch.optim.lr_scheduler.LambdaLR``)."""

from __future__ import annotations

import math


class WarmupCosine:
    """Linear warmup from 0 to 1, then cosine from 1 down to ``min_ratio``; resizable.

    The multiplier at optimizer step ``s`` (0-based) is ``(s + 1) / W`` during warmup and
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` after it, with
    ``p = (s - W) / (T - W)`` clamped to [0, 1], where ``T = total_steps`` and
    ``W = ceil(warmup_ratio * T)``. With ``min_ratio = 1`` it is warmup followed by a constant rate.

    Example: warmup_ratio 0.2, total 10 (so W = 2), min_ratio 0.05: steps 0, 1 → 0.5, 1.0; step 2 →
    1.0 (p = 0); step 6 → p = 0.5, 0.05 + 0.95 · 0.5 = 0.525; step 10 → 0.05.

    It is a callable object (not a closure) so that ``LambdaLR.state_dict`` saves its fields and a
    resumed run continues on the same curve, including a horizon set by :meth:`resize`.
    """

    def __init__(self, warmup_ratio: float, total_steps: int, min_ratio: float) -> None:
        self.warmup_ratio = float(warmup_ratio)
        self.min_ratio = float(min_ratio)
        self.total_steps = 1
        self.warmup_steps = 0
        self.resize(total_steps)

    def resize(self, total_steps: int) -> None:
        """Set the horizon (used when a compute budget decides how many steps fit)."""
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(math.ceil(self.warmup_ratio * self.total_steps))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / decay, 0.0), 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class InverseSqrt:
    """Linear warmup over ``W`` steps, then decay with the inverse square root of the step.

    The multiplier at optimizer step ``s`` (0-based) is ``(s + 1) / W`` during warmup and
    ``sqrt(W / (s + 1))`` after it (``W = max(warmup_steps, 1)``), so the two pieces meet at 1 when
    ``s + 1 = W`` and the rate halves every time the step count quadruples — the schedule of the
    paper's DPO stage and of its early pretraining investigations.

    Example: warmup 4: steps 0..3 → 0.25, 0.5, 0.75, 1.0; step 15 → sqrt(4 / 16) = 0.5; step 63 →
    0.25.

    ``resize`` exists so that a compute budget may call it like :class:`WarmupCosine`'s; the curve
    has no horizon, so it does nothing.
    """

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = max(int(warmup_steps), 1)

    def resize(self, total_steps: int) -> None:
        """No-op: the inverse square root has no end point to move."""

    def __call__(self, step: int) -> float:
        if step + 1 < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return math.sqrt(self.warmup_steps / (step + 1))
