"""2-process CPU DDP (gloo) fits for the budget ledger: a first fit, then one resumed from its checkpoint.

Run as a script (Lightning re-runs it for rank 1)::

    python tests/callbacks/ddp_ledger_script.py OUT_DIR first
    python tests/callbacks/ddp_ledger_script.py OUT_DIR resume BUDGET_SECONDS

``first`` trains :class:`TinyRegression` for 45 steps, checkpointing every 25 into ``OUT_DIR/ckpt``
under a ledger written every 0.5 s; ``resume`` resumes ``step=25.ckpt`` under a budget of
``BUDGET_SECONDS`` of wall time × 2 devices. As in ddp_budget_script.py each process runs on its own
:class:`FakeClock`, rank 1's steps three times longer than rank 0's. Each rank writes
``{phase}-rank{N}.json``: its consumption when training started, the ledger's addition, and where
and why it stopped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

#: Seconds per training step on each rank's fake clock (rank 0, rank 1).
RANK_STEP_SECONDS = (1 / 32, 3 / 32)
#: The first fit's ledger interval and checkpoint cadence, and its length.
LEDGER_S, EVERY, FIRST_STEPS = 0.5, 25, 45


class AtStart(Callback):
    """Records the budget's consumption right after its ``on_train_start`` (nothing trained yet)."""

    def __init__(self, budget: Any) -> None:
        self.budget = budget
        self.gpu_hours: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.gpu_hours = self.budget.consumed_gpu_hours


def main(out_dir: str, phase: str, budget_seconds: float | None) -> None:
    """Run one phase on 2 gloo processes and write each rank's record."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    import slamming.callbacks.budget
    import tests.callbacks.ddp_budget_script as tiny
    from slamming.callbacks.budget import ComputeBudget

    clock = tiny.FakeClock()
    tiny.time = clock  # the model's step sleeps
    slamming.callbacks.budget.time = clock
    torch.set_num_threads(1)
    hours = 1.0 if budget_seconds is None else budget_seconds * 2 / 3600
    budget = ComputeBudget(max_gpu_hours=hours, ledger_every_s=LEDGER_S)
    at_start = AtStart(budget)
    checkpoint = ModelCheckpoint(
        dirpath=os.path.join(out_dir, "ckpt"), every_n_train_steps=EVERY, save_top_k=-1, filename="{step}"
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo"),
        max_steps=FIRST_STEPS if phase == "first" else 100_000,
        limit_val_batches=0,
        callbacks=[budget, at_start, checkpoint],
        default_root_dir=out_dir,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    resume = None if phase == "first" else os.path.join(out_dir, "ckpt", f"step={EVERY}.ckpt")
    trainer.fit(tiny.TinyRegression(step_sleep=RANK_STEP_SECONDS), tiny.make_loader(8000), ckpt_path=resume)
    result = {
        "rank": trainer.global_rank,
        "global_step": trainer.global_step,
        "start_gpu_hours": at_start.gpu_hours,
        "ledger_lost_gpu_hours": budget.ledger_lost_gpu_hours,
        "stopped_by": budget.stopped_by,
        "stop_step": budget.stop_step,
        "lineage": budget.ledger.lineage,
    }
    with open(os.path.join(out_dir, f"{phase}-rank{trainer.global_rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None)
