"""Throughput callback: tokens/s, MFU, data-wait fraction, and the one-line summary of a fit."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from slamming.callbacks.budget import ComputeBudget
from slamming.contracts import read_num_tokens
from slamming.errors import ConfigError
from slamming.models.compiling import graphs_compiled
from slamming.models.flops import peak_flops, precision_to_dtype


def _batch_size(batch: Any) -> int:
    """Leading dimension of the first tensor in a (nested) batch; 0 when there is none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = _batch_size(item)
            if size:
                return size
    return 0


def _module_flops_per_token(pl_module: pl.LightningModule) -> float | None:
    """``pl_module.flops_per_token`` (attribute, property or method) when it is a positive number."""
    value = getattr(pl_module, "flops_per_token", None)
    if callable(value):
        value = value()
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return None


class Throughput(Callback):
    """Measure training throughput and print a summary line when the fit ends.

    Every ``log_every_n_steps`` optimizer steps it logs, over the steps since the previous log:

    * ``perf/tokens_per_sec``: non-pad target tokens per second, where tokens are the ``num_tokens``
      that ``training_step`` returns. They are summed over ranks with one small all-reduce per log
      step, so the figure is global; ``perf/tokens_seen`` is the global running total.
    * ``perf/samples_per_sec`` (samples = leading dimension of the batch's first tensor, summed over
      ranks) and ``perf/step_time`` (seconds per optimizer step).
    * ``perf/mfu`` = flops_per_token × tokens/s ÷ (peak FLOP/s × world_size), only when the
      LightningModule exposes ``flops_per_token`` and the device's peak is known
      (:func:`slamming.models.flops.peak_flops`); it is never guessed.
    * ``perf/data_wait_frac``: time between the end of one batch and the start of the next (loader
      wait, host-to-device copy and Lightning's per-batch bookkeeping) ÷ training time. Gaps in
      which validation ran or a checkpoint was saved are not counted; after an epoch boundary only
      the time from the new epoch's start counts (the loader's iterator start-up).

    Times exclude validation. The metrics go straight to ``trainer.loggers`` at ``trainer.global_step``
    (so their cadence is this callback's, not ``Trainer(log_every_n_steps)``), and the last partial
    window is logged when training ends, so the final ``perf/tokens_seen`` is the exact total.

    At the end of the fit rank 0 prints one line::

        slamming fit done: tokens=…, wall=…s, tokens/s=…, mfu=…%, budget used=… GPU-h (x % of y),
        best val/loss=…, checkpoint=…

    where the budget comes from a :class:`ComputeBudget` in ``trainer.callbacks`` and the best score
    and checkpoint from ``trainer.checkpoint_callback`` ("n/a" when absent). The numbers are kept in
    :attr:`summary` on every rank, with the module's ``attention`` implementation, the graphs
    ``torch.compile`` built during the fit (``graphs_compiled``), those built after the first
    optimizer step (``recompiles``: changing document boundaries should cause none), and the peak
    CUDA memory (``peak_memory_bytes``; None on CPU).

    Args:
        log_every_n_steps: Log the window metrics every this many optimizer steps.
        peak_flops: Peak FLOP/s of one device; ``None`` looks it up (CUDA) or measures it (CPU).
        print_summary: Print the summary line at the end of the fit.

    Raises:
        ConfigError: ``log_every_n_steps`` below 1, or a ``peak_flops`` that is not positive.
    """

    def __init__(
        self, log_every_n_steps: int = 50, peak_flops: float | None = None, print_summary: bool = True
    ) -> None:
        if log_every_n_steps < 1:
            raise ConfigError(f"throughput.log_every_n_steps must be >= 1, got {log_every_n_steps}")
        if peak_flops is not None and not peak_flops > 0:
            raise ConfigError(
                f"throughput.peak_flops must be a positive FLOP/s figure, got {peak_flops}; "
                "leave it null to look the peak up (CUDA) or measure it (CPU)"
            )
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.print_summary = print_summary
        self.summary: dict[str, Any] = {}
        self._reset_run()

    def _reset_run(self) -> None:
        self._world_size = 1
        self._flops_per_token: float | None = None
        self._peak: float | None = self.peak_flops
        self._train_start = 0.0
        self._val_total = 0.0
        self._val_start: float | None = None
        self._wait_total = 0.0
        self._wait_mark: float | None = None
        self._last_step = -1
        self._saw_tokens = False
        self._tokens_seen = 0
        self._samples_seen = 0
        self._graphs_at_start = graphs_compiled()
        self._graphs_after_first_step: int | None = None
        self._reset_window(time.monotonic())

    def _reset_window(self, now: float) -> None:
        self._win_start = now
        self._win_val_at_start = self._val_total
        self._win_wait = 0.0
        self._win_steps = 0
        self._win_tokens: torch.Tensor | int = 0
        self._win_samples = 0

    # ---------------------------------------------------------------------------------------- hooks

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_run()
        self._world_size = trainer.world_size
        self._last_step = trainer.global_step
        self._flops_per_token = _module_flops_per_token(pl_module)
        if self._flops_per_token is not None and self._peak is None:
            # Measured before the clock starts: on CPU this runs a few timed GEMMs.
            self._peak = peak_flops(pl_module.device, precision_to_dtype(trainer.precision))
            if self._peak is None:
                rank_zero_warn(
                    f"Throughput: no peak FLOP/s known for {pl_module.device} at precision {trainer.precision}; "
                    "perf/mfu is not logged. Pass Throughput(peak_flops=...) to enable it."
                )
        now = time.monotonic()
        self._train_start = now
        self._reset_window(now)
        self._wait_mark = now  # the first batch's wait includes the loader's start-up

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Epoch-end hooks (checkpoint saves, scheduler steps) are not data waiting; the new
        # iterator's start-up is, so the wait restarts from here.
        self._wait_mark = time.monotonic()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._wait_mark is not None:
            waited = time.monotonic() - self._wait_mark
            self._wait_total += waited
            self._win_wait += waited
        self._wait_mark = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_start = time.monotonic()
            self._wait_mark = None  # this gap is validation, not data waiting

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is not None:
            self._val_total += time.monotonic() - self._val_start
            self._val_start = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._wait_mark = None  # a save happened in this gap: not data waiting

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        tokens = read_num_tokens(outputs)
        if tokens is not None:
            self._saw_tokens = True
            # Kept as a tensor when it is one: converting every step would force a device sync.
            self._win_tokens = self._win_tokens + tokens
        self._win_samples += _batch_size(batch)
        if trainer.global_step != self._last_step:  # an optimizer step happened on this batch
            self._last_step = trainer.global_step
            self._win_steps += 1
            if self._graphs_after_first_step is None:
                self._graphs_after_first_step = graphs_compiled()
            if trainer.global_step % self.log_every_n_steps == 0:
                self._flush_window(trainer, pl_module)
        self._wait_mark = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # All ranks run this hook, so the final all-reduce in _flush_window is a safe collective.
        if self._win_steps > 0 or self._win_samples > 0:
            self._flush_window(trainer, pl_module)
        wall = time.monotonic() - self._train_start
        train_s = max(wall - self._val_total, 1e-9)
        tokens_per_sec = self._tokens_seen / train_s if self._saw_tokens else None
        self.summary = {
            "tokens": self._tokens_seen if self._saw_tokens else None,
            "samples": self._samples_seen,
            "wall_s": wall,
            "train_s": train_s,
            "validation_s": self._val_total,
            "tokens_per_sec": tokens_per_sec,
            "samples_per_sec": self._samples_seen / train_s,
            "mfu": self._mfu(tokens_per_sec),
            "data_wait_frac": self._wait_total / train_s,
            "global_step": trainer.global_step,
            "world_size": self._world_size,
            "flops_per_token": self._flops_per_token,
            "peak_flops": self._peak,
            "attention": getattr(pl_module, "attention", None),
            "graphs_compiled": graphs_compiled() - self._graphs_at_start,
            "recompiles": graphs_compiled() - (self._graphs_after_first_step or graphs_compiled()),
            "peak_memory_bytes": (
                torch.cuda.max_memory_allocated(pl_module.device) if pl_module.device.type == "cuda" else None
            ),
        }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After on_train_end of every callback, so ModelCheckpoint's last save and the budget's stop
        # checkpoint are known. No collective here: the strategy may already be torn down.
        if not self.summary:
            return
        budget = next((cb for cb in trainer.callbacks if isinstance(cb, ComputeBudget)), None)
        checkpoint_callback = trainer.checkpoint_callback
        best_name, best_score, best_path, last_path = "val/loss", None, "", ""
        if isinstance(checkpoint_callback, ModelCheckpoint):
            best_name = checkpoint_callback.monitor or best_name
            if checkpoint_callback.monitor and checkpoint_callback.best_model_score is not None:
                best_score = float(checkpoint_callback.best_model_score)
            best_path, last_path = checkpoint_callback.best_model_path, checkpoint_callback.last_model_path
        stop_path = budget.stop_checkpoint_path if budget is not None else None
        self.summary.update(
            gpu_hours_used=budget.consumed_gpu_hours if budget is not None else None,
            max_gpu_hours=budget.max_gpu_hours if budget is not None else None,
            budget_fraction=budget.fraction_used if budget is not None else None,
            stopped_by=budget.stopped_by if budget is not None else None,
            best_metric=best_name,
            best_score=best_score,
            best_checkpoint=best_path or None,
            checkpoint=stop_path or last_path or best_path or None,
        )
        if self.print_summary and trainer.is_global_zero:
            print(self.summary_line(), flush=True)

    # ------------------------------------------------------------------------------------- helpers

    def _mfu(self, tokens_per_sec: float | None) -> float | None:
        if tokens_per_sec is None or self._flops_per_token is None or not self._peak:
            return None
        return self._flops_per_token * tokens_per_sec / (self._peak * self._world_size)

    def _flush_window(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Reduce the window's counts over ranks, log its metrics (rank 0), and start a new window."""
        now = time.monotonic()
        elapsed = max(now - self._win_start - (self._val_total - self._win_val_at_start), 1e-9)
        counts = torch.stack(
            [
                torch.as_tensor(self._win_tokens, device=pl_module.device).to(torch.int64).reshape(()),
                torch.tensor(self._win_samples, dtype=torch.int64, device=pl_module.device),
            ]
        )
        if self._world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        tokens, samples = (int(v) for v in counts.tolist())
        self._tokens_seen += tokens
        self._samples_seen += samples
        metrics: dict[str, float] = {
            "perf/samples_per_sec": samples / elapsed,
            "perf/step_time": elapsed / max(self._win_steps, 1),
            "perf/data_wait_frac": self._win_wait / elapsed,
        }
        if self._saw_tokens:
            metrics["perf/tokens_per_sec"] = tokens / elapsed
            metrics["perf/tokens_seen"] = float(self._tokens_seen)
            mfu = self._mfu(tokens / elapsed)
            if mfu is not None:
                metrics["perf/mfu"] = mfu
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        self._reset_window(now)

    def summary_line(self) -> str:
        """Format :attr:`summary` as the one-line report printed at the end of a fit."""
        s = self.summary

        def number(value: float | None, fmt: str) -> str:
            return "n/a" if value is None else format(value, fmt)

        if s.get("gpu_hours_used") is None:
            budget = "n/a"
        else:
            budget = f"{s['gpu_hours_used']:.4f} GPU-h ({100 * s['budget_fraction']:.1f} % of {s['max_gpu_hours']:.4f})"
        mfu = "n/a" if s.get("mfu") is None else f"{100 * s['mfu']:.2f}%"
        tokens = "n/a" if s.get("tokens") is None else str(s["tokens"])
        return (
            f"slamming fit done: tokens={tokens}, wall={s['wall_s']:.1f}s, "
            f"tokens/s={number(s.get('tokens_per_sec'), '.1f')}, mfu={mfu}, budget used={budget}, "
            f"best {s.get('best_metric', 'val/loss')}={number(s.get('best_score'), '.4f')}, "
            f"checkpoint={s.get('checkpoint') or 'n/a'}"
        )
