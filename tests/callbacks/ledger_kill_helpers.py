"""A callback for the budget-ledger kill test: slow real steps, and a timeline written as they happen.

Used from a ``slamming fit`` config by class path (``tests.callbacks.ledger_kill_helpers.SlowSteps``),
in a process the test kills with SIGKILL: every event is appended to a JSON-lines file and flushed
at once, so the test knows, from outside, when training started, which checkpoints were written and
which steps ended before the kill.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class SlowSteps(Callback):
    """Sleeps ``seconds`` (real time) before every training batch from ``from_step`` on, and logs events.

    Each line of ``timeline`` is ``{"event", "step", "t", "pid"}`` with ``t`` from ``time.time()``:
    ``start`` (``on_train_start``), ``step`` (the end of every training batch), ``checkpoint`` (a
    checkpoint being saved at that step) and ``end`` (``on_train_end``, with the budget's consumed
    GPU-hours as ``gpu_hours``).

    Args:
        timeline: The JSON-lines file the events are appended to.
        seconds: Seconds to sleep before each slow batch.
        from_step: The first global step whose batch is slow (earlier ones run at full speed).
    """

    def __init__(self, timeline: str, seconds: float, from_step: int = 0) -> None:
        self.timeline = timeline
        self.seconds = float(seconds)
        self.from_step = int(from_step)

    def _event(self, event: str, trainer: pl.Trainer, **extra: Any) -> None:
        record = {"event": event, "step": trainer.global_step, "t": time.time(), "pid": os.getpid(), **extra}
        with open(self.timeline, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._event("start", trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step >= self.from_step:
            time.sleep(self.seconds)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._event("step", trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._event("checkpoint", trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from slamming.callbacks.budget import ComputeBudget

        budget = next(cb for cb in trainer.callbacks if isinstance(cb, ComputeBudget))
        self._event("end", trainer, gpu_hours=budget.consumed_gpu_hours)
