"""``NextUnitPretraining``: next-unit prediction over packed, document-masked windows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from slamming.contracts import TokenizerFolder, UnitData
from slamming.errors import ConfigError
from slamming.models.attention import PackedMasks, varlen_boundaries
from slamming.models.compiling import compile_or_eager
from slamming.models.flops import count_params, transformer_flops_per_token
from slamming.models.unit_lm import UnitLMBuilder
from slamming.speech.tokenizers import check_identity
from slamming.tasks.losses import next_unit_loss
from slamming.tasks.schedules import check_schedule
from slamming.tasks.stage import OPTIMIZERS, UnitLMStage, check_max_nonfinite_steps

log = logging.getLogger(__name__)


class NextUnitPretraining(UnitLMStage):
    """Pretrain a unit LM on next-unit prediction.

    The loss is the mean cross-entropy over real targets only (targets that cross a document
    boundary and padding are ignored). Attention never crosses documents: with ``sdpa``/``eager`` a
    block-diagonal causal mask is built on the device from the batch's segment ids; with
    ``flash_attention_2`` the restarting position ids give the varlen boundaries.

    Args:
        backbone: builds the Hugging Face causal LM (architecture and initialisation).
        num_units: K, linked from the data (the model's vocabulary is K + 2).
        context_length: linked from the data; the model's maximum positions must cover it.
        optimizer: ``adamw`` (torch, fused on CUDA) or ``adamw8bit`` (bitsandbytes 8-bit AdamW).
        lr: peak learning rate.
        min_lr: the cosine schedule's final learning rate.
        warmup_ratio: fraction of the optimizer steps spent in linear warmup.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        betas: AdamW betas.
        eps: AdamW epsilon.
        schedule: ``cosine`` (warmup, then cosine to ``min_lr``), ``constant`` (warmup, then flat)
            or ``inverse_sqrt`` (Hugging Face's, with ``ceil(warmup_ratio · total)`` warmup steps as
            the time scale; ``min_lr`` unused), as in the paper's early optimiser comparisons.
        compile: wrap the model in ``torch.compile``.
        export: at the end of ``fit``, save the model with ``save_pretrained`` to
            ``<log_dir>/hf_model`` (loadable with plain ``transformers``).
        max_nonfinite_steps: optimizer steps with a NaN/Inf loss or gradient norm that may be skipped
            (no update; counted over the run, resumes included) before the fit stops; 0 stops at
            the first (see :mod:`slamming.tasks.stage`).
    """

    def __init__(
        self,
        backbone: UnitLMBuilder,
        num_units: int = 500,
        context_length: int = 1024,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        min_lr: float = 5e-5,
        warmup_ratio: float = 0.01,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        schedule: str = "cosine",
        compile: bool = False,
        export: bool = True,
        max_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"model.optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
        check_schedule(schedule, warmup_ratio=warmup_ratio, lr=lr, min_lr=min_lr)
        check_max_nonfinite_steps(max_nonfinite_steps)
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.model = backbone.build(num_units)
        max_pos = getattr(self.model.config, "max_position_embeddings", None)
        if max_pos is not None and max_pos < context_length:
            raise ConfigError(
                f"the model's max_position_embeddings ({max_pos}) is below data.context_length ({context_length}); "
                "lower data.context_length or raise the backbone's max_position_embeddings"
            )
        self.tokenizer_identity: dict[str, Any] | None = None
        self.tokenizer_dir: str | None = None
        self.initial_val_loss: float | None = None
        self.packed_masks = PackedMasks()
        cfg = self.model.config
        self.flops_per_token = transformer_flops_per_token(
            count_params(self.model, exclude_embeddings=True),
            cfg.num_hidden_layers,
            cfg.hidden_size,
            context_length,
            causal=True,
        )

    # -- forward -----------------------------------------------------------------------------------
    @property
    def attention(self) -> str:
        """The attention implementation the model runs (see :mod:`slamming.models.attention`)."""
        return self.hf_model.config._attn_implementation

    @property
    def uses_varlen_attention(self) -> bool:
        """Whether the attention kernel isolates documents from position ids alone (flash-attn)."""
        return self.attention == "flash_attention_2"

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, L, V)`` of a packed batch, documents isolated."""
        if self.uses_varlen_attention:
            return self.forward_flattened(batch)
        mask = self.packed_masks(batch["segment_ids"], self.attention, self.hf_model.dtype)
        return self.model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=mask,
            use_cache=False,
        ).logits

    def forward_flattened(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The varlen path: the B windows as one row whose position ids restart at every piece.

        transformers (4.57) derives flash-attention's sequence boundaries from restarting position
        ids only for a batch of one row, so the windows are laid end to end (each starts at position
        0, so window boundaries are boundaries too) and the logits are folded back to ``(B, L, V)``.
        For flash-attn the boundaries are handed over precomputed (:func:`varlen_boundaries`), so a
        compiled model sees the same shapes at every step instead of recompiling as they move.
        """
        b, length = batch["input_ids"].shape
        extra = varlen_boundaries(batch["position_ids"]) if self.uses_varlen_attention else {}
        logits = self.model(
            input_ids=batch["input_ids"].reshape(1, b * length),
            position_ids=batch["position_ids"].reshape(1, b * length),
            use_cache=False,
            **extra,
        ).logits
        return logits.view(b, length, -1)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return next_unit_loss(self(batch), batch["labels"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, num_tokens = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=int(num_tokens))
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # each log call costs ~1 ms
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return {"loss": loss, "num_tokens": num_tokens}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, num_tokens = self._step(batch)
        # batch_size = tokens makes Lightning's epoch mean token-weighted.
        self.log("val/loss", loss, prog_bar=True, batch_size=int(num_tokens), sync_dist=True)
        return loss

    # -- hooks ---------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.hparams.compile:  # the strategy's device: the module may not be on it yet
            self.model = compile_or_eager(self.model, self.trainer.strategy.root_device.type)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        tokenizer_dir = datamodule.tokenizer_dir if isinstance(datamodule, TokenizerFolder) else None
        if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
            # Recorded so that later stages (DPO, evaluation) tokenise new speech the same way.
            self.tokenizer_dir = str(Path(tokenizer_dir).resolve())
        data_identity = datamodule.tokenizer if isinstance(datamodule, UnitData) else None
        if data_identity is None:
            return
        if self.tokenizer_identity is None:
            self.tokenizer_identity = dict(data_identity)
        else:
            check_identity(
                self.tokenizer_identity, data_identity, what="training data (vs the model's tokeniser)"
            )

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0 and self.initial_val_loss is None:
            with self._outside_budget():
                self.initial_val_loss = self._initial_validation()

    @torch.no_grad()
    def _initial_validation(self) -> float | None:
        """Validation loss of the untrained model, logged at step 0 (the curve's starting point)."""
        loaders = self.trainer.val_dataloaders
        if loaders is None or (isinstance(loaders, list) and not loaders):
            return None
        limit = self.trainer.limit_val_batches
        was_training = self.training
        self.eval()
        total, count = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        for i, batch in enumerate(loaders):
            if isinstance(limit, int) and i >= limit:
                break
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.trainer.precision_plugin.forward_context():
                loss, n = self._step(batch)
            total += loss.float() * n
            count += n
        self.train(was_training)
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        count = self.trainer.strategy.reduce(count, reduce_op="sum")
        value = float(total / count.clamp(min=1))
        if self.logger is not None:
            self.logger.log_metrics({"val/loss": value}, step=0)
        rank_zero_info(f"initial validation loss: {value:.4f}")
        return value

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["slamming"] = {
            "backbone": self.backbone.to_dict(),
            "tokenizer": self.tokenizer_identity,
            "tokenizer_dir": self.tokenizer_dir,
            "num_units": self.hparams.num_units,
            "initial_val_loss": self.initial_val_loss,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        extra = checkpoint.get("slamming", {})
        self.tokenizer_identity = extra.get("tokenizer")
        self.tokenizer_dir = extra.get("tokenizer_dir")
        self.initial_val_loss = extra.get("initial_val_loss")
