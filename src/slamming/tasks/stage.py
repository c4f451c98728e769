"""What every training stage of a unit LM shares: its optimizer, final checkpoint and export.

Pretraining (:mod:`slamming.tasks.pretrain`) and DPO (:mod:`slamming.tasks.dpo`) both train a
``transformers`` causal LM held in ``self.model`` with AdamW, end with their final weights in a
checkpoint, and export those weights as a plain Hugging Face folder that records the tokeniser (and
its folder) and the compute budget consumed, so the next stage can start from either.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch.optim.lr_scheduler import LambdaLR

from slamming.callbacks.budget import ComputeBudget
from slamming.contracts import BenchmarkScores
from slamming.models.card import TRAINING_KEY
from slamming.models.unit_lm import export_hf
from slamming.tasks.schedules import make_schedule

OPTIMIZERS = ("adamw", "adamw8bit")


class UnitLMStage(pl.LightningModule):
    """Base of the LightningModules that train ``self.model``, a ``transformers`` causal LM.

    Subclasses set ``self.model``, ``self.tokenizer_identity`` and ``self.tokenizer_dir`` and save
    ``optimizer``, ``lr``, ``weight_decay``, ``betas``, ``eps`` and ``export`` as hyperparameters.
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

    # -- end of training ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._last_saved_step = self.trainer.global_step
        # For the model card of a later `slamming export` of this checkpoint.
        checkpoint[TRAINING_KEY] = self.training_record()

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
