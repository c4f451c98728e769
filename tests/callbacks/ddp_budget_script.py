"""Tiny model and data for the callback tests, a fake clock, and the 2-process CPU DDP budget run.

Imported by the tests for :class:`TinyRegression`, :func:`make_loader`, :class:`FakeClock` and
:class:`StepClock`. Run as a script it trains :class:`TinyRegression` with ``strategy="ddp"`` (gloo)
on 2 CPU processes under a :class:`~slamming.callbacks.budget.ComputeBudget` and a
:class:`~slamming.callbacks.throughput.Throughput`, each process on its own :class:`FakeClock`, with
rank 1's steps taking three times longer on its clock than rank 0's, and each rank writes
``rank{N}.json`` into ``out_dir``: its final global step, why it stopped, and the token count the
Throughput callback summed over ranks::

    python tests/callbacks/ddp_budget_script.py OUT_DIR BUDGET_SECONDS
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset


class FakeClock:
    """Stands in for the ``time`` module of the callbacks and of this module, so timings are exact.

    ``monotonic()`` returns a number that only ``sleep`` (or :meth:`advance`) moves: a step that
    "sleeps" 0.0625 s takes exactly 0.0625 s on this clock however loaded the machine is, and
    nothing else takes any time. Use dyadic durations (1/16, 1/8, ...) so sums are exact in floats.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    advance = sleep

    @classmethod
    def install(cls, monkeypatch: Any, *modules: Any) -> FakeClock:
        """Replace ``time`` in ``modules`` (and in this module: the model's and loader's sleeps)."""
        clock = cls()
        for module in (sys.modules[__name__], *modules):
            monkeypatch.setattr(module, "time", clock)
        return clock


class StepClock(Callback):
    """Advances the :class:`FakeClock` that replaces ``slamming.callbacks.budget.time`` by
    ``seconds`` at the start of every training batch (usable from a CLI config by class path)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        import slamming.callbacks.budget

        clock = slamming.callbacks.budget.time
        assert isinstance(clock, FakeClock), "StepClock needs FakeClock.install(monkeypatch, budget module)"
        clock.advance(self.seconds)


class TokenDataset(Dataset):
    """Regression samples that also carry a token count (sample i has ``i % 5 + 1`` tokens).

    Args:
        n: Number of samples.
        item_sleep: Seconds to sleep in ``__getitem__``, to make a slow loader.
        seed: Seed of the features and targets.
    """

    def __init__(self, n: int, item_sleep: float = 0.0, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = self.x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=generator)
        self.tokens = torch.arange(n) % 5 + 1
        self.item_sleep = item_sleep

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.item_sleep:
            time.sleep(self.item_sleep)
        return self.x[index], self.y[index], self.tokens[index]


def make_loader(n: int, batch_size: int = 4, item_sleep: float = 0.0, seed: int = 0) -> DataLoader:
    """An unshuffled loader over :class:`TokenDataset`, so the token order is known to the tests."""
    return DataLoader(TokenDataset(n, item_sleep, seed), batch_size=batch_size, shuffle=False)


class TinyRegression(pl.LightningModule):
    """A 4 → 1 linear regression whose ``training_step`` returns ``loss`` and ``num_tokens``.

    Args:
        step_sleep: Seconds to sleep in each training step (per rank: index by ``global_rank``, the
            last value is used for higher ranks), so timing tests are dominated by known step times.
        val_sleep: Seconds to sleep in each validation step.
        flops_per_token: Exposed as ``self.flops_per_token`` when given (the Throughput callback
            logs MFU only when the module has it).
    """

    def __init__(
        self,
        step_sleep: float | tuple[float, ...] = 0.0,
        val_sleep: float = 0.0,
        flops_per_token: float | None = None,
    ) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.step_sleep = step_sleep if isinstance(step_sleep, tuple) else (step_sleep,)
        self.val_sleep = val_sleep
        if flops_per_token is not None:
            self.flops_per_token = flops_per_token
        self.validated_at_steps: list[int] = []
        self.tokens_trained = 0  # this rank's own count, to check the callbacks' sums against

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> dict[str, Any]:
        x, y, tokens = batch
        sleep = self.step_sleep[min(self.global_rank, len(self.step_sleep) - 1)]
        if sleep:
            time.sleep(sleep)
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.tokens_trained += int(tokens.sum())
        return {"loss": loss, "num_tokens": tokens.sum()}

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, _ = batch
        if self.val_sleep:
            time.sleep(self.val_sleep)
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at_steps.append(self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


#: Seconds per training step on each rank's fake clock in the DDP run (rank 0, rank 1).
RANK_STEP_SECONDS = (1 / 32, 3 / 32)


def main(out_dir: str, budget_seconds: float) -> None:
    """Run the 2-process DDP fit under a budget of ``budget_seconds`` of wall time × 2 devices."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    import slamming.callbacks.budget
    from slamming.callbacks.budget import ComputeBudget
    from slamming.callbacks.throughput import Throughput

    # Each process (Lightning re-runs this script for rank 1) gets its own fake clock, moved only by
    # the model's step "sleeps": the stop step then depends on rank 0's step time alone.
    clock = FakeClock()
    globals()["time"] = clock
    slamming.callbacks.budget.time = clock
    torch.set_num_threads(1)
    budget = ComputeBudget(max_gpu_hours=budget_seconds * 2 / 3600)
    throughput = Throughput(log_every_n_steps=5, peak_flops=1e9)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo"),
        max_steps=100_000,
        limit_val_batches=1,
        val_check_interval=20,
        callbacks=[
            budget,
            throughput,
            ModelCheckpoint(dirpath=os.path.join(out_dir, "ckpt"), save_last=True),
        ],
        default_root_dir=out_dir,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # Rank 1 is three times slower per step; rank 0's clock alone decides when to stop.
    model = TinyRegression(step_sleep=RANK_STEP_SECONDS, flops_per_token=100.0)
    trainer.fit(model, make_loader(4000), make_loader(8))
    result = {
        "rank": trainer.global_rank,
        "global_step": trainer.global_step,
        "stopped_by": budget.stopped_by,
        "stop_step": budget.stop_step,
        "validated_at_steps": model.validated_at_steps,
        "consumed_gpu_hours": budget.consumed_gpu_hours,
        "checkpoint": budget.stop_checkpoint_path or trainer.checkpoint_callback.last_model_path,
        "throughput_tokens": throughput.summary["tokens"],
        "tokens_trained": model.tokens_trained,
        "budget_tokens": budget.consumed_tokens,
    }
    with open(os.path.join(out_dir, f"rank{trainer.global_rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
