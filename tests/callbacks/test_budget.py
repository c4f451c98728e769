"""ComputeBudget: stops on time and on tokens, survives resume, and stops all DDP ranks together.

The time tests run on a :class:`FakeClock` that only the model's step and validation "sleeps" move,
so the step at which the budget stops and the consumption it records are exact, on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import slamming.callbacks.budget
from slamming.callbacks.budget import STOP_CHECKPOINT_NAME, ComputeBudget
from slamming.errors import SlammingError
from slamming.models.checkpoint import TRUST_ENV

from .ddp_budget_script import RANK_STEP_SECONDS, FakeClock, TinyRegression, make_loader

HOUR = 3600.0
STEP_S = 1 / 16  # seconds per training step on the fake clock
VAL_S = 1 / 8  # seconds per validation batch (2 per validation, every 20 steps): excluded
VAL_EVERY = 20


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake clock the budget (and the tiny model's sleeps) read in this test."""
    return FakeClock.install(monkeypatch, slamming.callbacks.budget)


def steps_to_spend(seconds: float, step_s: float = STEP_S) -> int:
    """Optimizer steps of ``step_s`` seconds after which ``seconds`` are spent (the first check at or past)."""
    n = 1
    while n * step_s < seconds:
        n += 1
    return n


class Probe(Callback):
    """Records wall time, validation time and step durations on the same clock as the budget."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.start = 0.0
        self.val_s = 0.0
        self.val_start = 0.0
        self.last_end = 0.0
        self.step_durations: list[float] = []
        self.wall_at_last_step = 0.0
        self.val_s_at_last_step = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self.last_end = self.clock.monotonic()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_start = self.clock.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_s += self.clock.monotonic() - self.val_start

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        now = self.clock.monotonic()
        self.step_durations.append(now - self.last_end)
        self.last_end = now
        self.wall_at_last_step = now - self.start
        self.val_s_at_last_step = self.val_s


def make_trainer(root: Path, callbacks: list[Callback], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=100_000,
        default_root_dir=str(root),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def run_timed_fit(
    root: Path, budget_s: float, checkpoint: ModelCheckpoint, clock: FakeClock, ckpt_path: str | None = None
) -> tuple:
    """Fit with STEP_S steps and 2 × VAL_S validations every 20 steps under a budget of `budget_s` seconds."""
    budget = ComputeBudget(max_gpu_hours=budget_s / HOUR)
    probe = Probe(clock)
    model = TinyRegression(step_sleep=STEP_S, val_sleep=VAL_S)
    trainer = make_trainer(
        root, [budget, probe, checkpoint], val_check_interval=VAL_EVERY, limit_val_batches=2
    )
    trainer.fit(model, make_loader(2000), make_loader(8), ckpt_path=ckpt_path)
    return trainer, budget, probe, model


def test_time_budget_stops_validates_and_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd, clock: FakeClock
) -> None:
    budget_s = 3.01  # 48 steps of 1/16 s are 3.0 s: not yet spent; the 49th crosses it
    expected_stop = steps_to_spend(budget_s)
    assert expected_stop == 49
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer, budget, probe, model = run_timed_fit(tmp_path, budget_s, checkpoint, clock)

    # Stopped by the budget at the first check past the threshold, long before max_steps.
    assert budget.stopped_by == "gpu_hours"
    assert budget.stop_step == trainer.global_step == expected_stop
    # The consumption is the training steps' time alone: the validations at steps 20 and 40
    # (2 × 1/8 s each) are excluded.
    spent_s = expected_stop * STEP_S
    assert budget.stop_gpu_hours == pytest.approx(spent_s / HOUR, rel=1e-12)
    assert probe.step_durations[0] == STEP_S and max(probe.step_durations) == STEP_S + 2 * VAL_S
    assert probe.val_s_at_last_step == 2 * 2 * VAL_S
    assert probe.wall_at_last_step == spent_s + probe.val_s_at_last_step
    # Lightning 2.6.6 validates at the stop step, and the epoch-triggered ModelCheckpoint saves there.
    assert model.validated_at_steps == [20, 40, expected_stop]
    assert budget.stop_checkpoint_path is None  # no extra save was needed
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == budget.stop_step
    consumed = ComputeBudget.read_consumed(tmp_path / "ckpt" / "last.ckpt")
    assert consumed["stopped_by"] == "gpu_hours" and consumed["stop_step"] == budget.stop_step
    assert consumed["gpu_hours"] == pytest.approx(spent_s / HOUR, rel=1e-12)  # the stop validation excluded
    assert consumed["tokens"] == budget.stop_tokens == sum(i % 5 + 1 for i in range(4 * expected_stop))
    assert trainer.callback_metrics["budget/fraction"] == pytest.approx(spent_s / budget_s, rel=1e-6)
    logged = caplog.text + capfd.readouterr().err
    expected_message = (
        f"Compute budget reached: {spent_s / HOUR:.4f} of 0.0008 GPU-hours (this run {spent_s:.1f} s × 1 "
        f"device(s) + 0.0000 GPU-hours before; validation excluded) at step {expected_stop}"
    )
    assert budget.stop_message == expected_message
    assert expected_message in logged


@pytest.mark.parametrize("every", [7, 13])
def test_resume_continues_the_consumed_budget(tmp_path: Path, clock: FakeClock, every: int) -> None:
    first_s, total_s = 2.01, 4.01
    first_steps = steps_to_spend(first_s)  # 33 steps: 2.0625 s
    _, first, _, _ = run_timed_fit(
        tmp_path / "a", first_s, ModelCheckpoint(dirpath=tmp_path / "a", save_last=True), clock
    )
    assert first.stop_step == first_steps == 33
    first_ckpt = tmp_path / "a" / "last.ckpt"
    first_consumed = ComputeBudget.read_consumed(first_ckpt)["gpu_hours"] * HOUR
    assert first_consumed == pytest.approx(first_steps * STEP_S, rel=1e-12)

    # The resumed run may only spend what the first left: 1.9475 s buys 32 more steps (2.0 s).
    resumed_steps = steps_to_spend(total_s - first_steps * STEP_S)
    assert resumed_steps == 32
    expected_stop = first_steps + resumed_steps  # the step count continues from the checkpoint
    # Step-triggered checkpoints do not save at the stop in Lightning 2.6.6; the budget saves then.
    # every=7: the stop (65) is not a multiple, the budget saves; every=13: ModelCheckpoint saved it.
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=every, save_last=True)
    trainer, budget, probe, _ = run_timed_fit(
        tmp_path / "b", total_s, checkpoint, clock, ckpt_path=str(first_ckpt)
    )

    assert budget.stopped_by == "gpu_hours"
    assert budget.stop_step == trainer.global_step == expected_stop == 65
    if every == 7:
        assert budget.stop_checkpoint_path == str(tmp_path / "b" / STOP_CHECKPOINT_NAME)
        final = budget.stop_checkpoint_path
        stale = torch.load(tmp_path / "b" / "last.ckpt", map_location="cpu", weights_only=False)
        assert stale["global_step"] == 63  # what ModelCheckpoint alone would have left
    else:
        assert budget.stop_checkpoint_path is None
        assert not (tmp_path / "b" / STOP_CHECKPOINT_NAME).exists()
        final = str(tmp_path / "b" / "last.ckpt")
    assert torch.load(final, map_location="cpu", weights_only=False)["global_step"] == budget.stop_step
    consumed = ComputeBudget.read_consumed(final)["gpu_hours"] * HOUR
    # The total, not a fresh budget: the resumed run only used what the first one had left.
    assert consumed == pytest.approx(expected_stop * STEP_S, rel=1e-12)
    assert total_s <= consumed < total_s + STEP_S
    resumed_own = probe.wall_at_last_step - probe.val_s_at_last_step
    assert resumed_own == resumed_steps * STEP_S == consumed - first_consumed


@pytest.mark.parametrize("accumulate, check_every", [(1, 1), (2, 3)])
def test_token_budget_stops_at_the_right_step(tmp_path: Path, accumulate: int, check_every: int) -> None:
    # Sample i carries i % 5 + 1 tokens, in order (no shuffling), 4 samples per micro-batch.
    max_tokens = 100
    per_sample = torch.arange(400) % 5 + 1
    per_step = per_sample.reshape(-1, 4 * accumulate).sum(dim=1)
    cumulative = per_step.cumsum(0)
    steps = torch.arange(1, len(per_step) + 1)
    eligible = (cumulative >= max_tokens) & (steps % check_every == 0)
    expected_step = int(steps[eligible][0])

    budget = ComputeBudget(max_gpu_hours=1.0, max_tokens=max_tokens, check_every_n_steps=check_every)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(
        tmp_path, [budget, checkpoint], accumulate_grad_batches=accumulate, limit_val_batches=1
    )
    trainer.fit(TinyRegression(), make_loader(400), make_loader(4))

    assert budget.stopped_by == "tokens"
    assert trainer.global_step == budget.stop_step == expected_step
    assert budget.stop_tokens == int(cumulative[expected_step - 1])
    assert budget.stop_message.startswith(
        f"Token budget reached: {budget.stop_tokens} of {max_tokens} tokens"
    )
    consumed = ComputeBudget.read_consumed(tmp_path / "ckpt" / "last.ckpt")
    assert consumed["tokens"] == budget.stop_tokens and consumed["stopped_by"] == "tokens"


def test_two_process_ddp_stops_every_rank_on_the_same_step(tmp_path: Path) -> None:
    script = Path(__file__).with_name("ddp_budget_script.py")
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env.pop("MASTER_PORT", None)  # let Lightning pick a free port
    # A hang in a collective would block forever: the timeout turns it into a failure.
    budget_s = 3.01
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(budget_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"]
    assert ranks[0]["stopped_by"] == ranks[1]["stopped_by"] == "gpu_hours"
    # Each rank runs on its own fake clock; rank 0's (1/32 s per step) decides: 97 steps, where rank
    # 1's clock (3/32 s per step) would have stopped at 33.
    expected_stop = steps_to_spend(budget_s, RANK_STEP_SECONDS[0])
    assert expected_stop == 97 and steps_to_spend(budget_s, RANK_STEP_SECONDS[1]) == 33
    assert ranks[0]["stop_step"] == ranks[1]["stop_step"] == ranks[0]["global_step"] == expected_stop
    assert ranks[0]["validated_at_steps"][-1] == ranks[1]["validated_at_steps"][-1] == ranks[0]["stop_step"]
    # Both callbacks sum tokens over ranks: every rank knows the total its peers trained.
    expected_tokens = ranks[0]["tokens_trained"] + ranks[1]["tokens_trained"]
    assert ranks[0]["tokens_trained"] > 0 and ranks[1]["tokens_trained"] > 0
    for rank in ranks:
        assert rank["throughput_tokens"] == rank["budget_tokens"] == expected_tokens
    assert result.stdout.count("slamming fit done: ") == 1  # rank 0 only
    consumed = ComputeBudget.read_consumed(ranks[0]["checkpoint"])
    assert consumed["world_size"] == 2
    # Rank 0's seconds × 2 devices, as saved at the stop (validation takes no time on the clock).
    assert consumed["gpu_hours"] == pytest.approx(expected_stop * RANK_STEP_SECONDS[0] * 2 / HOUR, rel=1e-12)
    assert ranks[0]["consumed_gpu_hours"] == pytest.approx(consumed["gpu_hours"], rel=1e-12)


def test_missing_num_tokens_with_a_token_budget_is_an_error(tmp_path: Path) -> None:
    class NoTokens(TinyRegression):
        def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
            return super().training_step(batch, batch_idx)["loss"]

    budget = ComputeBudget(max_tokens=10)
    trainer = make_trainer(tmp_path, [budget], max_steps=3, enable_checkpointing=False)
    with pytest.raises(SlammingError, match="num_tokens"):
        trainer.fit(NoTokens(), make_loader(16))


class WithPathHparam(TinyRegression):
    """Saves a Path among its hyperparameters, which torch's weights_only unpickler rejects."""

    def __init__(self, data_dir: Path = Path("data")) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_read_consumed_refuses_arbitrary_hparams_unless_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pickle that needs a class (here a Path) could as well run code: refused, then read once trusted."""
    trainer = make_trainer(
        tmp_path, [ComputeBudget(max_gpu_hours=1.0)], max_steps=3, enable_checkpointing=False
    )
    trainer.fit(WithPathHparam(tmp_path), make_loader(16))
    trainer.save_checkpoint(tmp_path / "with_path.ckpt")
    with pytest.raises(SlammingError, match=r"would unpickle pathlib\.PosixPath.*--trust-checkpoint"):
        ComputeBudget.read_consumed(tmp_path / "with_path.ckpt")
    monkeypatch.setenv(TRUST_ENV, "1")
    consumed = ComputeBudget.read_consumed(tmp_path / "with_path.ckpt")
    assert consumed["tokens"] == sum(i % 5 + 1 for i in range(12)) and consumed["gpu_hours"] > 0
    assert consumed["stopped_by"] is None


def test_read_consumed_rejects_missing_and_foreign_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match="no such checkpoint"):
        ComputeBudget.read_consumed(tmp_path / "missing.ckpt")
    trainer = make_trainer(tmp_path, [], max_steps=2, enable_checkpointing=False)
    trainer.fit(TinyRegression(), make_loader(8))
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(SlammingError, match="no ComputeBudget state"):
        ComputeBudget.read_consumed(tmp_path / "plain.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(SlammingError, match="not a readable"):
        ComputeBudget.read_consumed(tmp_path / "junk.ckpt")


@pytest.mark.parametrize("kwargs", [dict(max_gpu_hours=0), dict(max_tokens=0), dict(check_every_n_steps=0)])
def test_invalid_arguments_are_rejected(kwargs: dict) -> None:
    with pytest.raises(SlammingError):
        ComputeBudget(**kwargs)


def test_helpers_report_consumption_outside_a_fit() -> None:
    budget = ComputeBudget(max_gpu_hours=2.0)
    budget.load_state_dict({"gpu_hours": 0.5, "tokens": 1234})
    assert budget.consumed_gpu_hours == 0.5 and budget.consumed_tokens == 1234
    assert budget.remaining_gpu_hours() == 1.5 and budget.fraction_used == 0.25
    assert budget.state_dict()["gpu_hours"] == 0.5


def test_validation_time_block_is_excluded_from_the_budget(clock: FakeClock) -> None:
    budget = ComputeBudget(max_gpu_hours=1.0)
    budget._run_start = clock.monotonic()
    clock.advance(0.25)
    with budget.validation_time():
        clock.advance(0.5)
    assert budget._run_seconds() == 0.25  # the 0.5 s inside the block did not count
    counted = ComputeBudget(max_gpu_hours=1.0, exclude_validation=False)
    counted._run_start = clock.monotonic()
    clock.advance(0.25)
    with counted.validation_time():
        clock.advance(0.5)
    assert counted._run_seconds() == 0.75
