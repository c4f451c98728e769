"""The ``slamming`` command: a thin LightningCLI plus a few corpus and export tools.

``slamming fit|validate|test|predict --config FILE`` runs Lightning with any LightningModule and
LightningDataModule given by ``class_path`` (subclass mode). Two callbacks are always present and
configured at the top level of a config: ``budget`` (:class:`~slamming.callbacks.budget.ComputeBudget`)
and ``throughput`` (:class:`~slamming.callbacks.throughput.Throughput`). The number of units and the
context length are linked from the data to the model, never typed twice.

``slamming corpus …``, ``slamming tokenizer …`` and ``slamming export …`` are plain tools (see
``slamming corpus --help``).

A :class:`~slamming.errors.SlammingError` (a user mistake) is printed as one line, without a
traceback, and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.throughput import Throughput
from slamming.errors import SlammingError


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
        parser.add_lightning_class_args(ComputeBudget, "budget")
        parser.add_lightning_class_args(Throughput, "throughput")
        if self._subcommand in (None, "fit", "validate", "test"):
            parser.link_arguments("data.num_units", "model.init_args.num_units", apply_on="instantiate")
            parser.link_arguments("data.init_args.context_length", "model.init_args.context_length")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests swap it per test)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging() -> None:
    logger = logging.getLogger("slamming")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run_lightning(args: Sequence[str] | None) -> SlammingCLI:
    """Run the LightningCLI on ``args`` (``fit --config …``) and return it."""
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


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``slamming`` console script; tests call ``main([...])`` directly."""
    argv = list(sys.argv[1:] if args is None else args)
    _configure_logging()
    try:
        if argv and argv[0] in ("corpus", "export", "tokenizer"):
            from slamming.tools import run_tool

            run_tool(argv)
            return
        run_lightning(args)
    except argparse.ArgumentError as err:
        print(
            f"slamming: error: {_one_line(str(err))}; `slamming {_subcommand(argv)}--help` lists every option",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except Exception as err:
        user_error = _find_user_error(err)
        if user_error is None:
            raise
        print(f"slamming: error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Expected a <class 'NoneType'>", "Given value")


def _one_line(message: str) -> str:
    """Condense jsonargparse's nested, multi-line config errors into the line that matters."""
    parts = [line.strip().lstrip("- ") for line in message.splitlines()]
    return ": ".join(p.rstrip(":") for p in parts if p and not p.startswith(_NOISE))


def _subcommand(argv: Sequence[str]) -> str:
    return f"{argv[0]} " if argv and argv[0] in ("fit", "validate", "test", "predict") else ""


def _find_user_error(err: BaseException) -> SlammingError | None:
    """The :class:`SlammingError` behind ``err``, if any.

    jsonargparse wraps exceptions raised while instantiating classes from a config (for example a
    missing corpus found by the data module's constructor) in its own ``ValueError``; the user's
    mistake is in the chain of causes.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, SlammingError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":
    main()
