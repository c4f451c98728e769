"""The ``slamming`` command: four Lightning commands and three tools, one ``--help``.

::

    slamming fit --config FILE        train a model (pretraining or DPO); --ckpt_path resumes
    slamming validate --config FILE   one validation epoch
    slamming test --config FILE       score a model on its test data (the benchmarks)
    slamming predict --config FILE    run a model on its data (audio to units, prompts to continuations)
    slamming corpus ACTION …          inspect, verify, import and export unit corpora
    slamming tokenizer ACTION …       make a unit tokeniser (fit k-means, or a community k-means file)
    slamming export CKPT OUT_DIR      a Lightning checkpoint as a Hugging Face model folder

``slamming --help`` lists them; ``slamming COMMAND --help`` documents each (and each tool's
actions: ``slamming corpus export-tokens --help``). The Lightning commands are
:mod:`slamming.cli.lightning`, the tools :mod:`slamming.cli.tools`; each is imported only when
one of its commands runs, so a tool never waits for Lightning to import.

Checkpoints are read as tensors and plain values only; ``--trust-checkpoint`` (anywhere on the
command line, any command) allows unpickling other objects, which runs whatever code a file asks
for: only for files you made or trust (:data:`slamming.models.checkpoint.TRUST_ENV`).

A usage mistake or a :class:`~slamming.errors.SlammingError` (a user mistake found while running)
is printed as one line, ``slamming: error: …``, without a traceback, and the command exits with
status 2. So is a write that fails on a full disk or quota (``ENOSPC``, ``EDQUOT``), naming the file
(:mod:`slamming.cli.disk`); the writers have removed their temporaries by then.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from slamming.cli.disk import disk_full_message
from slamming.cli.tools import TOOLS, ToolUsageError, run_tool
from slamming.errors import SlammingError

#: The opt-in to unpickle checkpoints that need more than tensors and plain values.
TRUST_FLAG = "--trust-checkpoint"

__all__ = ["COMMANDS", "LIGHTNING_COMMANDS", "main", "usage"]

#: The Lightning commands and their one-line descriptions.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a model from a config (pretraining or DPO); --ckpt_path resumes a run",
    "validate": "run one validation epoch of a config's model on its data",
    "test": "score a model on a config's test data (the benchmarks: configs/eval.yaml)",
    "predict": "run a config's model on its data (audio to units, prompts to continuations)",
}
#: Every command of ``slamming``, with its one-line description, in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {**LIGHTNING_COMMANDS, **TOOLS}


def usage() -> str:
    """The text of ``slamming --help``: every command with its one-line description."""
    width = max(map(len, COMMANDS))

    def rows(commands: dict[str, str]) -> list[str]:
        return [f"  {name:<{width}}  {what}" for name, what in commands.items()]

    return "\n".join(
        [
            "usage: slamming COMMAND [OPTIONS]",
            "",
            "Train and evaluate speech language models the Slam way (arXiv 2502.15814).",
            "",
            "Lightning commands (slamming COMMAND --config FILE):",
            *rows(LIGHTNING_COMMANDS),
            "",
            "Tools:",
            *rows(TOOLS),
            "",
            "`slamming COMMAND --help` documents a command's options (and a tool's actions).",
            f"{TRUST_FLAG} (any command): also unpickle checkpoints that need more than tensors and",
            "plain values. That runs code the file asks for: only for files you made or trust.",
        ]
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests swap it per test)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging() -> None:
    # Here rather than in `lightning`: the tools log too (tokeniser fitting) and must not import
    # Lightning to do it.
    logger = logging.getLogger("slamming")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _fail(message: str) -> NoReturn:
    print(f"slamming: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``slamming`` console script; tests call ``main([...])`` directly.

    Args:
        args: The command line after ``slamming``; ``None`` reads ``sys.argv``.

    Raises:
        SystemExit: 0 after ``--help``; 2 on a user mistake or a full disk, printed as one line;
            143 (128 + SIGTERM) when a fit or test was stopped by SIGTERM before it finished.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if TRUST_FLAG in argv:
        from slamming.models.checkpoint import TRUST_ENV  # here: `slamming --help` imports no torch

        argv = [a for a in argv if a != TRUST_FLAG]
        args = argv
        os.environ[TRUST_ENV] = "1"  # read by read_checkpoint and by the resume check
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        if not argv:
            _fail("give a command; they are listed above")
        return
    command = argv[0]
    # Options before the command (`slamming --config FILE fit`) are LightningCLI's to read.
    if not command.startswith("-") and command not in COMMANDS:
        _fail(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)} (see `slamming --help`)")
    _configure_logging()
    try:
        if command in TOOLS:
            run_tool(argv)
        else:
            from slamming.cli.lightning import run_lightning

            run_lightning(args)
    except SystemExit as stop:
        _exit_if_terminated(stop, command)
        raise
    except ToolUsageError as err:
        _fail(f"{err.message}; `{err.prog} --help` lists every option")
    except argparse.ArgumentError as err:
        _fail(f"{_one_line(str(err))}; `slamming {_subcommand(argv)}--help` lists every option")
    except Exception as err:
        user_error = _find_user_error(err)
        if user_error is not None:
            _fail(str(user_error))
        full = disk_full_message(err)
        if full is None:
            raise
        _fail(full)


#: The exit status of a run stopped by SIGTERM, as a shell reports a process killed by it.
SIGTERM_EXIT = 128 + 15


def _exit_if_terminated(stop: SystemExit, command: str) -> None:
    """Turn Lightning's graceful SIGTERM stop, a ``SystemExit`` with status 0, into status 143.

    Lightning answers SIGTERM by ending the loop at the next batch and exiting 0, so a script
    (``make demo``) would go on to its next stage as if the fit or test had finished; nothing after
    the last saved checkpoint was kept, and a test writes no results.
    """
    if type(stop).__name__ != "SIGTERMException" or stop.code not in (None, 0):
        return
    what = (
        "nothing after its last saved checkpoint was kept; resume from it with --ckpt_path"
        if command == "fit"
        else "no results were written"
    )
    print(
        f"slamming: error: stopped by SIGTERM before `slamming {command}` finished ({what}); exit status {SIGTERM_EXIT}",
        file=sys.stderr,
    )
    raise SystemExit(SIGTERM_EXIT) from None


_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Expected a <class 'NoneType'>", "Given value")


def _one_line(message: str) -> str:
    """Condense jsonargparse's nested, multi-line config errors into the line that matters."""
    parts = [line.strip().lstrip("- ") for line in message.splitlines()]
    return ": ".join(p.rstrip(":") for p in parts if p and not p.startswith(_NOISE))


def _subcommand(argv: Sequence[str]) -> str:
    return f"{argv[0]} " if argv and argv[0] in LIGHTNING_COMMANDS else ""


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
