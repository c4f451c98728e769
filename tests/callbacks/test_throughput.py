"""Throughput: logged metrics in a real TensorBoard file, the summary line, and the data-wait fraction.

Timed tests run on a :class:`FakeClock` that only the model's step and the loader's item "sleeps"
move, so rates, step times and wait fractions are exact values on any machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import slamming.callbacks.budget
import slamming.callbacks.throughput
from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.throughput import Throughput
from slamming.models.flops import measure_cpu_peak_flops

from .ddp_budget_script import FakeClock, TinyRegression, make_loader


def tokens_of_first(n_samples: int) -> int:
    """Tokens of the first samples of the unshuffled loader, from the dataset's definition."""
    return sum(i % 5 + 1 for i in range(n_samples))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One fake clock for the throughput and budget callbacks and the tiny model's sleeps."""
    return FakeClock.install(monkeypatch, slamming.callbacks.throughput, slamming.callbacks.budget)


def fit(tmp_path: Path, callbacks: list, model: TinyRegression, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp_path),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    trainer = pl.Trainer(callbacks=callbacks, **options)
    trainer.fit(model, make_loader(40), make_loader(8))
    return trainer


def test_metrics_reach_tensorboard_and_the_summary_is_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture, clock: FakeClock
) -> None:
    step_s = 1 / 8  # every optimizer step takes exactly this on the fake clock; nothing else takes time
    throughput = Throughput(log_every_n_steps=3)  # peak measured on this CPU
    budget = ComputeBudget(max_gpu_hours=1.0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss")
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    model = TinyRegression(step_sleep=step_s, flops_per_token=100.0)
    trainer = fit(tmp_path, [throughput, budget, checkpoint], model, max_epochs=2, logger=logger)
    assert trainer.global_step == 20  # 10 batches of 4 per epoch

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"perf/tokens_per_sec", "perf/mfu", "perf/data_wait_frac", "perf/tokens_seen"}
    expected |= {"perf/samples_per_sec", "perf/step_time"}
    assert expected <= tags
    seen = events.Scalars("perf/tokens_seen")
    # Every 3 optimizer steps, plus the final partial window at step 20.
    assert [event.step for event in seen] == [3, 6, 9, 12, 15, 18, 20]
    assert seen[-1].value == 2 * tokens_of_first(40)
    assert seen[0].value == tokens_of_first(12)  # 3 steps of 4 samples
    peak = throughput.summary["peak_flops"]
    assert peak is not None and peak == measure_cpu_peak_flops()
    # Each window's rates, from the dataset's token counts and the fake step time. Step s (1-based)
    # trains samples 4 (s - 1) % 40 ... + 3 of the 40-sample epoch.
    window_steps = {3: 3, 6: 3, 9: 3, 12: 3, 15: 3, 18: 3, 20: 2}
    window_tokens = {
        end: sum((4 * ((s - 1) % 10) + j) % 5 + 1 for s in range(end - n + 1, end + 1) for j in range(4))
        for end, n in window_steps.items()
    }
    assert sum(window_tokens.values()) == 2 * tokens_of_first(40)
    tps = events.Scalars("perf/tokens_per_sec")
    assert [e.step for e in tps] == list(window_steps)
    for event in tps:
        expected = window_tokens[event.step] / (window_steps[event.step] * step_s)
        assert event.value == pytest.approx(expected, rel=1e-6), event.step
    for event in events.Scalars("perf/samples_per_sec"):
        assert event.value == pytest.approx(4 / step_s, rel=1e-6), event.step
    assert [e.value for e in events.Scalars("perf/step_time")] == [step_s] * len(window_steps)
    assert [e.value for e in events.Scalars("perf/data_wait_frac")] == [0.0] * len(window_steps)
    for mfu, tps_event in zip(events.Scalars("perf/mfu"), tps, strict=True):
        assert mfu.step == tps_event.step
        expected = 100.0 * window_tokens[mfu.step] / (window_steps[mfu.step] * step_s) / peak
        assert mfu.value == pytest.approx(expected, rel=1e-5)

    summary = throughput.summary
    train_s = 20 * step_s  # validation and the epoch boundary take no time on the fake clock
    assert summary["tokens"] == 2 * tokens_of_first(40) and summary["samples"] == 80
    assert summary["wall_s"] == summary["train_s"] == train_s and summary["validation_s"] == 0.0
    assert summary["tokens_per_sec"] == summary["tokens"] / train_s
    assert summary["samples_per_sec"] == 80 / train_s and summary["data_wait_frac"] == 0.0
    assert summary["mfu"] == pytest.approx(100.0 * summary["tokens"] / train_s / peak, rel=1e-12)
    assert summary["best_score"] == pytest.approx(float(checkpoint.best_model_score))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("slamming fit done: ")]
    assert len(lines) == 1
    line = lines[0]
    tokens = 2 * tokens_of_first(40)
    assert line.startswith(
        f"slamming fit done: tokens={tokens}, wall=2.5s, tokens/s={tokens / train_s:.1f}, "
    )
    assert f"mfu={100 * summary['mfu']:.2f}%" in line
    # The budget ran on the same clock: 2.5 s of training = 0.000694 GPU-hours.
    assert budget.consumed_gpu_hours == pytest.approx(train_s / 3600, rel=1e-12)
    assert "budget used=0.0007 GPU-h (0.1 % of 1.0000)" in line
    assert f"best val/loss={float(checkpoint.best_model_score):.4f}" in line
    assert line.endswith(f"checkpoint={checkpoint.best_model_path}")


def test_without_flops_budget_or_checkpoint_nothing_is_faked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    throughput = Throughput(log_every_n_steps=4)
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    fit(tmp_path, [throughput], TinyRegression(), max_steps=8, logger=logger, enable_checkpointing=False)

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert "perf/tokens_per_sec" in tags and "perf/mfu" not in tags
    assert events.Scalars("perf/tokens_seen")[-1].value == tokens_of_first(32)  # 8 steps of 4 samples
    assert throughput.summary["mfu"] is None and throughput.summary["checkpoint"] is None
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert ", mfu=n/a, budget used=n/a, best val/loss=n/a, checkpoint=n/a" in line


def test_slow_loader_raises_the_data_wait_fraction(tmp_path: Path, clock: FakeClock) -> None:
    step_s, item_s = 1 / 32, 1 / 32  # on the fake clock: a step, and loading one sample (4 per batch)

    def wait_fraction(item_sleep: float, folder: str) -> float:
        throughput = Throughput(log_every_n_steps=100, print_summary=False)
        loader = make_loader(48, item_sleep=item_sleep)
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=12,
            default_root_dir=str(tmp_path / folder),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[throughput],
        )
        trainer.fit(TinyRegression(step_sleep=step_s), loader)
        summary = throughput.summary
        assert summary["train_s"] == 12 * (4 * item_sleep + step_s)  # 12 batches: load + step each
        return summary["data_wait_frac"]

    # The slow loader takes 4 × 1/32 s per batch against a 1/32 s step: 80 % of the time is waiting;
    # the instant one never makes the steps wait.
    fast, slow = wait_fraction(0.0, "fast"), wait_fraction(item_s, "slow")
    assert fast == 0.0
    assert slow == pytest.approx(4 * item_s / (4 * item_s + step_s), rel=1e-12)
    assert slow == pytest.approx(0.8, rel=1e-12)
