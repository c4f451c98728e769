"""The stage cap of a DPO fit (``ComputeBudget(max_run_gpu_hours=...)``) stops it before the total.

The budget's clock is replaced by a fake one that stands still except at the start of every training
batch, when it moves 10 s forward: after optimizer step ``s`` the fit has run exactly ``10 s``
seconds, validation takes no time, and every number below follows from that.

The starting model is an export whose recorded budget says its run used 0.5 GPU-hours, so DPO
starts at 0.5 of the total of 1.0 GPU-hours (0.5 h = 180 steps left) while a stage cap of 0.01
GPU-hours (36 s) allows ceil(36 / 10) = 4 steps: at step 3 the stage used 30 s (< 36 s), at step 4
40 s (>= 36 s), so the fit stops at step 4 with 0.5 + 40 / 3600 GPU-hours consumed.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import slamming.callbacks.budget as budget_module
from slamming.callbacks.budget import STOP_CHECKPOINT_NAME, ComputeBudget
from slamming.callbacks.budget_ledger import LEDGER_NAME
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.tasks.dpo import DPOAlignment
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE
from tests.tasks.test_dpo import _preference_corpus

K = TEST_IDENTITY["k"]
TICK_S = 10.0
PARENT_GPU_HOURS = 0.5


class _Tick(Callback):
    """Moves the fake clock ``TICK_S`` forward at the start of every training batch."""

    def __init__(self, clock: SimpleNamespace) -> None:
        self.clock = clock

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int
    ) -> None:
        self.clock.now += TICK_S


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The only time source of ``slamming.callbacks.budget`` for this test (it reads ``time.monotonic``)."""
    fake = SimpleNamespace(now=1000.0)
    fake.monotonic = lambda: fake.now
    monkeypatch.setattr(budget_module, "time", fake)
    return fake


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dpo-budget")
    torch.manual_seed(0)
    model = UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)
    parent_budget = {"gpu_hours": PARENT_GPU_HOURS, "tokens": 1000, "max_gpu_hours": 1.0}
    return {
        "start": export_hf(model, root / "start", TEST_IDENTITY, budget=parent_budget),
        "train": _preference_corpus(root / "train", 32, 3),
        "val": _preference_corpus(root / "val", 8, 4),
        "ref": root / "ref",
    }


def _fit(
    root: Path,
    setup: dict[str, Path],
    clock: SimpleNamespace,
    budget: ComputeBudget,
    ckpt_path: str | None = None,
) -> pl.Trainer:
    module = DPOAlignment(
        str(setup["start"]),
        num_units=K,
        context_length=64,
        lr=1e-3,
        warmup_steps=2,
        reference_cache_dir=str(setup["ref"]),
        progress=False,
    )
    data = PreferenceDataModule(
        train=str(setup["train"]), val=str(setup["val"]), context_length=64, batch_size=4
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=8,
        val_check_interval=100,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        default_root_dir=root,
        callbacks=[
            budget,
            _Tick(clock),
            ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}"),
        ],
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def test_the_stage_cap_stops_dpo_before_the_total(
    tmp_path: Path, setup: dict[str, Path], clock: SimpleNamespace
) -> None:
    budget = ComputeBudget(max_gpu_hours=1.0, max_run_gpu_hours=0.01)
    trainer = _fit(tmp_path, setup, clock, budget)
    expected = PARENT_GPU_HOURS + 40.0 / 3600.0  # 4 steps of 10 s on top of the parent's 0.5
    assert budget.parent_gpu_hours == PARENT_GPU_HOURS
    assert budget.limit_gpu_hours == PARENT_GPU_HOURS + 0.01  # the cap, below the total of 1.0
    assert budget.stopped_by == "gpu_hours"
    assert budget.stop_step == 4 and trainer.global_step == 4  # max_steps was 8
    assert budget.stop_gpu_hours == expected
    assert budget.stop_message == (
        f"Compute budget reached: {expected:.4f} of 0.5100 (this stage's cap; total 1.0000) GPU-hours "
        "(this run 40.0 s × 1 device(s) + 0.5000 GPU-hours before; validation excluded) at step 4"
    )
    # The stop is in a checkpoint of its own (the periodic ones fell on step 3 and 6).
    assert budget.stop_checkpoint_path == str(tmp_path / "ckpt" / STOP_CHECKPOINT_NAME)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        LEDGER_NAME,
        STOP_CHECKPOINT_NAME,
        "step=3.ckpt",
    ]
    state = ComputeBudget.read_consumed(budget.stop_checkpoint_path)
    assert state["stopped_by"] == "gpu_hours" and state["stop_step"] == 4
    assert state["gpu_hours"] == expected
    assert (
        state["parent_gpu_hours"] == PARENT_GPU_HOURS and state["stage_start_gpu_hours"] == PARENT_GPU_HOURS
    )
    assert ComputeBudget.read_consumed(tmp_path / "ckpt" / "step=3.ckpt")["gpu_hours"] == (
        PARENT_GPU_HOURS + 30.0 / 3600.0
    )


def test_without_the_cap_the_same_fit_runs_to_max_steps(
    tmp_path: Path, setup: dict[str, Path], clock: SimpleNamespace
) -> None:
    budget = ComputeBudget(max_gpu_hours=1.0)
    trainer = _fit(tmp_path, setup, clock, budget)
    assert budget.stopped_by is None and budget.stop_step is None
    assert trainer.global_step == 8
    assert budget.state_dict()["gpu_hours"] == PARENT_GPU_HOURS + 80.0 / 3600.0


def test_the_total_stops_dpo_when_it_comes_before_the_cap(
    tmp_path: Path, setup: dict[str, Path], clock: SimpleNamespace
) -> None:
    # Total 0.505: 0.005 h = 18 s left after the parent, below the cap's 36 s: stop at step 2 (20 s).
    budget = ComputeBudget(max_gpu_hours=0.505, max_run_gpu_hours=0.01)
    trainer = _fit(tmp_path, setup, clock, budget)
    assert budget.limit_gpu_hours == 0.505
    assert budget.stopped_by == "gpu_hours" and budget.stop_step == 2 and trainer.global_step == 2
    assert budget.stop_gpu_hours == PARENT_GPU_HOURS + 20.0 / 3600.0
    assert "this stage's cap" not in budget.stop_message
    assert " of 0.5050 GPU-hours " in budget.stop_message


def test_the_stage_cap_counts_over_a_resume(
    tmp_path: Path, setup: dict[str, Path], clock: SimpleNamespace
) -> None:
    # First fit: stopped by the cap at step 4; resume from its step-3 checkpoint with a fresh budget
    # object. The checkpoint holds 0.5 + 30/3600 consumed and the stage's start (0.5), so one more
    # step (10 s) reaches the cap again at step 4 instead of granting the stage a fresh 36 s.
    _fit(tmp_path / "first", setup, clock, ComputeBudget(max_gpu_hours=1.0, max_run_gpu_hours=0.01))
    budget = ComputeBudget(max_gpu_hours=1.0, max_run_gpu_hours=0.01)
    ckpt = tmp_path / "first" / "ckpt" / "step=3.ckpt"
    trainer = _fit(tmp_path / "resumed", setup, clock, budget, ckpt_path=str(ckpt))
    assert budget.limit_gpu_hours == PARENT_GPU_HOURS + 0.01
    assert budget.stopped_by == "gpu_hours" and budget.stop_step == 4 and trainer.global_step == 4
    assert budget.stop_gpu_hours == (PARENT_GPU_HOURS + 30.0 / 3600.0) + 10.0 / 3600.0
