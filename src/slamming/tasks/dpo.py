"""``DPOAlignment``: direct preference optimisation of a pretrained unit LM (the paper's last stage).

The policy starts from a pretraining result — a slamming checkpoint or an exported folder — and
learns to prefer the chosen completion of each (prompt, chosen, rejected) triple over the rejected
one relative to a frozen reference, the model it started from (sigmoid DPO loss,
:func:`slamming.tasks.losses.dpo_loss`). Chosen and rejected go through one concatenated forward.

The reference is either a frozen copy run live at every step (``reference="live"``) or, by default,
its log-probs computed once per split before training and cached on disk
(:mod:`slamming.tasks.reference`), which saves the second model's memory and a quarter of the FLOPs
of each step.

Validation reports, on held-out triples, the DPO loss and reward accuracy and the *preference
accuracy*: how often the policy gives the chosen completion a higher log-likelihood (given the
prompt) than the rejected one, ties counting one half — ``val/pref_accuracy`` on the summed
log-likelihood DPO itself works with, ``val/pref_accuracy_per_token`` on the mean per unit, as the
pair benchmarks score models. Both are measured before the first step (the pretrained model) and
after the last, and printed.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from slamming.contracts import UnitData
from slamming.errors import SlammingError
from slamming.models.compiling import compile_or_eager
from slamming.models.flops import count_params, transformer_flops_per_token
from slamming.models.loading import load_unit_lm, resolve_newest, weights_fingerprint
from slamming.models.unit_lm import set_dropout
from slamming.speech.tokenizers import check_identity
from slamming.tasks.losses import dpo_loss
from slamming.tasks.preference import concatenated_logprobs
from slamming.tasks.reference import (
    ReferenceKey,
    ReferenceLogps,
    compute_reference_logps,
    load_or_build_reference,
    load_reference,
)
from slamming.tasks.schedules import check_schedule
from slamming.tasks.stage import OPTIMIZERS, UnitLMStage, check_max_nonfinite_steps

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


def _pair_accuracy(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Share of pairs where ``positive`` wins: 1 per win, 0.5 per tie (the pair benchmarks' rule)."""
    return ((positive > negative).float() + 0.5 * (positive == negative).float()).mean()


class DPOAlignment(UnitLMStage):
    """Align a unit LM with DPO on preference triples.

    Args:
        init_from: The pretrained model: a slamming ``.ckpt`` or an exported model folder. Its
            tokeniser, tokeniser folder and consumed compute budget come with it. A glob pattern
            (``runs/tiny/version_*/checkpoints/last.ckpt``) picks its newest match.
        num_units: K of the data, linked from the data module (checked against the model).
        context_length: Linked from the data module (checked against the model's positions).
        beta: DPO temperature β (the paper: 0.1).
        dropout: Every dropout probability of the policy while it trains (0: none, as the paper's
            models have none; a model pretrained with dropout would otherwise score its chosen and
            rejected sides with random masks against a reference scored without).
        label_smoothing: Conservative-DPO smoothing ε (0: the paper's plain sigmoid loss).
        rpo_alpha: Weight α of a negative log-likelihood term on the chosen completions, added to the
            DPO loss (RPO, Pang et al. 2024; TRL's ``rpo_alpha``): ``loss = dpo + α · NLL``, the NLL
            the mean over the chosen completions' units. DPO alone lowers the chosen side too (both
            log-likelihoods fall while their gap grows); the NLL term keeps the chosen endings likely.
            0: the paper's plain DPO.
        reference: ``precomputed`` (log-probs cached on disk, the default) or ``live``.
        reference_cache: File of the precomputed train log-probs (``.val`` is inserted before the
            suffix for the validation split); None: ``<reference_cache_dir>/<key>-<split>.pt``.
        reference_cache_dir: Folder of the automatic cache files.
        reference_batch_size: Triples per batch of the precompute (no gradients, so larger than
            training's); None: twice the data's batch size.
        optimizer: ``adamw`` or ``adamw8bit``.
        lr: Peak learning rate (the paper: 5e-5).
        warmup_steps: Linear warmup steps (the authors' runs: 100).
        schedule: ``inverse_sqrt`` (the paper; Hugging Face's ``get_inverse_sqrt_schedule``, whose
            time scale is the warmup: ``lr · step / warmup_steps``, so 0 for the first step, then
            ``lr · sqrt(warmup_steps / step)``),
            ``cosine`` (warmup, then cosine to ``min_lr`` at ``trainer.estimated_stepping_batches``,
            a horizon ``budget.size_schedule`` can move) or ``constant`` (warmup, then flat).
        min_lr: The ``cosine`` schedule's final learning rate.
        weight_decay: AdamW weight decay (not on biases, norms and embeddings).
        betas: AdamW betas.
        eps: AdamW epsilon.
        dtype: Cast the loaded weights (``float32``, ``bfloat16``); None keeps the stored dtype.
            ``float32`` with ``trainer.precision: bf16-mixed`` trains fp32 master weights under bf16
            autocast even from a bf16 pretraining checkpoint (the authors' DPO runs).
        attn_implementation: ``auto``, ``sdpa``, ``eager``, ``flash_attention_2`` or ``flex_attention``
            (see :mod:`slamming.models.attention`); None keeps the model's.
        compile: Wrap the policy in ``torch.compile``.
        export: Save the final policy to ``<log_dir>/hf_model``.
        progress: Show a progress bar while precomputing the reference.
        max_nonfinite_steps: Optimizer steps with a NaN/Inf loss or gradient norm that may be
            skipped (no update; counted over the run, resumes included) before the fit stops; 0
            stops at the first (see :mod:`slamming.tasks.stage`).
    """

    def __init__(
        self,
        init_from: str,
        num_units: int | None = None,
        context_length: int = 1024,
        beta: float = 0.1,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        rpo_alpha: float = 0.0,
        reference: Literal["precomputed", "live"] = "precomputed",
        reference_cache: str | None = None,
        reference_cache_dir: str = "data/reference",
        reference_batch_size: int | None = None,
        optimizer: str = "adamw",
        lr: float = 5e-5,
        warmup_steps: int = 100,
        schedule: str = "inverse_sqrt",
        min_lr: float = 0.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        compile: bool = False,
        export: bool = True,
        progress: bool = True,
        max_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise SlammingError(f"model.optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if reference not in ("precomputed", "live"):
            raise SlammingError(f"model.reference must be 'precomputed' or 'live', got {reference!r}")
        if not beta > 0:
            raise SlammingError(f"model.beta must be > 0, got {beta}")
        if not 0.0 <= dropout < 1.0:
            raise SlammingError(f"model.dropout must be in [0, 1), got {dropout}")
        if not rpo_alpha >= 0.0:
            raise SlammingError(f"model.rpo_alpha must be >= 0, got {rpo_alpha}")
        check_schedule(schedule, lr=lr, min_lr=min_lr)
        if warmup_steps < 0:
            raise SlammingError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        check_max_nonfinite_steps(max_nonfinite_steps)
        self.save_hyperparameters()
        #: ``init_from`` with a glob resolved to its newest match.
        self.source = resolve_newest(init_from)
        loaded = load_unit_lm(self.source, dtype=dtype, attn_implementation=attn_implementation)
        if num_units is not None and num_units != loaded.num_units:
            raise SlammingError(
                f"the preference data has K={num_units} units but {init_from} reads K={loaded.num_units}: "
                "tokenise the preferences with the model's own tokeniser"
            )
        max_pos = getattr(loaded.model.config, "max_position_embeddings", None)
        if max_pos is not None and max_pos < context_length:
            raise SlammingError(
                f"{init_from} has max_position_embeddings {max_pos}, below data.context_length {context_length}"
            )
        set_dropout(loaded.model, dropout)
        self.model = loaded.model.train()
        self.num_units = loaded.num_units
        self.tokenizer_identity = loaded.tokenizer
        self.tokenizer_dir = str(loaded.tokenizer_dir) if loaded.tokenizer_dir else None
        #: The parent run's ComputeBudget state: ComputeBudget starts this stage from it.
        self.parent_budget = loaded.budget
        #: Names the reference weights (= the policy before any DPO step) for the log-prob cache.
        self.reference_fingerprint = weights_fingerprint(self.model)
        # The live reference is kept out of the module registry: it is not trained, not moved by
        # Lightning, and not saved in checkpoints (a resumed run reloads it from `init_from`).
        self.__dict__["_reference"] = (
            copy.deepcopy(self.model).eval().requires_grad_(False) if reference == "live" else None
        )
        self._reference_logps: dict[str, ReferenceLogps] = {}
        self.initial_val: dict[str, float] | None = None
        self.final_val: dict[str, float] | None = None
        cfg = self.model.config
        per_token = transformer_flops_per_token(
            count_params(self.model, exclude_embeddings=True),
            cfg.num_hidden_layers,
            cfg.hidden_size,
            context_length,
            causal=True,
        )
        # A live reference adds a forward (2N) to the policy's forward + backward (6N).
        self.flops_per_token = per_token * (4 / 3 if reference == "live" else 1.0)

    # -- steps -------------------------------------------------------------------------------------------
    def _reference_for(self, batch: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self._reference is not None:
            with torch.no_grad():
                return concatenated_logprobs(self._reference, batch["chosen"], batch["rejected"])  # type: ignore[return-value]
        return self._reference_logps[split].lookup(batch["index"])

    def _evaluate(self, batch: dict[str, Any], split: str) -> dict[str, torch.Tensor]:
        pc, pr, nc, nr = concatenated_logprobs(
            self.model, batch["chosen"], batch["rejected"], with_counts=True
        )
        rc, rr = self._reference_for(batch, split)
        loss, chosen_rewards, rejected_rewards = dpo_loss(
            pc, pr, rc, rr, beta=self.hparams.beta, label_smoothing=self.hparams.label_smoothing
        )
        mean_c, mean_r = pc.detach() / nc.clamp(min=1), pr.detach() / nr.clamp(min=1)
        nll = -pc.sum() / nc.sum().clamp(min=1)
        total = loss + self.hparams.rpo_alpha * nll if self.hparams.rpo_alpha else loss
        return {
            "loss": total,
            "dpo_loss": loss.detach(),
            "nll/chosen": nll.detach(),
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean(),
            "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
            "logps/chosen": pc.detach().mean(),
            "logps/rejected": pr.detach().mean(),
            "pref_accuracy": _pair_accuracy(pc.detach(), pr.detach()),
            "pref_accuracy_per_token": _pair_accuracy(mean_c, mean_r),
        }

    @staticmethod
    def _num_tokens(batch: dict[str, Any]) -> torch.Tensor:
        return batch["chosen"]["attention_mask"].sum() + batch["rejected"]["attention_mask"].sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        metrics = self._evaluate(batch, "train")
        size = int(batch["index"].shape[0])
        self.log("train/loss", metrics["loss"], prog_bar=True, batch_size=size)
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:
            for name, value in metrics.items():
                if not name.startswith(("loss", "pref_accuracy")):
                    self.log(f"train/{name}", value, batch_size=size)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return {"loss": metrics["loss"], "num_tokens": self._num_tokens(batch)}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        metrics = self._evaluate(batch, "val")
        size = int(batch["index"].shape[0])
        for name, value in metrics.items():
            self.log(f"val/{name}", value, batch_size=size, sync_dist=True, prog_bar=name == "pref_accuracy")

    # -- reference -----------------------------------------------------------------------------------------
    def _cache_path(self, split: str, key: ReferenceKey) -> Path:
        if self.hparams.reference_cache:
            path = Path(self.hparams.reference_cache)
            return path if split == "train" else path.with_suffix(f".{split}{path.suffix or '.pt'}")
        return Path(self.hparams.reference_cache_dir) / f"{key.digest}-{split}.pt"

    def _prepare_reference(self) -> None:
        """Load or compute the reference log-probs of every split (rank 0 computes; all load)."""
        datamodule = self.trainer.datamodule
        trainer = self.trainer
        for split in SPLITS:
            n = datamodule.num_triples(split)
            if n == 0:
                continue
            key = ReferenceKey(
                self.reference_fingerprint, datamodule.data_fingerprint(split), str(trainer.precision)
            )
            path = self._cache_path(split, key)
            cached, failure = True, None
            if trainer.is_global_zero:
                # Under the cache's build lock: another run building the same cache is waited for.
                try:
                    logps, built = load_or_build_reference(
                        path, key, n, functools.partial(self._compute_reference, split, n)
                    )
                except SlammingError as err:  # raised after the barrier, which the other ranks wait at
                    failure = err
                else:
                    cached = not built
                    if built:
                        rank_zero_info(
                            f"reference log-probs of {n} {split} triples: {logps.tokens} tokens in "
                            f"{logps.seconds:.1f} s ({logps.tokens / max(logps.seconds, 1e-9):.0f} tokens/s), "
                            f"cached in {path}"
                        )
            trainer.strategy.barrier("slamming-reference")
            if failure is not None:
                raise failure
            self._reference_logps[split] = load_reference(path, key, n)
            if cached:
                rank_zero_info(f"using the reference log-probs of {n} {split} triples cached in {path}")

    def _compute_reference(self, split: str, n: int) -> ReferenceLogps:
        """Run the reference over the ``n`` triples of ``split`` (the precompute)."""
        datamodule = self.trainer.datamodule
        batch_size = self.hparams.reference_batch_size or 2 * datamodule.batch_size
        return compute_reference_logps(
            self._reference_source(),
            datamodule.reference_loader(split, batch_size),
            n,
            self.device,
            self.trainer.precision_plugin.forward_context,
            desc=f"Reference log-probs ({split})",
            progress=self.hparams.progress,
        )

    def _reference_source(self) -> torch.nn.Module:
        """The reference model: the policy itself before its first step, else a fresh copy of it."""
        if self.trainer.ckpt_path is None and self.trainer.global_step == 0:
            return self.hf_model
        loaded = load_unit_lm(
            self.source, dtype=self.hparams.dtype, attn_implementation=self.hparams.attn_implementation
        )
        return loaded.model.to(self.device, dtype=next(self.model.parameters()).dtype)

    # -- hooks -----------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.hparams.compile:  # eager with one logged line where no compiler is installed
            self.model = compile_or_eager(self.model, self.trainer.strategy.root_device.type)

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        data = datamodule if isinstance(datamodule, UnitData) else None
        data_identity = data.tokenizer if data is not None else None
        if data_identity is not None and self.tokenizer_identity is not None:
            check_identity(
                self.tokenizer_identity, data_identity, what="preference data (vs the model's tokeniser)"
            )
        data_units = data.num_units if data is not None else None
        if data_units is not None and data_units != self.num_units:
            raise SlammingError(
                f"the preference data has K={data_units} units but the model reads K={self.num_units}"
            )
        if self._reference is not None:
            param = next(self.model.parameters())
            self._reference.to(device=param.device, dtype=param.dtype)
        else:
            self._prepare_reference()

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0 and self.initial_val is None:
            with self._outside_budget():
                self.initial_val = self._validate_now()
            if self.initial_val:
                rank_zero_info(
                    f"before DPO (the pretrained model): held-out preference accuracy "
                    f"{self.initial_val['pref_accuracy']:.4f} (per unit {self.initial_val['pref_accuracy_per_token']:.4f}), "
                    f"DPO loss {self.initial_val['dpo_loss']:.4f}"
                )

    def on_train_end(self) -> None:
        self.final_val = self._validate_now()
        if self.final_val and self.initial_val:
            before, after = self.initial_val, self.final_val
            rank_zero_info(
                f"held-out preference accuracy ({after['pairs']:.0f} pairs): {before['pref_accuracy']:.4f} pretrained "
                f"-> {after['pref_accuracy']:.4f} after DPO (step {self.trainer.global_step}); per unit "
                f"{before['pref_accuracy_per_token']:.4f} -> {after['pref_accuracy_per_token']:.4f}"
            )
        super().on_train_end()

    @torch.no_grad()
    def _validate_now(self) -> dict[str, float] | None:
        """Score the whole validation set now and log it at the current step (pair-weighted means)."""
        loaders = self.trainer.val_dataloaders
        if (
            loaders is None
            or (isinstance(loaders, list) and not loaders)
            or "val" not in self._ready_splits()
        ):
            return None
        was_training = self.training
        self.eval()
        sums: dict[str, torch.Tensor] = {}
        pairs = torch.zeros((), device=self.device)
        for batch in loaders:
            batch = self.trainer.strategy.batch_to_device(batch)
            with self.trainer.precision_plugin.forward_context():
                metrics = self._evaluate(batch, "val")
            size = batch["index"].shape[0]
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value.float() * size
            pairs += size
        self.train(was_training)
        pairs = self.trainer.strategy.reduce(pairs, reduce_op="sum")
        result = {
            name: float(self.trainer.strategy.reduce(total, reduce_op="sum") / pairs)
            for name, total in sums.items()
        }
        if self.logger is not None:
            self.logger.log_metrics({f"val/{k}": v for k, v in result.items()}, step=self.trainer.global_step)
        return {**result, "pairs": float(pairs)}

    def _ready_splits(self) -> set[str]:
        return set(SPLITS) if self._reference is not None else set(self._reference_logps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        model = self.hf_model
        checkpoint["slamming"] = {
            "hf_config": model.config.to_dict(),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "attn_implementation": model.config._attn_implementation,
            "tokenizer": self.tokenizer_identity,
            "tokenizer_dir": self.tokenizer_dir,
            "num_units": self.num_units,
            "init_from": self.source,
            "reference_fingerprint": self.reference_fingerprint,
            "initial_val": self.initial_val,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        extra = checkpoint.get("slamming", {})
        if extra.get("reference_fingerprint", self.reference_fingerprint) != self.reference_fingerprint:
            raise SlammingError(
                f"this DPO checkpoint started from other weights than {self.hparams.init_from} "
                "(reference fingerprint differs); resume with the same model.init_from"
            )
        self.initial_val = extra.get("initial_val")
