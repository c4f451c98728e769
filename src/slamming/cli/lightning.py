"""``slamming fit|validate|test|predict``: a thin LightningCLI.

Any LightningModule and LightningDataModule is given by ``class_path`` in a config (subclass mode).
Two callbacks are always present and configured at the top level of a config: ``budget``
(:class:`~slamming.callbacks.budget.ComputeBudget`) and ``throughput``
(:class:`~slamming.callbacks.throughput.Throughput`). The number of units and the context length
are linked from the data to the model, never typed twice.

Importing this module imports Lightning (seconds), so :mod:`slamming.cli` imports it only when a
Lightning command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.throughput import Throughput


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
            parser.link_arguments("data.num_units", "model.init_args.num_units", apply_on="instantiate")
            parser.link_arguments("data.init_args.context_length", "model.init_args.context_length")


def run_lightning(args: Sequence[str] | None) -> SlammingCLI:
    """Run the LightningCLI on ``args`` (``fit --config …``; ``None`` reads ``sys.argv``) and return it."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    argv = sys.argv[1:] if args is None else list(args)
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
