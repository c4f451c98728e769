"""Where the learning-rate schedule should end: the first of the budget's limits, at measured rates.

:class:`~slamming.callbacks.budget.ComputeBudget` with ``size_schedule`` on asks
:func:`schedule_horizon` every few optimizer steps at which step the run will end, and moves the
end of the cosine there (``resize_schedule``), so the learning rate reaches its floor when training
stops. Three limits can end a run; the horizon is the earliest:

* ``"gpu_hours"``: the steps the remaining GPU-hours buy at this fit's measured time per step
  (seconds of this fit × devices ÷ steps of this fit);
* ``"tokens"``: the steps until ``max_tokens`` is reached at this fit's measured trained tokens per
  optimizer step (tokens of this fit, summed over ranks, ÷ steps of this fit) — as the authors'
  ``train_max_tokens`` sets the epochs so that the schedule spans a token budget;
* ``"max_steps"``: ``trainer.max_steps``.

Each estimate is the step at which the budget's own check would stop the run (the first step whose
consumption reaches the limit), so at constant rates the cosine ends exactly on the stop step.

Example: at step 100, after 100 steps of 2 s on 1 device with 0.5 GPU-hours left, 900 more steps
fit (step 1000); with 8,000 tokens trained and 40,000 left, 80 tokens per step give 500 more steps
(step 600); ``max_steps`` 2000. The schedule ends at step 600 and ``"tokens"`` binds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

#: The limits that can end a run, in the order a tie is attributed (the budget checks GPU-hours first).
LIMITS = ("gpu_hours", "tokens", "max_steps")

# Rounding error of the float division (hours ÷ hours) must not add a step: 48.000000001 steps are 48.
_FLOAT_SLACK = 1e-6


class ScheduleHorizon(NamedTuple):
    """The optimizer step at which the schedule should end, and the limit that puts it there."""

    step: int
    limit: str


def schedule_horizon(
    step: int,
    steps_done: int,
    seconds: float,
    world_size: int,
    remaining_gpu_hours: float,
    tokens_done: int = 0,
    tokens_left: int | None = None,
    max_steps: int | None = None,
) -> ScheduleHorizon | None:
    """The earliest step at which one of the run's limits ends it, at the rates measured so far.

    Args:
        step: The current optimizer step (``trainer.global_step``).
        steps_done: Optimizer steps of this fit (since ``on_train_start``); the rates' denominator.
        seconds: Budgeted seconds of this fit (wall time less excluded validation).
        world_size: Devices of the run (GPU-hours = seconds × devices / 3600).
        remaining_gpu_hours: GPU-hours the run may still use.
        tokens_done: Trained target tokens of this fit, summed over ranks.
        tokens_left: Tokens until ``max_tokens`` (≤ 0 when reached), or ``None`` without a token budget.
        max_steps: ``trainer.max_steps``; ``None`` or a value ≤ 0 means no step limit.

    Returns:
        ``(step, limit)`` with ``limit`` one of :data:`LIMITS` and ``step`` at least the current step
        (a budget spent now ends the schedule now: the run stops on this step), or ``None`` when no
        limit gives a finite estimate yet (no time measured, no tokens seen, no ``max_steps``).

    Raises:
        ValueError: ``steps_done`` < 1 (no rate can be measured from zero steps).
    """
    if steps_done < 1:
        raise ValueError(f"schedule_horizon needs at least one measured step, got steps_done={steps_done}")
    candidates: dict[str, int] = {}
    step_gpu_hours = seconds * world_size / 3600.0 / steps_done
    steps_left = max(remaining_gpu_hours, 0.0) / step_gpu_hours if step_gpu_hours > 0 else math.inf
    if math.isfinite(steps_left):  # not with a frozen clock or an infinite budget (max_gpu_hours: .inf)
        candidates["gpu_hours"] = step + math.ceil(steps_left - _FLOAT_SLACK)
    if tokens_left is not None and tokens_done > 0:
        # Integer ceiling of tokens_left / (tokens_done / steps_done): exact, no float rounding.
        candidates["tokens"] = step + max(-(-tokens_left * steps_done // tokens_done), 0)
    if max_steps is not None and max_steps > 0:
        candidates["max_steps"] = max_steps
    if not candidates:
        return None
    limit = min(candidates, key=lambda name: (candidates[name], LIMITS.index(name)))
    return ScheduleHorizon(max(candidates[limit], step), limit)


def _count(value: float) -> str:
    """1_400_000_000 → ``1.4B``; 2_500_000 → ``2.5M``; 12_000 → ``12k``; smaller numbers in full."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def describe_horizon(
    horizon: ScheduleHorizon,
    steps_done: int,
    seconds: float,
    world_size: int,
    remaining_gpu_hours: float,
    tokens_done: int = 0,
    max_tokens: int | None = None,
) -> str:
    """One line saying where the schedule ends and which limit put it there.

    Example: ``learning-rate schedule sized to end at step 10681 (tokens: 1.4B at 131,072
    tokens/step)``. The arguments are those of :func:`schedule_horizon`, and the token budget.
    """
    if horizon.limit == "tokens" and max_tokens is not None:
        rate = f"{tokens_done / steps_done:,.0f} tokens/step"
        why = f"tokens: {_count(max_tokens)} at {rate}"
    elif horizon.limit == "gpu_hours":
        per_step = f"{seconds / steps_done:.3g} s/step × {world_size} device(s)"
        why = f"GPU-hours: {remaining_gpu_hours:.4g} left at {per_step}"
    else:
        why = f"trainer.max_steps: {horizon.step}"
    return f"learning-rate schedule sized to end at step {horizon.step} ({why})"
