"""Learning-rate schedules as multipliers of the peak rate (for ``torch.optim.lr_scheduler.LambdaLR``).

:func:`make_schedule` builds one by name (``inverse_sqrt``, ``cosine``, ``constant``); both training
stages use it, so ``model.schedule`` means the same in pretraining and DPO.
"""

from __future__ import annotations

import math

from slamming.errors import ConfigError

#: The names ``model.schedule`` accepts.
SCHEDULES = ("inverse_sqrt", "cosine", "constant")


class WarmupCosine:
    """Linear warmup from 0 to 1, then cosine from 1 down to ``min_ratio``; resizable.

    The multiplier at optimizer step ``s`` (0-based) is ``(s + 1) / W`` during warmup and
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` after it, with
    ``p = (s - W) / (T - W)`` clamped to [0, 1], where ``T = total_steps`` and
    ``W = ceil(warmup_ratio * T)``, or ``W = warmup_steps`` when that is given (then it stays put when
    the horizon moves). With ``min_ratio = 1`` it is warmup followed by a constant rate.

    Example: warmup_ratio 0.2, total 10 (so W = 2), min_ratio 0.05: steps 0, 1 → 0.5, 1.0; step 2 →
    1.0 (p = 0); step 6 → p = 0.5, 0.05 + 0.95 · 0.5 = 0.525; step 10 → 0.05.

    It is a callable object (not a closure) so that ``LambdaLR.state_dict`` saves its fields and a
    resumed run continues on the same curve, including a horizon set by :meth:`resize`.
    """

    def __init__(
        self, warmup_ratio: float, total_steps: int, min_ratio: float, warmup_steps: int | None = None
    ) -> None:
        self.warmup_ratio = float(warmup_ratio)
        self.min_ratio = float(min_ratio)
        self.fixed_warmup = None if warmup_steps is None else max(int(warmup_steps), 0)
        self.total_steps = 1
        self.warmup_steps = 0
        self.resize(total_steps)

    def resize(self, total_steps: int) -> None:
        """Set the horizon (used when a compute budget decides how many steps fit)."""
        self.total_steps = max(int(total_steps), 1)
        if self.fixed_warmup is not None:
            self.warmup_steps = self.fixed_warmup
        else:
            self.warmup_steps = int(math.ceil(self.warmup_ratio * self.total_steps))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / decay, 0.0), 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class InverseSqrt:
    """Hugging Face's inverse-square-root schedule (``transformers.get_inverse_sqrt_schedule``).

    With ``W = warmup_steps`` and time scale ``τ`` (default ``W``, or 10,000 when ``W = 0``), the
    multiplier at ``LambdaLR`` step ``s`` (the number of scheduler steps taken so far, 0 before the
    first optimizer step) is ``s / W`` while ``s < W``, then ``1 / sqrt((s + τ - W) / τ)``. With the
    default ``τ = W`` that is ``sqrt(W / s)``: 1 at ``s = W``, halving each time ``s`` quadruples.
    This is the schedule of the paper's DPO stage as the authors ran it (slamkit's
    ``lr_scheduler_type: inverse_sqrt``, ``warmup_steps: 100``) and of its early pretraining trials.
    Note that the first optimizer step runs at rate 0, as in the Hugging Face Trainer.

    Example: W = 100, peak 5e-5. s = 0 → 0; s = 1 → 0.01 (5e-7); s = 50 → 0.5; s = 100 → 1 (5e-5);
    s = 400 → sqrt(100 / 400) = 0.5; s = 813 → sqrt(100 / 813) = 0.35071 (1.7536e-5).

    ``resize`` exists so that a compute budget may call it like :class:`WarmupCosine`'s; the curve
    has no horizon, so it does nothing.
    """

    def __init__(self, warmup_steps: int, timescale: int | None = None) -> None:
        if int(warmup_steps) < 0:
            raise ConfigError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.timescale = int(timescale) if timescale is not None else (self.warmup_steps or 10_000)

    def resize(self, total_steps: int) -> None:
        """No-op: the inverse square root has no end point to move."""

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        shift = self.timescale - self.warmup_steps
        return 1.0 / math.sqrt((step + shift) / self.timescale)


def check_schedule(
    name: str,
    setting: str = "model.schedule",
    *,
    warmup_ratio: float | None = None,
    lr: float | None = None,
    min_lr: float | None = None,
) -> None:
    """Check a stage's schedule settings when the stage is built, before any data is.

    Args:
        name: The schedule's name, one of :data:`SCHEDULES`.
        setting: The name of that setting, for the message.
        warmup_ratio: The warmup as a fraction of the run, when the stage has one.
        lr: The peak learning rate, with ``min_lr`` (checked for a cosine only).
        min_lr: The cosine's floor learning rate.

    Raises:
        ConfigError: one line naming the setting: an unknown name, a ``warmup_ratio`` outside
            [0, 1], or a cosine floor outside [0, ``lr``].
    """
    if name not in SCHEDULES:
        raise ConfigError(f"{setting} must be one of {', '.join(SCHEDULES)}; got {name!r}")
    if warmup_ratio is not None:
        _check_warmup_ratio(warmup_ratio)
    if name == "cosine" and lr is not None and min_lr is not None:
        _check_floor(min_lr / lr if lr else 0.0)


def _check_warmup_ratio(warmup_ratio: float) -> None:
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ConfigError(
            f"model.warmup_ratio is a fraction of the run and must be in [0, 1], got {warmup_ratio}"
        )


def _check_floor(min_ratio: float) -> None:
    if not 0.0 <= min_ratio <= 1.0:
        raise ConfigError(
            f"the cosine's floor model.min_lr ÷ model.lr must be in [0, 1], got {min_ratio:g}: "
            "set model.min_lr between 0 and model.lr"
        )


def make_schedule(
    name: str,
    *,
    warmup_steps: int | None = None,
    warmup_ratio: float | None = None,
    total_steps: int | None = None,
    min_ratio: float = 0.0,
) -> WarmupCosine | InverseSqrt:
    """The multiplier function of schedule ``name``, for ``LambdaLR``.

    Args:
        name: ``inverse_sqrt`` (:class:`InverseSqrt`), ``cosine`` (warmup, then cosine to
            ``min_ratio``) or ``constant`` (warmup, then flat).
        warmup_steps: Warmup length in optimizer steps; or else
        warmup_ratio: warmup as a fraction of ``total_steps`` (``ceil(warmup_ratio · total_steps)``
            steps; for ``cosine``/``constant`` it follows the horizon when that is resized).
        total_steps: The horizon: needed by ``cosine`` and by a ``warmup_ratio``.
        min_ratio: The cosine's final multiplier (the floor learning rate ÷ the peak).

    Raises:
        ConfigError: an unknown ``name``, a ``warmup_ratio`` outside [0, 1] or a cosine floor
            outside [0, 1] (``model.min_lr`` above ``model.lr``, or negative): settings a config
            gives.
        ValueError: both or neither of the warmups, or no ``total_steps`` where one is needed (how
            the stages call it, never a config's doing).
    """
    check_schedule(name)
    if (warmup_steps is None) == (warmup_ratio is None):
        raise ValueError("make_schedule takes exactly one of warmup_steps and warmup_ratio")
    if total_steps is None and (name == "cosine" or warmup_ratio is not None):
        raise ValueError(f"schedule {name!r} with these warmup settings needs total_steps")
    if warmup_ratio is not None:
        _check_warmup_ratio(warmup_ratio)
    if name == "cosine":
        _check_floor(min_ratio)
    horizon = 1 if total_steps is None else total_steps
    if name == "inverse_sqrt":
        if warmup_steps is None:
            warmup_steps = int(math.ceil(float(warmup_ratio) * max(int(horizon), 1)))
        return InverseSqrt(warmup_steps)
    floor = min_ratio if name == "cosine" else 1.0
    return WarmupCosine(warmup_ratio or 0.0, horizon, floor, warmup_steps=warmup_steps)
