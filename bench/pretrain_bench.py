"""One timed repeat of our Lightning fit and of a plain ``transformers.Trainer`` on identical work.

Both sides train the same model (built by :class:`slamming.models.unit_lm.UnitLMBuilder` from the
same seed, so the initial weights are equal) on the same packed batches (the same corpus,
:class:`PackedWindowDataset`, :class:`ResumableSampler` order and :func:`collate_packed`), with the same
loss (:func:`next_unit_loss` over a forward with the 4-D document mask), the same AdamW parameter
groups and hyper-parameters, the same warmup + cosine schedule and gradient clipping at 0.5.

**Timing, identical on both sides.** A clock callback stamps ``time.perf_counter()`` when each
optimizer step has finished (Lightning ``on_train_batch_end``; ``TrainerCallback.on_step_end``), after
the optimizer and scheduler steps. The timed span runs from the stamp of the last warm-up step to
the stamp of the last step, so it holds exactly ``steps`` whole training steps including fetching
their batches and every framework hook. Tokens are the trained targets (labels != -100) of those
steps' batches, counted on the batch each side actually received. Each side also records a CRC of
every batch's ``input_ids`` and every step's loss: equal CRCs prove the same data in the same order,
and matching losses prove the same computation.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from slamming.callbacks.throughput import Throughput
from slamming.data.corpus.format import UnitCorpus
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.data.pretrain.packing import collate_packed, document_attention_mask
from slamming.data.pretrain.windows import PackedWindowDataset
from slamming.data.sampling import ResumableSampler
from slamming.models.unit_lm import UnitLMBuilder
from slamming.tasks.losses import next_unit_loss
from slamming.tasks.pretrain import NextUnitPretraining
from slamming.vocab import IGNORE_INDEX

GRAD_CLIP = 0.5  # the paper's max_grad_norm, used by both sides


@dataclass(frozen=True)
class BenchConfig:
    """Shape of the benchmark model and run (defaults: perf-anchors §8a, the brief's tiny Qwen2)."""

    num_units: int = 100
    layers: int = 4
    hidden: int = 256
    ffn: int = 768
    heads: int = 4
    kv_heads: int = 2
    context: int = 512
    batch_size: int = 8
    warmup_steps: int = 3
    steps: int = 20
    lr: float = 1e-3
    min_lr: float = 5e-5
    seed: int = 0

    @property
    def total_steps(self) -> int:
        """Optimizer steps of one run: warm-up plus timed."""
        return self.warmup_steps + self.steps

    def backbone(self) -> UnitLMBuilder:
        """The model recipe (Qwen2, random init, sdpa attention, fp32)."""
        return UnitLMBuilder(
            config={
                "hidden_size": self.hidden,
                "intermediate_size": self.ffn,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads,
                "max_position_embeddings": self.context,
            },
            rope_theta=10000.0,
        )

    def module(self) -> NextUnitPretraining:
        """Our LightningModule, built from a fixed seed so both sides start from equal weights."""
        torch.manual_seed(self.seed)
        return NextUnitPretraining(
            backbone=self.backbone(),
            num_units=self.num_units,
            context_length=self.context,
            lr=self.lr,
            min_lr=self.min_lr,
            export=False,
        )


@dataclass
class RunRecord:
    """What one side measured in one repeat."""

    side: str
    tokens_per_s: float = 0.0
    timed_s: float = 0.0
    timed_tokens: int = 0
    step_times: list[float] = field(default_factory=list)  # seconds of each timed step
    median_step_tokens_per_s: float = 0.0  # mean tokens per timed step ÷ median step time
    crcs: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    data_wait_frac: float | None = None  # Throughput's perf/data_wait_frac over the timed steps
    fit_summary: dict[str, Any] = field(default_factory=dict)


class StepLedger:
    """Per-step stamps, batch CRCs, token counts and losses, filled by either side's hooks."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.tokens: list[int] = []
        self.crcs: list[int] = []
        self.losses: list[float] = []
        self.threads: set[int] = set()

    def saw_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Record the batch a step receives (before its forward)."""
        self.crcs.append(zlib.crc32(batch["input_ids"].cpu().numpy().tobytes()))
        self.tokens.append(int((batch["labels"] != IGNORE_INDEX).sum()))
        self.threads.add(torch.get_num_threads())

    def fill(self, record: RunRecord, warmup: int) -> RunRecord:
        """Turn the ledger into ``record``'s timed throughput (steps after the warm-up)."""
        if warmup < 1 or len(self.marks) <= warmup:
            raise RuntimeError(
                f"{record.side}: {len(self.marks)} steps ran after {warmup} warm-up steps (need >= 1 each)"
            )
        record.timed_s = self.marks[-1] - self.marks[warmup - 1]
        record.timed_tokens = sum(self.tokens[warmup : len(self.marks)])
        record.tokens_per_s = record.timed_tokens / record.timed_s
        record.step_times = [
            b - a for a, b in zip(self.marks[warmup - 1 : -1], self.marks[warmup:], strict=True)
        ]
        mean_tokens = record.timed_tokens / len(record.step_times)
        record.median_step_tokens_per_s = mean_tokens / statistics.median(record.step_times)
        record.crcs, record.losses, record.threads = self.crcs, self.losses, self.threads
        return record


class LightningClock(Callback):
    """Stamps the end of every optimizer step of a Lightning fit into a :class:`StepLedger`."""

    def __init__(self, ledger: StepLedger) -> None:
        self.ledger = ledger

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.ledger.saw_batch(batch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.ledger.marks.append(time.perf_counter())
        self.ledger.losses.append(float(outputs["loss"]))


class MemoryLogger(Logger):
    """Keeps logged metrics in a list (for Throughput's per-step ``perf/*`` values); writes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyper-parameters are not needed by the benchmark."""


def _timed_wait_frac(rows: list[tuple[int | None, dict[str, float]]], warmup: int) -> float | None:
    """Data-wait fraction over the timed steps from Throughput's logged windows.

    Throughput logs every ``warmup`` steps (so the first window is exactly the warm-up) and once more
    at the end. A window ending at step ``s`` after one ending at ``p`` spans ``n = s - p`` steps
    and ``elapsed = n × perf/step_time`` seconds, of which ``perf/data_wait_frac × elapsed`` waited.
    """
    waits = elapsed = 0.0
    previous = 0
    for step, metrics in rows:
        if step is None or "perf/data_wait_frac" not in metrics:
            continue
        span = (step - previous) * metrics["perf/step_time"]
        if previous >= warmup:
            waits += metrics["perf/data_wait_frac"] * span
            elapsed += span
        previous = step
    return waits / elapsed if elapsed > 0 else None


def run_ours(cfg: BenchConfig, corpus: Path, workdir: Path) -> RunRecord:
    """``lightning.pytorch.Trainer(...).fit(NextUnitPretraining, UnitDataModule)`` with Throughput."""
    ledger, logger = StepLedger(), MemoryLogger()
    # Log windows aligned with the warm-up; logging more often would add overhead the default lacks.
    throughput = Throughput(log_every_n_steps=cfg.warmup_steps, print_summary=False)
    module = cfg.module()
    data = UnitDataModule(
        train=str(corpus), context_length=cfg.context, batch_size=cfg.batch_size, seed=cfg.seed
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=cfg.total_steps,
        gradient_clip_val=GRAD_CLIP,
        logger=logger,
        callbacks=[throughput, LightningClock(ledger)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(workdir),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "few dataloader workers" and similar advice
        trainer.fit(module, datamodule=data)
    record = ledger.fill(RunRecord("ours"), cfg.warmup_steps)
    record.data_wait_frac = _timed_wait_frac(logger.rows, cfg.warmup_steps)
    record.fit_summary = dict(throughput.summary)
    return record


def module_optimizer(module: NextUnitPretraining, total_steps: int) -> tuple[Any, Any]:
    """The optimizer and LR scheduler of ``module.configure_optimizers`` for a ``total_steps`` run.

    Taken from the module itself (not rebuilt here) so the HF side always matches our parameter
    groups, AdamW settings and schedule. ``configure_optimizers`` reads
    ``trainer.estimated_stepping_batches``, which an unattached Lightning Trainer with
    ``max_epochs=-1`` answers with ``max_steps`` without touching any data.
    """
    module.trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        max_steps=total_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    config = module.configure_optimizers()
    module.trainer = None
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def run_hf(cfg: BenchConfig, corpus: Path, workdir: Path) -> RunRecord:
    """A plain ``transformers.Trainer`` doing the same work (see the module docstring)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    ledger = StepLedger()

    class PackedTrainer(Trainer):
        """HF Trainer fed by our sampler, computing our loss with our document mask."""

        def _get_train_sampler(self, train_dataset: Any = None) -> ResumableSampler:
            return ResumableSampler(train_dataset if train_dataset is not None else self.train_dataset)

        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict[str, torch.Tensor],
            return_outputs: bool = False,
            **kwargs: Any,
        ) -> torch.Tensor:
            ledger.saw_batch(inputs)
            mask = document_attention_mask(inputs["segment_ids"])
            logits = model(
                input_ids=inputs["input_ids"],
                position_ids=inputs["position_ids"],
                attention_mask=mask,
                use_cache=False,
            ).logits
            loss, _ = next_unit_loss(logits, inputs["labels"])
            ledger.losses.append(float(loss.detach()))
            return loss

    class HFClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ledger.marks.append(time.perf_counter())

    module = cfg.module()  # same seed, same weights; only its model and optimizer setup are used
    optimizer, scheduler = module_optimizer(module, cfg.total_steps)
    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.total_steps,
        max_grad_norm=GRAD_CLIP,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,  # keep segment_ids: the mask is built from them
        dataloader_pin_memory=False,  # as UnitDataModule on CPU
        seed=cfg.seed,
    )
    dataset = PackedWindowDataset([UnitCorpus(corpus)], cfg.context, None, cfg.seed, shuffle=True)
    trainer = PackedTrainer(
        model=module.model,
        args=args,
        train_dataset=dataset,
        data_collator=collate_packed,
        optimizers=(optimizer, scheduler),
        callbacks=[HFClock()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict; the table reports them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return ledger.fill(RunRecord("hf"), cfg.warmup_steps)


def quiet_frameworks() -> None:
    """Silence Lightning's start-up banners (GPU available…, model summary) for a clean table."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "slamming"):
        logging.getLogger(name).setLevel(logging.ERROR)
