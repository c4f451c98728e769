"""What every training stage of a unit LM shares: its optimizer, final checkpoint and export.

Pretraining (:mod:`slamming.tasks.pretrain`) and DPO (:mod:`slamming.tasks.dpo`) both train a
``transformers`` causal LM held in ``self.model`` with AdamW, end with their final weights in a
checkpoint, and export those weights as a plain Hugging Face folder that records the tokeniser (and
its folder) and the compute budget consumed, so the next stage can start from either.

Both also share the non-finite guard. After every backward pass, before the optimizer touches the
weights, the step's loss and total gradient norm are checked (one small device sync per optimizer
step; under DDP the verdict is summed over the ranks, so every rank decides alike). A NaN or Inf
stops the fit with one line naming the step, the value and the newest checkpoint on disk
(:class:`NonFiniteError`), before any update, so the weights, the optimizer state and everything
saved afterwards stay finite. ``max_nonfinite_steps`` (N, default 0) allows skipping up to N such
steps in a run instead: a skipped step leaves weights and optimizer state untouched (no optimizer
step, gradients cleared) and still counts as a step. Under a ``GradScaler`` (``16-mixed``) Inf
gradients are the scaler's business (it skips those steps and lowers its scale), so only the loss is
checked there. As a last line of defence, no checkpoint and no export is ever written whose weights
or optimizer state hold a NaN or Inf.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch.optim.lr_scheduler import LambdaLR

from slamming.callbacks.budget import ComputeBudget
from slamming.contracts import BenchmarkScores
from slamming.errors import ConfigError, SlammingError
from slamming.models.card import TRAINING_KEY
from slamming.models.unit_lm import export_hf
from slamming.tasks.schedules import make_schedule

OPTIMIZERS = ("adamw", "adamw8bit")
#: Checkpoint key of the number of non-finite steps skipped so far (so a resumed run keeps counting).
NONFINITE_KEY = "slamming_nonfinite_skipped"
#: What the non-finite messages name as the last good checkpoint when the run saved none.
NO_CHECKPOINT = "none written yet"

log = logging.getLogger(__name__)


class NonFiniteError(SlammingError):
    """A NaN or Inf loss, gradient norm or weight: the fit stops (one line) before it spreads."""


class _SkippedStep(Exception):
    """Leaves the optimizer's closure after a non-finite step that is skipped (caught by the stage)."""


def check_max_nonfinite_steps(value: int) -> int:
    """Validate the ``max_nonfinite_steps`` hyperparameter of a stage.

    Raises:
        ConfigError: not an integer >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"model.max_nonfinite_steps must be an integer >= 0 (0: stop at the first NaN/Inf step), got {value!r}"
        )
    return value


def nonfinite_tensors(named: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``named`` that hold a NaN or an Inf.

    Nested dicts, lists and tuples are walked (an optimizer's ``state_dict``); names are joined with
    dots. One device sync per device, however many tensors.
    """
    found: list[tuple[str, torch.Tensor]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                found.append((prefix, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{prefix}.{i}" if prefix else str(i), item)

    walk("", named)
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, tensor) in enumerate(found):
        by_device.setdefault(tensor.device, []).append(i)
    bad: list[str] = []
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(found[i][1]).all() for i in indices])
        if bool(flags.all()):
            continue
        bad.extend(found[i][0] for i, ok in zip(indices, flags.tolist(), strict=True) if not ok)
    return bad


def _fmt(value: float | None) -> str:
    return "not checked" if value is None else f"{value:.6g}"


class UnitLMStage(pl.LightningModule):
    """Base of the LightningModules that train ``self.model``, a ``transformers`` causal LM.

    Subclasses set ``self.model``, ``self.tokenizer_identity`` and ``self.tokenizer_dir`` and save
    ``optimizer``, ``lr``, ``weight_decay``, ``betas``, ``eps``, ``export`` and ``max_nonfinite_steps``
    (checked with :func:`check_max_nonfinite_steps`) as hyperparameters; an ``on_load_checkpoint`` of
    theirs calls this one (it restores the count of skipped non-finite steps).
    """

    model: torch.nn.Module
    tokenizer_identity: dict[str, Any] | None = None
    tokenizer_dir: str | None = None
    #: The parent run's budget state (DPO after pretraining); None for a first stage.
    parent_budget: dict[str, Any] | None = None

    @property
    def hf_model(self) -> torch.nn.Module:
        """The plain ``transformers`` model (unwrapped from ``torch.compile``)."""
        return getattr(self.model, "_orig_mod", self.model)

    def _outside_budget(self) -> contextlib.AbstractContextManager[None]:
        """A block whose time the compute budget counts as validation (see ComputeBudget.validation_time)."""
        budget = next((cb for cb in self.trainer.callbacks if isinstance(cb, ComputeBudget)), None)
        return budget.validation_time() if budget is not None else contextlib.nullcontext()

    # -- optimisation ------------------------------------------------------------------------------------
    def _param_groups(self) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "embed" in name or "norm" in name else decay).append(p)
        return [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW (fused on CUDA) or bitsandbytes' 8-bit AdamW; no decay on biases, norms, embeddings."""
        hp = self.hparams
        groups = self._param_groups()
        if hp.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, fused=fused or None)

    def schedule_warmup(self) -> dict[str, Any]:
        """The stage's warmup for :func:`make_schedule`: a number of steps (DPO's ``warmup_steps``, the
        authors' 100) or a fraction of the run (pretraining's ``warmup_ratio``, the paper's 1 %)."""
        hp = self.hparams
        return (
            {"warmup_steps": hp.warmup_steps} if "warmup_steps" in hp else {"warmup_ratio": hp.warmup_ratio}
        )

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimizer and the ``schedule`` hyperparameter's learning-rate curve, stepped per optimizer step.

        The run's length (``estimated_stepping_batches``) is asked for only when the curve needs it:
        a cosine's horizon or a warmup given as a fraction of the run.
        """
        hp = self.hparams
        opt = self._make_optimizer()
        warmup = self.schedule_warmup()
        needs_total = hp.schedule == "cosine" or "warmup_ratio" in warmup
        total = max(int(self.trainer.estimated_stepping_batches), 1) if needs_total else None
        schedule = make_schedule(
            hp.schedule, total_steps=total, min_ratio=hp.min_lr / hp.lr if hp.lr else 0.0, **warmup
        )
        sched = LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}

    def resize_schedule(self, total_steps: int) -> None:
        """Move the end of the learning-rate schedule to ``total_steps`` optimizer steps.

        Called by :class:`~slamming.callbacks.budget.ComputeBudget` with ``size_schedule`` on, so
        that the schedule reaches its floor when the compute budget runs out.
        """
        scheduler = self.lr_schedulers()
        schedule = scheduler.lr_lambdas[0]
        schedule.resize(total_steps)
        # Apply the new curve to the current step at once.
        for group, base, factor in zip(
            scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(scheduler.last_epoch)

    # -- the non-finite guard ------------------------------------------------------------------------------
    #: The loss of the optimizer step being accumulated (on the device), until the step's check.
    _window_loss: torch.Tensor | None = None
    #: Non-finite steps skipped so far in this run (saved in checkpoints, so a resume keeps counting).
    nonfinite_skipped: int = 0

    @property
    def max_nonfinite_steps(self) -> int:
        """The ``max_nonfinite_steps`` hyperparameter (0 for checkpoints made before it existed)."""
        return int(self.hparams.get("max_nonfinite_steps", 0))

    def _grad_scaler(self) -> Any:
        """The precision plugin's ``GradScaler`` (``16-mixed``), or None."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Add a micro-batch's loss to its optimizer step's (Lightning divides it by the accumulation)."""
        loss = loss.detach().float()
        self._window_loss = loss if self._window_loss is None else self._window_loss + loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Check the step's loss and total gradient norm before the optimizer changes anything.

        Runs after the backward pass (after unscaling under a ``GradScaler``) and before gradient
        clipping and the update. One device sync; under DDP one summed flag, so every rank decides
        alike (the gradients are all-reduced already, a rank's loss is not).

        Raises:
            NonFiniteError: a NaN or Inf beyond the ``max_nonfinite_steps`` allowance.
        """
        loss, self._window_loss = self._window_loss, None
        norm = None
        checks = [loss] if loss is not None else []
        if self._grad_scaler() is None:  # under a scaler, Inf gradients are the scaler's to skip
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            if grads:
                norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
                checks.append(norm)
        if not checks:
            return
        bad = torch.stack([(~torch.isfinite(c.reshape(()))).to(self.device) for c in checks]).any().float()
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if not bool(bad):
            return
        loss_value = None if loss is None else float(loss)
        norm_value = None if norm is None else float(norm)
        step = self.trainer.global_step
        values = f"loss {_fmt(loss_value)}, gradient norm {_fmt(norm_value)}"
        if self.nonfinite_skipped < self.max_nonfinite_steps:
            self.nonfinite_skipped += 1
            optimizer.zero_grad(set_to_none=True)
            if self.trainer.is_global_zero:
                log.warning(
                    f"skipped step {step}: non-finite {values} (weights and optimizer state unchanged; "
                    f"{self.nonfinite_skipped} of model.max_nonfinite_steps={self.max_nonfinite_steps} skips used)"
                )
            raise _SkippedStep
        skipped = (
            f" ({self.nonfinite_skipped} earlier non-finite steps skipped, all that "
            f"model.max_nonfinite_steps={self.max_nonfinite_steps} allows)"
            if self.max_nonfinite_steps
            else ""
        )
        last = self.last_good_checkpoint()
        fix = (
            "start again with a lower model.lr"
            if last == NO_CHECKPOINT
            else "resume from it (--ckpt_path) with a lower model.lr"
        )
        raise NonFiniteError(
            f"non-finite training step at step {step}: {values}{skipped}; stopped before updating the weights, "
            f"nothing saved after it; last good checkpoint: {last}; {fix}, or set model.max_nonfinite_steps "
            "to skip up to N such steps"
        )

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Any = None,
    ) -> None:
        """Lightning's optimizer step, left without an update when the non-finite guard skips it."""
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        except _SkippedStep:
            self._release_scaler(getattr(optimizer, "optimizer", optimizer))

    def _release_scaler(self, optimizer: torch.optim.Optimizer) -> None:
        """After a skipped step under a ``GradScaler``: close the step it unscaled (``update``).

        Lightning unscales before the checks unless the optimizer unscales in its own step (fused
        AdamW); an unscaled optimizer must see ``scaler.update()`` before the next step, which also
        lowers the scale when the gradients held an Inf, as a step the scaler skipped itself would.
        """
        scaler = self._grad_scaler()
        if scaler is None:
            return
        from torch.amp.grad_scaler import OptState

        state = scaler._per_optimizer_states.get(id(optimizer))
        if state is not None and state["stage"] is OptState.UNSCALED:
            scaler.update()

    def last_good_checkpoint(self) -> str:
        """The newest ``.ckpt`` in the run's checkpoint folders, or :data:`NO_CHECKPOINT`.

        Every checkpoint the guard let through holds finite weights, so the newest is the last good one.
        """
        trainer = self.trainer
        folders = {
            Path(cb.dirpath)
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, ModelCheckpoint) and cb.dirpath
        }
        if not folders:  # where ComputeBudget saves its stop checkpoint without a ModelCheckpoint
            folders = {Path(trainer.default_root_dir) / "checkpoints"}
        files = [f for folder in folders if folder.is_dir() for f in folder.glob("*.ckpt") if f.is_file()]
        if not files:
            return NO_CHECKPOINT
        return str(max(files, key=lambda f: (f.stat().st_mtime_ns, f.name)))

    def _refuse_nonfinite(self, tensors: dict[str, Any], what: str) -> None:
        """Raise :class:`NonFiniteError` if ``tensors`` (walked as :func:`nonfinite_tensors`) hold a NaN/Inf."""
        bad = nonfinite_tensors(tensors)
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise NonFiniteError(
                f"refusing to {what} at step {self.trainer.global_step}: NaN/Inf in {shown}; nothing written; "
                f"last good checkpoint: {self.last_good_checkpoint()}"
            )

    # -- end of training ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank runs this (with the same weights under DDP) before the file is written.
        self._refuse_nonfinite(
            {
                "state_dict": checkpoint.get("state_dict", {}),
                "optimizer_states": checkpoint.get("optimizer_states", []),
            },
            "save a checkpoint",
        )
        self._last_saved_step = self.trainer.global_step
        checkpoint[NONFINITE_KEY] = self.nonfinite_skipped
        # For the model card of a later `slamming export` of this checkpoint.
        checkpoint[TRAINING_KEY] = self.training_record()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_skipped = int(checkpoint.get(NONFINITE_KEY, 0))

    def training_record(self) -> dict[str, Any]:
        """What this stage knows of its training, for the model card of its export.

        Returns:
            ``objective`` (the class), ``init`` (where the weights started), ``train_data`` and
            ``val_data`` (the data module's corpora, when it names them), ``steps``, ``precision``,
            ``devices``, and ``benchmarks`` (the latest in-training ``BenchmarkEvaluation`` scores:
            ``step``, ``max_pairs``, ``results``) when such a callback ran.
        """
        trainer = self.trainer
        data = getattr(trainer, "datamodule", None)
        record: dict[str, Any] = {
            "objective": type(self).__name__,
            "init": self._origin(),
            "train_data": [str(p) for p in getattr(data, "train_paths", None) or []],
            "val_data": [str(p) for p in getattr(data, "val_paths", None) or []],
            "steps": int(trainer.global_step),
            "precision": str(trainer.precision),
            "devices": int(trainer.world_size),
        }
        check = next((cb for cb in trainer.callbacks if isinstance(cb, BenchmarkScores) and cb.results), None)
        if check is not None:
            record["benchmarks"] = {
                "step": check.scored_step,
                "max_pairs": check.max_pairs,
                "results": check.results,
            }
        return record

    def _origin(self) -> str:
        """Where the weights started: the model a later stage continues, a text LM, or nothing."""
        source = getattr(self, "source", None)  # DPO: the pretrained model it started from
        if source:
            return f"continued from `{source}`"
        backbone = getattr(self, "backbone", None)
        base = getattr(backbone, "base", None)
        if base:
            twist = getattr(backbone, "twist_init", True)
            return (
                f"TWIST init from the text LM `{base}`" if twist else f"random init, architecture of `{base}`"
            )
        return "random init, architecture from a config"

    def on_train_end(self) -> None:
        self._save_final_checkpoint()
        if self.hparams.export:
            # trainer.log_dir broadcasts under DDP: every rank must ask, before the rank-0 export.
            self._export(Path(self.trainer.log_dir or self.trainer.default_root_dir))

    def _save_final_checkpoint(self) -> None:
        """Make sure the final weights are in a checkpoint (``last.ckpt`` beside the others).

        ModelCheckpoint saves on its own schedule, which need not include the last step; the export
        and the summary line refer to the final weights, so they must exist as a checkpoint too. Runs
        on every rank (saving is a collective under DDP).
        """
        callback = self.trainer.checkpoint_callback
        if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
            return
        if getattr(self, "_last_saved_step", None) == self.trainer.global_step:
            return
        path = str(
            Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        )
        self.trainer.save_checkpoint(path)
        callback.last_model_path = path
        rank_zero_info(f"saved the final weights (step {self.trainer.global_step}) to {path}")

    @rank_zero_only
    def _export(self, log_dir: Path) -> None:
        """Export to ``<log_dir>/hf_model``: weights, tokeniser, budget, the paper's sampling, a model card."""
        self._refuse_nonfinite(self.hf_model.state_dict(), f"export the model to {log_dir / 'hf_model'}")
        budget = next((cb for cb in self.trainer.callbacks if isinstance(cb, ComputeBudget)), None)
        out = export_hf(
            self.hf_model,
            log_dir / "hf_model",
            self.tokenizer_identity,
            self.tokenizer_dir,
            budget.state_dict() if budget is not None else None,
            training=self.training_record(),
        )
        self.export_dir = out
        rank_zero_info(f"exported the model to {out} (load it with transformers.AutoModelForCausalLM)")
