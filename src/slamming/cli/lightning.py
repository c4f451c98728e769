"""``slamming fit|validate|test|predict``: a thin LightningCLI.

Any LightningModule and LightningDataModule is given by ``class_path`` in a config (subclass mode).
Two callbacks are always present and configured at the top level of a config: ``budget``
(:class:`~slamming.callbacks.budget.ComputeBudget`) and ``throughput``
(:class:`~slamming.callbacks.throughput.Throughput`). The number of units and the context length
are linked from the data to the model, never typed twice.

On a CPU, ``bf16-mixed`` pays only where the CPU multiplies bf16 natively (AVX-512-bf16, AMX); where
it emulates bf16, autocast makes every step several times slower (docs/perf-log.md, 2026-12-02).
Before the classes are built, a ``bf16-mixed`` run on the CPU therefore measures both GEMM rates
(about two seconds, reused by the throughput callback) and trains in ``32-true`` when bf16 is the
slower of the two, saying so in one line. ``SLAMMING_KEEP_PRECISION=1`` keeps the config's choice.

Importing this module imports Lightning (seconds), so :mod:`slamming.cli` imports it only when a
Lightning command runs.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.throughput import Throughput
from slamming.errors import SlammingError
from slamming.models.checkpoint import checkpoints_trusted, read_checkpoint
from slamming.models.flops import measure_cpu_peak_flops

log = logging.getLogger(__name__)

#: Set to 1 to keep a config's bf16-mixed on a CPU that emulates bf16.
KEEP_PRECISION_ENV = "SLAMMING_KEEP_PRECISION"


def cpu_precision(precision: str, bf16_flops: float, fp32_flops: float) -> str:
    """The precision a CPU run should use: bf16 autocast only where bf16 GEMMs beat fp32 ones.

    Args:
        precision: the configured ``trainer.precision``.
        bf16_flops: the measured bf16 matmul rate of this CPU (FLOP/s).
        fp32_flops: the measured fp32 matmul rate of this CPU (FLOP/s).

    Returns:
        ``"32-true"`` for a ``bf16-mixed`` run on a CPU whose bf16 rate is below its fp32 rate,
        otherwise ``precision`` unchanged (``bf16-true`` asks for bf16 weights, and is kept).
    """
    if str(precision) in ("bf16-mixed", "bf16") and bf16_flops < fp32_flops:
        return "32-true"
    return precision


def _runs_on_cpu(accelerator: Any) -> bool:
    if accelerator == "cpu":
        return True
    return accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()


class SlammingCLI(LightningCLI):
    """LightningCLI with slamming's always-on callbacks and data→model links."""

    _subcommand: str | None = None

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        # Remember which subcommand's parser is being built: the data->model links belong to the
        # language-model stages, not to `predict` (unit extraction has neither side of them).
        self._subcommand = subcommand
        return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the ``budget`` and ``throughput`` callbacks and link the data's sizes to the model."""
        parser.add_lightning_class_args(ComputeBudget, "budget")
        parser.add_lightning_class_args(Throughput, "throughput")
        if self._subcommand in (None, "fit", "validate", "test"):
            # This link makes the data module before the model. So that a model that cannot work
            # (no tokeniser, a truncated checkpoint) stops the run before minutes of data building,
            # data modules only check settings and list files in their constructors; what takes
            # time (speaking corpora or benchmarks) is their prepare_data, after the model is made.
            parser.link_arguments("data.num_units", "model.init_args.num_units", apply_on="instantiate")
            parser.link_arguments("data.init_args.context_length", "model.init_args.context_length")

    def before_instantiate_classes(self) -> None:
        """Train a CPU run in fp32 where this CPU emulates bf16 (see the module docstring)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        precision = trainer["precision"]
        if os.environ.get(KEEP_PRECISION_ENV) == "1" or not _runs_on_cpu(trainer["accelerator"]):
            return
        if str(precision) not in ("bf16-mixed", "bf16"):
            return
        bf16, fp32 = measure_cpu_peak_flops(torch.bfloat16), measure_cpu_peak_flops(torch.float32)
        chosen = cpu_precision(precision, bf16, fp32)
        if chosen != precision:
            trainer["precision"] = chosen
            log.info(
                f"trainer.precision {precision} -> {chosen}: this CPU multiplies bf16 at {bf16 / 1e9:.1f} "
                f"GFLOP/s against {fp32 / 1e9:.1f} GFLOP/s in fp32 (no native bf16), so bf16 autocast would "
                f"slow every step; {KEEP_PRECISION_ENV}=1 keeps {precision}"
            )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads a --ckpt_path's hyperparameters here, before any hook runs: check the
        # file first, so an unreadable or code-carrying checkpoint is one line, not a traceback.
        if self.config.get("subcommand"):
            self._check_resume(self.config[self.config.subcommand])
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError:
            if not checkpoints_trusted():
                raise
            # A trusted file with non-plain hyperparameters: the config's model settings stand.

    @staticmethod
    def _check_resume(config: Any) -> None:
        """Refuse, in one line, a ``--ckpt_path`` that is unreadable or would unpickle code.

        Lightning's own loader unpickles anything when ``weights_only`` is unset; it gets the same
        answer as :func:`read_checkpoint`: plain tensors and values, unless the user trusts the file.
        """
        path = config.get("ckpt_path") if "ckpt_path" in config else None
        if path in (None, "last", "best", "hpc", "registry"):
            return
        if not os.path.isfile(path):
            raise SlammingError(f"--ckpt_path {path}: no such checkpoint file")
        read_checkpoint(path)
        if "weights_only" in config and config.get("weights_only") is None:
            config["weights_only"] = not checkpoints_trusted()


def run_lightning(args: Sequence[str] | None) -> SlammingCLI:
    """Run the LightningCLI on ``args`` (``fit --config …``; ``None`` reads ``sys.argv``) and return it."""
    argv = sys.argv[1:] if args is None else list(args)
    if torch.cuda.is_available() and argv and argv[0] == "fit":
        # TF32 matmuls for training only: scoring (test) and unit extraction (predict) stay true fp32,
        # so their numbers and units do not depend on the GPU generation.
        torch.set_float32_matmul_precision("high")
    extra: dict[str, Any] = {}
    if argv and argv[0] == "predict":
        # Extraction has no logger, so the config would land in the working directory, and a rerun
        # after a crash would stop on it; the corpus records the tokeniser instead.
        extra["save_config_callback"] = None
    return SlammingCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        **extra,
        args=None if args is None else list(args),
        parser_kwargs={
            "description": "Train and evaluate speech language models the Slam way.",
            "exit_on_error": False,
        },
    )
