"""Compute budget: stop training when the GPU-hours (or tokens) of the run are spent.

With ``size_schedule`` it also ends the LR schedule where the first of its limits ends the run
(:mod:`slamming.callbacks.schedule_sizing`); the kill -9 ledger is :mod:`slamming.callbacks.budget_ledger`.

When a callback sets ``trainer.should_stop`` in ``on_train_batch_end``, Lightning 2.6.6
(``loops/training_epoch_loop.py``, measured in tests/callbacks) validates at that step (when
``min_steps``/``min_epochs`` are met, unless ``check_val_every_n_epoch`` skips the epoch); a
``ModelCheckpoint`` with its default epoch trigger saves at the stop, but one with
``every_n_train_steps`` does not (its ``last.ckpt`` stays at the last multiple of N). Hence
:meth:`ComputeBudget.on_train_end` saves ``budget-stop.ckpt`` itself, on every rank, whenever no
checkpoint was written at the stop step.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from slamming.callbacks.budget_ledger import BudgetLedger, checkpoint_dir, read_consumed
from slamming.callbacks.schedule_sizing import ScheduleHorizon, describe_horizon, schedule_horizon
from slamming.contracts import BudgetChild, ResizableSchedule, read_num_tokens, require
from slamming.errors import SlammingError

STOP_CHECKPOINT_NAME = "budget-stop.ckpt"


class ComputeBudget(Callback):
    """Stop a fit when its compute budget is spent; the consumption survives resume.

    Definition. GPU-hours = wall time of the fit × number of devices in the run
    (``trainer.world_size``; on CPU the "devices" are processes, so it is device-hours). The wall time
    runs from ``on_train_start`` and includes data loading, forward/backward, optimizer steps,
    logging and checkpoint saving. Excluded: with ``exclude_validation`` (the default, as in the
    paper) the time inside validation loops run during training; the sanity-check validation runs
    before the clock starts and never counts. Setup before ``on_train_start`` (model building, DDP
    start-up) does not count either. The device count is taken per run, so a run resumed on more
    devices spends the budget faster.

    The consumed GPU-hours and tokens are saved in every checkpoint (``state_dict``) and restored on
    resume (``load_state_dict``): a resumed run continues from the consumed amount, it does not get a
    fresh budget. A second ``fit`` with the same callback object and no checkpoint also continues.

    Ledger (kill -9). Rank 0 also writes ``budget-ledger.json`` beside the checkpoints, at most every
    ``ledger_every_s`` seconds, and a resume from the last checkpoint of the same run counts the time
    a kill lost after it (:mod:`slamming.callbacks.budget_ledger`); every rank adopts rank 0's reading.

    Stopping. Every ``check_every_n_steps`` optimizer steps (micro-batches that only accumulate
    gradients are not checks), rank 0 decides whether the budget is spent and shares the decision
    with ``trainer.strategy.broadcast``, so every rank sets ``trainer.should_stop`` on the same step.
    The loop then validates, and a checkpoint is written at the stop step (see the module docstring).

    Tokens. ``training_step`` returns ``{"loss": ..., "num_tokens": ...}`` where ``num_tokens`` counts
    the non-ignored target tokens of the micro-batch. Tokens are summed over ranks at each check; a
    checkpoint written between checks (``check_every_n_steps > 1``) adds only this rank's tokens
    since the last check.

    Schedule. With ``size_schedule``, after ``measure_steps`` optimizer steps of a fit and then every
    ``resize_every_n_steps``, rank 0 estimates where the run ends and broadcasts it, and every rank
    moves the end of the LR schedule there (``pl_module.resize_schedule``): the first of the steps
    the remaining GPU-hours buy at this fit's time per step, the steps until ``max_tokens`` at this
    fit's tokens per step (summed over ranks), and ``trainer.max_steps``
    (:mod:`slamming.callbacks.schedule_sizing`). One line names the limit that binds.

    Args:
        max_gpu_hours: GPU-hours (wall hours × devices) the run may use, in total over resumes.
        max_tokens: Optional budget of trained target tokens (summed over ranks); it stops the run
            and, with ``size_schedule``, sizes the schedule.
        check_every_n_steps: Check (and log ``budget/*``) every this many optimizer steps.
        exclude_validation: Do not count time spent in validation loops during training.
        size_schedule: End the LR schedule where the budget (or ``max_steps``) ends the run.
        measure_steps: Optimizer steps measured before the first sizing.
        resize_every_n_steps: Re-estimate the end every this many optimizer steps.
        max_run_gpu_hours: Optional cap for this stage alone (e.g. DPO's 30 minutes), counted over
            the stage's resumes; the run stops at whichever of the two limits comes first.
        ledger_every_s: Write the ledger at most this often during training (seconds, on rank 0's
            clock); None turns the ledger off (neither written nor read).

    Stages. A later stage (DPO after pretraining) shares the budget of the run it started from: when
    the LightningModule has a ``parent_budget`` attribute (the :meth:`read_consumed` dict of its
    parent checkpoint) and this fit does not resume from its own checkpoint, the parent's GPU-hours
    and tokens are the starting consumption, and one line says what is left of ``max_gpu_hours``.

    Attributes:
        stopped_by: ``"gpu_hours"`` or ``"tokens"`` once the budget stopped the current fit, else None.
        stop_step: Global step of the stop.
        stop_gpu_hours: Consumed GPU-hours when the stop was decided.
        stop_tokens: Consumed tokens when the stop was decided.
        stop_message: The line logged at the stop.
        stop_checkpoint_path: Path of the checkpoint this callback saved at the stop, or None when
            a ``ModelCheckpoint`` had already saved that step.
        schedule_horizon: Step at which the sized LR schedule ends (None until sized).
        schedule_limit: ``"gpu_hours"``, ``"tokens"`` or ``"max_steps"``: what put it there.
    """

    def __init__(
        self,
        max_gpu_hours: float = 24.0,
        max_tokens: int | None = None,
        check_every_n_steps: int = 1,
        exclude_validation: bool = True,
        size_schedule: bool = False,
        measure_steps: int = 20,
        resize_every_n_steps: int = 100,
        max_run_gpu_hours: float | None = None,
        ledger_every_s: float | None = 60.0,
    ) -> None:
        run_cap = max_run_gpu_hours
        for bad, problem in (
            (not max_gpu_hours > 0, f"max_gpu_hours must be > 0, got {max_gpu_hours}; set a positive budget"),
            (max_tokens is not None and max_tokens <= 0, f"max_tokens must be > 0 or null, got {max_tokens}"),
            (check_every_n_steps < 1, f"check_every_n_steps must be >= 1, got {check_every_n_steps}"),
            (not (run_cap is None or run_cap > 0), f"max_run_gpu_hours must be > 0 or null, got {run_cap}"),
        ):
            if bad:
                raise SlammingError(f"ComputeBudget: {problem}.")
        self.max_gpu_hours = float(max_gpu_hours)
        self.max_run_gpu_hours = None if max_run_gpu_hours is None else float(max_run_gpu_hours)
        # Consumption when this stage began (the parent's), so the stage cap survives resumes.
        self._stage_start_gpu_hours = 0.0
        self._restored = False
        self.parent_gpu_hours: float | None = None
        self.max_tokens = max_tokens
        self.check_every_n_steps = check_every_n_steps
        self.exclude_validation = exclude_validation
        self.size_schedule = size_schedule
        self.measure_steps = max(int(measure_steps), 1)
        self.resize_every_n_steps = max(int(resize_every_n_steps), 1)
        self._start_step = 0
        self._next_resize: int | None = None
        self.schedule_horizon: int | None = None
        self.schedule_limit: str | None = None
        # Consumption before the current fit: restored from a checkpoint or left by an earlier fit.
        self._prior_gpu_hours = 0.0
        self._prior_tokens = 0
        # Clock of the current fit (None outside training).
        self._run_start: float | None = None
        self._excluded_s = 0.0
        self._val_start: float | None = None
        self._world_size = 1
        # Tokens of the current fit: summed over ranks up to the last check, plus this rank's since.
        self._tokens_global: torch.Tensor | int = 0
        self._tokens_pending: torch.Tensor | int = 0
        self._saw_tokens = False
        self._last_step = -1
        self._last_saved_step: int | None = None
        self.stopped_by: str | None = None
        self.stop_step: int | None = None
        self.stop_message: str | None = None
        self.stop_gpu_hours: float | None = None
        self.stop_tokens: int | None = None
        self.stop_checkpoint_path: str | None = None
        #: The kill -9 ledger of the current fit (its lineage is also saved in checkpoints).
        self.ledger = BudgetLedger(ledger_every_s)
        # The budget state of the checkpoint being resumed (set by load_state_dict, used once).
        self._resume_state: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        # A fixed key (not one derived from the arguments) so a run resumed with a larger budget
        # finds its state, and `read_consumed` knows where to look.
        return "ComputeBudget"

    # ----------------------------------------------------------------------------------- accounting

    def _run_seconds(self) -> float:
        if self._run_start is None:
            return 0.0
        now = time.monotonic()
        in_validation = now - self._val_start if self._val_start is not None else 0.0
        return max(0.0, now - self._run_start - self._excluded_s - in_validation)

    @property
    def consumed_gpu_hours(self) -> float:
        """GPU-hours consumed so far, including those of resumed-from runs."""
        return self._prior_gpu_hours + self._run_seconds() * self._world_size / 3600.0

    @property
    def consumed_tokens(self) -> int:
        """Target tokens trained so far (summed over ranks up to the last check), including resumes."""
        return self._prior_tokens + int(self._tokens_global) + int(self._tokens_pending)

    @property
    def limit_gpu_hours(self) -> float:
        """Consumption at which this run stops: the total, or the stage cap if that comes first."""
        if self.max_run_gpu_hours is None:
            return self.max_gpu_hours
        return min(self.max_gpu_hours, self._stage_start_gpu_hours + self.max_run_gpu_hours)

    def remaining_gpu_hours(self) -> float:
        """GPU-hours this run may still use (never negative)."""
        return max(0.0, self.limit_gpu_hours - self.consumed_gpu_hours)

    @property
    def fraction_used(self) -> float:
        """Consumed GPU-hours as a fraction of ``max_gpu_hours``."""
        return self.consumed_gpu_hours / self.max_gpu_hours

    # ---------------------------------------------------------------------------------------- hooks

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._world_size = trainer.world_size
        self._excluded_s = 0.0
        self._val_start = None
        self._tokens_global = self._tokens_pending = 0
        self._last_step = self._start_step = trainer.global_step
        self.stopped_by = self.stop_step = self.stop_message = self.stop_checkpoint_path = None
        self.stop_gpu_hours = self.stop_tokens = self.schedule_horizon = self.schedule_limit = None
        self._run_start = time.monotonic()
        self._next_resize = trainer.global_step + self.measure_steps
        self._adopt_parent(pl_module)  # a fresh later stage; exclusive with a resume's ledger
        if self.size_schedule:  # before the ledger is written: a refused fit leaves nothing
            require(pl_module, ResizableSchedule, "budget.size_schedule", "set budget.size_schedule=false")
        self._start_ledger(trainer)
        if self._prior_gpu_hours >= self.limit_gpu_hours:
            rank_zero_warn(
                f"Compute budget already spent at start ({self._prior_gpu_hours:.4f} of "
                f"{self.limit_gpu_hours:.4f} GPU-hours); the run stops after its first optimizer step. "
                "Raise max_gpu_hours to train further."
            )

    def _adopt_parent(self, pl_module: pl.LightningModule) -> None:
        """Start from the parent stage's consumption (once; a resumed stage already holds it)."""
        parent = pl_module.parent_budget if isinstance(pl_module, BudgetChild) else None
        if self._restored or parent is None or self.parent_gpu_hours is not None:
            return
        self.parent_gpu_hours = float(parent["gpu_hours"])
        self._prior_gpu_hours = max(self._prior_gpu_hours, self.parent_gpu_hours)
        self._prior_tokens = max(self._prior_tokens, int(parent.get("tokens", 0)))
        self._stage_start_gpu_hours = self._prior_gpu_hours
        left = max(0.0, self.max_gpu_hours - self._prior_gpu_hours)
        cap = (
            "" if self.max_run_gpu_hours is None else f"; this stage may use {self.remaining_gpu_hours():.4f}"
        )
        rank_zero_info(
            f"Compute budget: the parent run used {self.parent_gpu_hours:.4f} of {self.max_gpu_hours:.4f} GPU-hours "
            f"({int(parent.get('tokens', 0))} tokens); {left:.4f} GPU-hours left{cap}"
        )

    # --------------------------------------------------------------------------------------- ledger

    def _start_ledger(self, trainer: pl.Trainer) -> None:
        """Start this fit's ledger; a resume adopts the consumption a kill lost (rank 0's reading)."""
        resumed, self._resume_state = self._resume_state, None
        adopted = self.ledger.start(trainer, resumed)  # a collective, reached by every rank
        if adopted is not None:
            self._prior_gpu_hours = adopted["gpu_hours"]
            self._prior_tokens = max(self._prior_tokens, adopted["tokens"])
        self._write_ledger(trainer)

    def _write_ledger(self, trainer: pl.Trainer, only_if_due: bool = False) -> None:
        """Write the ledger (rank 0): now, or with ``only_if_due`` when ``ledger_every_s`` has passed."""
        now = time.monotonic()
        if trainer.is_global_zero and (not only_if_due or self.ledger.due(now)):
            record = (self.consumed_gpu_hours, self.consumed_tokens, self._world_size, self.max_gpu_hours)
            self.ledger.write(now, trainer.global_step, *record)

    @property
    def ledger_lost_gpu_hours(self) -> float:
        """GPU-hours the ledger added at the start of this fit (0.0 when it added none)."""
        return self.ledger.lost_gpu_hours

    @contextlib.contextmanager
    def validation_time(self) -> Iterator[None]:
        """Count the time inside the block as validation (excluded with ``exclude_validation``).

        For validation passes a module runs itself, outside Lightning's validation loop (the
        step-0 validation of pretraining and DPO), so they are excluded like the loop's.
        """
        if not self.exclude_validation or self._run_start is None or self._val_start is not None:
            yield
            return
        started = time.monotonic()
        try:
            yield
        finally:
            self._excluded_s += time.monotonic() - started

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.exclude_validation and self._run_start is not None and not trainer.sanity_checking:
            self._val_start = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is not None:
            self._excluded_s += time.monotonic() - self._val_start
            self._val_start = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        tokens = read_num_tokens(outputs)
        if tokens is not None:
            self._saw_tokens = True
            self._tokens_pending = self._tokens_pending + tokens
        # global_step counts optimizer steps (automatic and manual optimization), so an unchanged
        # value means this micro-batch only accumulated gradients. It moves identically on all ranks.
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        if self.size_schedule and self._next_resize is not None and trainer.global_step >= self._next_resize:
            self._resize_schedule(trainer, pl_module)
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer, pl_module)
        self._write_ledger(trainer, only_if_due=True)

    def _resize_schedule(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """End the LR schedule where the first limit ends the run, at this fit's measured rates."""
        self._next_resize = trainer.global_step + self.resize_every_n_steps
        if self.max_tokens is not None:
            # A collective, reached by every rank at the same step: the rate needs all ranks' tokens.
            self._sync_tokens(trainer, pl_module)
        horizon: ScheduleHorizon | None = None
        if trainer.is_global_zero:
            step = trainer.global_step
            left = None if self.max_tokens is None else self.max_tokens - self.consumed_tokens
            seconds, hours_left = self._run_seconds(), self.remaining_gpu_hours()
            rates = (step - self._start_step, seconds, self._world_size, hours_left, int(self._tokens_global))
            horizon = schedule_horizon(step, *rates, tokens_left=left, max_steps=trainer.max_steps)
            if horizon is not None and horizon.limit != self.schedule_limit:  # first sizing, or a new limit
                rank_zero_info(f"Compute budget: {describe_horizon(horizon, *rates, self.max_tokens)}")
        # All ranks reach this at the same step; rank 0's estimate is the one everybody uses.
        horizon = trainer.strategy.broadcast(horizon, src=0)
        if horizon is not None:
            if horizon.step != self.schedule_horizon:
                pl_module.resize_schedule(horizon.step)
            self.schedule_horizon, self.schedule_limit = horizon

    def _sync_tokens(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fold this rank's pending tokens into the global count (a collective when world_size > 1)."""
        pending = self._tokens_pending
        if self._world_size > 1:
            local = torch.as_tensor(pending, dtype=torch.int64, device=pl_module.device).clone().reshape(1)
            pending = trainer.strategy.reduce(local, reduce_op="sum")[0]
        self._tokens_global = self._tokens_global + pending
        self._tokens_pending = 0

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.max_tokens is not None and not self._saw_tokens:
            raise SlammingError(
                f"ComputeBudget(max_tokens={self.max_tokens}) needs {type(pl_module).__name__}.training_step to "
                "return a dict with 'loss' and 'num_tokens'; it returned none. Return the count or unset max_tokens."
            )
        self._sync_tokens(trainer, pl_module)
        gpu_hours = self.consumed_gpu_hours
        reason: str | None = None
        if trainer.is_global_zero:
            if gpu_hours >= self.limit_gpu_hours:
                reason = "gpu_hours"
            elif self.max_tokens is not None and self.consumed_tokens >= self.max_tokens:
                reason = "tokens"
        # Every rank reaches this line at the same optimizer step, so the collective cannot hang;
        # rank 0's clock alone decides, and the others follow it.
        reason = trainer.strategy.broadcast(reason, src=0)

        pl_module.log("budget/gpu_hours_used", gpu_hours, on_step=True, on_epoch=False)
        pl_module.log("budget/fraction", gpu_hours / self.max_gpu_hours, on_step=True, on_epoch=False)
        if self.max_tokens is not None:
            tokens = self.consumed_tokens
            pl_module.log("budget/tokens_used", float(tokens), on_step=True, on_epoch=False)
            pl_module.log("budget/tokens_fraction", tokens / self.max_tokens, on_step=True, on_epoch=False)

        if reason is None or self.stopped_by is not None:
            # Already stopping (Lightning keeps training until min_steps/min_epochs are met).
            return
        self.stopped_by, self.stop_step = reason, trainer.global_step
        self.stop_gpu_hours, self.stop_tokens, wall = gpu_hours, self.consumed_tokens, self._run_seconds()
        if reason == "gpu_hours":
            limit = f"{self.limit_gpu_hours:.4f}"
            if self.limit_gpu_hours < self.max_gpu_hours:
                limit += f" (this stage's cap; total {self.max_gpu_hours:.4f})"
            self.stop_message = (
                f"Compute budget reached: {gpu_hours:.4f} of {limit} GPU-hours "
                f"(this run {wall:.1f} s × {self._world_size} device(s) + {self._prior_gpu_hours:.4f} GPU-hours "
                f"before; validation {'excluded' if self.exclude_validation else 'included'}) "
                f"at step {trainer.global_step}"
            )
        else:
            self.stop_message = (
                f"Token budget reached: {self.consumed_tokens} of {self.max_tokens} tokens "
                f"({gpu_hours:.4f} of {self.max_gpu_hours:.4f} GPU-hours) at step {trainer.global_step}"
            )
        rank_zero_info(self.stop_message + "; validating and saving a checkpoint.")
        trainer.should_stop = True

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        # Called on every rank by every save (ModelCheckpoint's or ours): tells on_train_end whether
        # the stop step already has a checkpoint.
        self._last_saved_step = trainer.global_step
        # The ledger's next write names this checkpoint as the one its consumption continues.
        self.ledger.checkpoint_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # All ranks run this hook, so the token all-reduce and the save below are safe collectives.
        self._sync_tokens(trainer, pl_module)
        if self.stopped_by is not None and self._last_saved_step != trainer.global_step:
            self.stop_checkpoint_path = os.path.join(checkpoint_dir(trainer), STOP_CHECKPOINT_NAME)
            trainer.save_checkpoint(self.stop_checkpoint_path)
            rank_zero_info(f"Compute budget: checkpoint at the stop saved to {self.stop_checkpoint_path}")
        # Fold this fit into the prior consumption: the clock stops here, and a later fit with the
        # same callback object continues from this amount unless a checkpoint says otherwise.
        self._prior_gpu_hours = self.consumed_gpu_hours
        self._prior_tokens = self.consumed_tokens
        self._tokens_global = self._tokens_pending = 0
        self._run_start = None
        self._write_ledger(trainer)  # the final consumption, also past the last checkpoint
        self.ledger.stop()

    # ------------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {
            "gpu_hours": self.consumed_gpu_hours,
            "tokens": self.consumed_tokens,
            "max_gpu_hours": self.max_gpu_hours,
            "max_tokens": self.max_tokens,
            "world_size": self._world_size,
            "stopped_by": self.stopped_by,
            "stop_step": self.stop_step,
            "stage_start_gpu_hours": self._stage_start_gpu_hours,
            "parent_gpu_hours": self.parent_gpu_hours,
            "lineage": list(self.ledger.lineage),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._prior_gpu_hours = float(state_dict["gpu_hours"])
        self._prior_tokens = int(state_dict.get("tokens", 0))
        self._stage_start_gpu_hours = float(state_dict.get("stage_start_gpu_hours", 0.0))
        parent = state_dict.get("parent_gpu_hours")
        self.parent_gpu_hours = None if parent is None else float(parent)
        self._restored = True
        lineage = state_dict.get("lineage")
        self._resume_state = {
            "gpu_hours": self._prior_gpu_hours,
            "tokens": self._prior_tokens,
            "lineage": [str(item) for item in lineage] if isinstance(lineage, list) else [],
        }

    #: The budget state stored in a checkpoint (:func:`slamming.callbacks.budget_ledger.read_consumed`).
    read_consumed = staticmethod(read_consumed)
