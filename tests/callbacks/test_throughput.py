"""Throughput: logged metrics in a real TensorBoard file, the summary line, and the data-wait fraction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.throughput import Throughput
from slamming.models.flops import measure_cpu_peak_flops

from .ddp_budget_script import TinyRegression, make_loader


def tokens_of_first(n_samples: int) -> int:
    """Tokens of the first samples of the unshuffled loader, from the dataset's definition."""
    return sum(i % 5 + 1 for i in range(n_samples))


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
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    throughput = Throughput(log_every_n_steps=3)  # peak measured on this CPU
    budget = ComputeBudget(max_gpu_hours=1.0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss")
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    model = TinyRegression(flops_per_token=100.0)
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
    for mfu, tps in zip(events.Scalars("perf/mfu"), events.Scalars("perf/tokens_per_sec"), strict=True):
        assert mfu.step == tps.step
        assert mfu.value == pytest.approx(100.0 * tps.value / peak, rel=1e-5)
    assert all(0.0 <= event.value < 1.0 for event in events.Scalars("perf/data_wait_frac"))

    summary = throughput.summary
    assert summary["tokens"] == 2 * tokens_of_first(40) and summary["samples"] == 80
    assert summary["tokens_per_sec"] == pytest.approx(summary["tokens"] / summary["train_s"])
    assert summary["mfu"] == pytest.approx(100.0 * summary["tokens_per_sec"] / peak)
    assert summary["best_score"] == pytest.approx(float(checkpoint.best_model_score))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("slamming fit done: ")]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"slamming fit done: tokens={2 * tokens_of_first(40)}, wall=")
    assert f"mfu={100 * summary['mfu']:.2f}%" in line
    assert f"budget used={budget.consumed_gpu_hours:.4f} GPU-h (" in line and "% of 1.0000)" in line
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


def test_slow_loader_raises_the_data_wait_fraction(tmp_path: Path) -> None:
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
        trainer.fit(TinyRegression(step_sleep=0.03), loader)
        return throughput.summary["data_wait_frac"]

    # The slow loader sleeps 4 × 30 ms per batch against a 30 ms step: about 75 % of the time waiting.
    fast, slow = wait_fraction(0.0, "fast"), wait_fraction(0.03, "slow")
    assert slow > 0.5
    assert fast < 0.3
    assert slow > fast + 0.3
