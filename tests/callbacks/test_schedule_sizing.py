"""Schedules that end with the budget (issue 11): the horizon arithmetic, and real pretraining fits.

The unit tests check :func:`schedule_horizon` with hand-computed values. The fits train a tiny
:class:`~slamming.tasks.NextUnitPretraining` through the CLI and check that the cosine reaches its
floor on the step where the binding limit (GPU-hours, or ``max_tokens``) stops the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import slamming.callbacks.budget
from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.schedule_sizing import ScheduleHorizon, describe_horizon, schedule_horizon
from slamming.cli.lightning import run_lightning
from slamming.data import UnitDataModule
from slamming.vocab import IGNORE_INDEX
from tests.callbacks.ddp_budget_script import FakeClock
from tests.conftest import fit_config

HOUR = 3600.0
PEAK, FLOOR = 3e-3, 3e-4  # fit_config's lr and min_lr
CONTEXT, BATCH = 64, 4  # fit_config's windows: 4 × 64 = 256 inputs per optimizer step


# ------------------------------------------------------------------------------------ the arithmetic


def test_each_limit_can_bind() -> None:
    # The module docstring's example: 100 steps of 2 s on one device, 0.5 GPU-hours left → 900 more
    # steps (step 1000); 8,000 tokens in 100 steps, 40,000 left → 500 more steps (step 600).
    rates = dict(step=100, steps_done=100, seconds=200.0, world_size=1, remaining_gpu_hours=0.5)
    assert schedule_horizon(**rates, max_steps=2000) == ScheduleHorizon(1000, "gpu_hours")
    tokens = dict(tokens_done=8_000, tokens_left=40_000)
    assert schedule_horizon(**rates, **tokens, max_steps=2000) == (600, "tokens")
    assert schedule_horizon(**rates, **tokens, max_steps=550) == (550, "max_steps")
    # Two devices spend GPU-hours twice as fast: 450 more steps.
    assert schedule_horizon(**{**rates, "world_size": 2}) == (550, "gpu_hours")
    # A GPU-hour budget too large to matter: the tokens alone size the schedule.
    paper = dict(tokens_done=13_107_200, tokens_left=1_386_892_800)  # 131,072 per step, 1.4B in all
    assert schedule_horizon(**{**rates, "remaining_gpu_hours": 1e9}, **paper) == (10_682, "tokens")
    assert schedule_horizon(**{**rates, "remaining_gpu_hours": float("inf")}, **paper) == (10_682, "tokens")


def test_estimates_round_up_to_the_step_where_the_budget_check_stops() -> None:
    # 10 tokens in 3 steps: 10 tokens left need 3 steps, 11 need 4 (the stop is the first step at or past).
    assert schedule_horizon(5, 3, 1.0, 1, 1e9, tokens_done=10, tokens_left=10).step == 8
    assert schedule_horizon(5, 3, 1.0, 1, 1e9, tokens_done=10, tokens_left=11).step == 9
    # 1.1 s left at 0.1 s per step is 11.000000000000002 in floats; the budget stops after 11 steps.
    assert schedule_horizon(1, 1, 0.1, 1, 1.1 / HOUR) == (12, "gpu_hours")
    assert schedule_horizon(1, 1, 0.1, 1, 1.15 / HOUR) == (13, "gpu_hours")


def test_ties_spent_budgets_and_missing_rates() -> None:
    # A tie is attributed as the budget's check would report it: GPU-hours, then tokens, then max_steps.
    assert schedule_horizon(0, 10, 10.0, 1, 10 / HOUR, tokens_done=100, tokens_left=100) == (10, "gpu_hours")
    assert schedule_horizon(0, 10, 0.0, 1, 1.0, tokens_done=100, tokens_left=100, max_steps=10) == (
        10,
        "tokens",
    )
    # A budget spent on this step stops the run on it, so the schedule ends here too.
    assert schedule_horizon(7, 7, 7.0, 1, 0.0) == (7, "gpu_hours")
    assert schedule_horizon(7, 7, 0.0, 1, 1.0, tokens_done=70, tokens_left=-5) == (7, "tokens")
    # No time measured (a frozen clock), no tokens returned and no max_steps: nothing to size to.
    assert schedule_horizon(7, 7, 0.0, 1, 1.0, tokens_done=0, tokens_left=100, max_steps=-1) is None
    assert schedule_horizon(7, 7, 0.0, 1, 1.0, max_steps=40) == (40, "max_steps")
    with pytest.raises(ValueError, match="steps_done=0"):
        schedule_horizon(7, 0, 1.0, 1, 1.0)


def test_the_line_names_the_binding_limit() -> None:
    rates = (100, 480.0, 1, 10.0, 13_107_200)  # steps_done, seconds, devices, GPU-hours left, tokens
    tokens = describe_horizon(ScheduleHorizon(10_682, "tokens"), *rates, max_tokens=1_400_000_000)
    assert tokens == "learning-rate schedule sized to end at step 10682 (tokens: 1.4B at 131,072 tokens/step)"
    hours = describe_horizon(ScheduleHorizon(7600, "gpu_hours"), *rates)
    assert (
        hours
        == "learning-rate schedule sized to end at step 7600 (GPU-hours: 10 left at 4.8 s/step × 1 device(s))"
    )
    steps = describe_horizon(ScheduleHorizon(17_625, "max_steps"), *rates)
    assert steps == "learning-rate schedule sized to end at step 17625 (trainer.max_steps: 17625)"


# -------------------------------------------------------------------------------------- real fits


def sized_fit(
    tmp_path: Path, unit_corpora: dict[str, Path], budget: dict[str, Any], callbacks: list
) -> tuple:
    """A tiny CLI pretraining fit (up to 1,000 steps, no validation during training) under ``budget``.

    Returns the budget callback, the learning rates of the optimizer steps (TensorBoard ``train/lr``,
    logged by the module at every step, in step order) and the optimizer's rate after the last step.
    """
    sizing = {"size_schedule": True, "measure_steps": 3, "resize_every_n_steps": 2}
    trainer = {
        "max_steps": 1000,
        "val_check_interval": 100_000,
        "limit_val_batches": 2,
        "callbacks": callbacks,
    }
    model = {"init_args": {"export": False}}
    cfg = fit_config(tmp_path, unit_corpora, trainer=trainer, model=model, budget={**sizing, **budget})
    cli = run_lightning(["fit", "--config", str(cfg)])
    events = EventAccumulator(str(tmp_path / "runs" / "t" / "version_0"))
    events.Reload()
    lrs = [event.value for event in sorted(events.Scalars("train/lr"), key=lambda e: e.step)]
    budget_cb = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ComputeBudget))
    return budget_cb, lrs, cli.trainer.optimizers[0].param_groups[0]["lr"]


def assert_cosine_ended_at_the_stop(
    budget: ComputeBudget, lrs: list[float], after: float, slack: int
) -> None:
    """The schedule ended within ``slack`` steps after the stop, and the rate is at its floor there.

    ``lrs[-1]`` is the rate the last optimizer step used: step ``N - 1`` of a cosine ending at step
    ``H`` (``N`` = the stop step) with ``W = ceil(0.1 H)`` warmup steps. With ``H ∈ [N, N + slack]``
    its distance to the floor is ``(1 - cos(π (slack + 1) / (H - W))) / 2`` of the peak-to-floor range:
    0.19 % for ``slack`` 0 and 0.76 % for ``slack`` 1 at ``H ≈ 40``; 2 % bounds both. Had the cosine kept
    spanning ``max_steps`` (1,000), the rate would still be near the peak.
    """
    assert len(lrs) == budget.stop_step
    assert max(lrs) > 0.9 * PEAK  # it warmed up to the peak first
    assert budget.stop_step <= budget.schedule_horizon <= budget.stop_step + slack
    assert lrs[-1] - FLOOR < 0.02 * (PEAK - FLOOR)
    if budget.schedule_horizon == budget.stop_step:
        assert after == pytest.approx(FLOOR, rel=1e-9)  # the rate after the stop step: the floor itself


def test_cosine_reaches_the_floor_when_the_gpu_hours_run_out(
    tmp_path: Path, unit_corpora: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The budget reads a fake clock that moves 1/16 s per training step and nothing else, so on a
    # loaded machine the measured step time is still exactly 1/16 s: 40.5 steps' worth of GPU-hours
    # stop the run on step 41, and every estimate (first at step 3) says step 41.
    FakeClock.install(monkeypatch, slamming.callbacks.budget)
    step_clock = {
        "class_path": "tests.callbacks.ddp_budget_script.StepClock",
        "init_args": {"seconds": 1 / 16},
    }
    budget, lrs, after = sized_fit(tmp_path, unit_corpora, {"max_gpu_hours": 40.5 / 16 / HOUR}, [step_clock])
    assert budget.stopped_by == "gpu_hours" and budget.stop_step == 41
    assert (budget.schedule_horizon, budget.schedule_limit) == (41, "gpu_hours")
    assert_cosine_ended_at_the_stop(budget, lrs, after, slack=0)


def test_cosine_reaches_the_floor_when_the_tokens_run_out(
    tmp_path: Path, unit_corpora: dict[str, Path]
) -> None:
    # Real time, and GPU-hours too many to matter: max_tokens alone ends the run and sizes the cosine.
    max_tokens = 8_000
    budget, lrs, after = sized_fit(
        tmp_path, unit_corpora, {"max_gpu_hours": 1e6, "max_tokens": max_tokens}, []
    )
    # The stop step from the data alone: each packed 4 × 64 window batch trains 256 targets less one per
    # document boundary inside a window, in the order the data module serves them.
    data = UnitDataModule(train=[str(unit_corpora["train"])], context_length=CONTEXT, batch_size=BATCH)
    data.setup("fit")
    trained, expected_stop = 0, 0
    for batch in data.train_dataloader():
        trained += int((batch["labels"] != IGNORE_INDEX).sum())
        expected_stop += 1
        if trained >= max_tokens:
            break
    assert budget.stopped_by == "tokens" and budget.stop_step == expected_stop
    assert budget.stop_tokens == trained
    # The estimate uses the mean tokens per step; the last one (at most 2 steps before the stop) can
    # be one step late when the final steps hold more document boundaries than the average.
    assert budget.schedule_limit == "tokens"
    assert_cosine_ended_at_the_stop(budget, lrs, after, slack=1)
