"""The budget's records outside the process: the ledger beside the checkpoints, and a checkpoint's state.

A checkpoint records the consumption only when it is written, so a killed run
would lose the time since its last checkpoint. Rank 0 therefore also writes a small JSON ledger,
``budget-ledger.json``, atomically (:func:`slamming.atomic.write_text_atomic`): when training
starts, then at the first optimizer step at least ``ledger_every_s`` seconds after its previous
write, and when training ends. It goes into the run's checkpoint folder (the ``ModelCheckpoint``
``dirpath``; a run without a ``ModelCheckpoint`` has no checkpoint a kill could leave behind, and
writes none there) and, in a resumed fit, also beside the checkpoint it resumed from (a fit
resumed into a new ``version_N`` and killed before its first checkpoint is then still counted
when resumed again from there).
It holds the consumed GPU-hours and tokens, the world size and step, the step of the last
checkpoint the run saved (or resumed from), and the run's *lineage*: a random id drawn by every
fit, preceded by the ids of the fits it continues. Checkpoints record the same lineage. On
resume, rank 0 reads the ledger beside the resumed checkpoint and uses it only when it continues
exactly that checkpoint: the checkpoint's fit is in the ledger's lineage (never another run's
ledger) and the ledger's last checkpoint is at the resumed step (no later checkpoint came after:
a deliberate return to an older checkpoint keeps that checkpoint's accounting). Then, when the
ledger records more GPU-hours, the fit starts from the ledger's consumption, logging ``counted N
s lost since the last checkpoint``; the result is broadcast, so every rank holds the same
consumption and the stop decision stays identical. The time a kill loses is thus at most
``ledger_every_s`` plus one optimizer step. A fit without ``ckpt_path`` never reads a ledger (it
starts its own lineage and overwrites an old ledger in its folder). An unreadable or malformed
ledger, or one that cannot be written (a full disk), is reported in one warning line and
training continues on the checkpoints' accounting alone.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from slamming.atomic import write_text_atomic
from slamming.errors import SlammingError
from slamming.models.checkpoint import budget_state, read_checkpoint

#: The ledger's file name, beside the checkpoints.
LEDGER_NAME = "budget-ledger.json"
#: Version of the ledger's JSON layout.
LEDGER_FORMAT = 1
#: Run ids a ledger or checkpoint keeps in its lineage (the latest ones).
LINEAGE_KEPT = 64


def checkpoint_dir(trainer: pl.Trainer) -> str:
    """The run's checkpoint folder: ``ModelCheckpoint``'s ``dirpath``, else ``<root>/checkpoints``."""
    checkpoint_callback = trainer.checkpoint_callback
    if isinstance(checkpoint_callback, ModelCheckpoint) and checkpoint_callback.dirpath:
        return str(checkpoint_callback.dirpath)
    return os.path.join(trainer.default_root_dir, "checkpoints")


def ledger_paths(trainer: pl.Trainer, resumed_from: str | None) -> list[str]:
    """Where a fit writes its ledger: its ``ModelCheckpoint`` folder, and beside the resumed checkpoint.

    The second keeps a resumed fit that is killed before its own first checkpoint counted.
    """
    folders = []
    checkpoint_callback = trainer.checkpoint_callback
    if isinstance(checkpoint_callback, ModelCheckpoint) and checkpoint_callback.dirpath:
        folders.append(str(checkpoint_callback.dirpath))
    if resumed_from is not None:
        folders.append(os.path.dirname(resumed_from))
    paths: list[str] = []
    for folder in folders:
        path = os.path.abspath(os.path.join(folder, LEDGER_NAME))
        if path not in paths:
            paths.append(path)
    return paths


def read_ledger(path: str, resumed: dict[str, Any], step: int) -> dict[str, Any] | None:
    """The consumption to adopt from the ledger at ``path`` (rank 0), or None to keep the checkpoint's.

    Args:
        path: The ledger beside the resumed checkpoint.
        resumed: The checkpoint's budget state (``gpu_hours``, ``tokens``, ``lineage``).
        step: The checkpoint's global step.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            ledger = json.load(handle)
        gpu_hours, tokens, lineage = ledger["gpu_hours"], ledger["tokens"], ledger["lineage"]
        world_size, checkpoint_step = ledger["world_size"], ledger["checkpoint_step"]
        valid = (
            ledger.get("format") == LEDGER_FORMAT
            and isinstance(gpu_hours, int | float)
            and math.isfinite(gpu_hours)
            and gpu_hours >= 0
            and isinstance(tokens, int)
            and tokens >= 0
            and isinstance(world_size, int)
            and world_size >= 1
            and isinstance(lineage, list)
            and all(isinstance(item, str) for item in lineage)
            and (checkpoint_step is None or isinstance(checkpoint_step, int))
        )
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        valid, why = False, f"{type(error).__name__}: {error}"
    else:
        why = "unexpected values"
    if not valid:
        rank_zero_warn(
            f"Compute budget: ignoring the unreadable ledger {path} ({why}); time spent after the "
            "resumed checkpoint is not counted. Delete the file to silence this warning."
        )
        return None
    checkpoint_lineage = resumed.get("lineage") or []
    if not checkpoint_lineage or checkpoint_lineage[-1] not in lineage:
        rank_zero_info(
            f"Compute budget: the ledger {path} belongs to another run than the resumed checkpoint; "
            "using the checkpoint's consumption"
        )
        return None
    if checkpoint_step != step:
        rank_zero_info(
            f"Compute budget: the ledger {path} continues a later checkpoint (step {checkpoint_step}) than "
            f"the resumed one (step {step}); using the checkpoint's consumption"
        )
        return None
    lost = float(gpu_hours) - float(resumed["gpu_hours"])
    if lost <= 0:
        return None
    rank_zero_info(
        f"Compute budget: counted {lost * 3600 / world_size:.1f} s lost since the last checkpoint "
        f"({lost:.4f} GPU-hours at {world_size} device(s), from the ledger {path})"
    )
    return {"gpu_hours": float(gpu_hours), "tokens": tokens, "lineage": list(lineage)}


class BudgetLedger:
    """The ledger of one :class:`~slamming.callbacks.budget.ComputeBudget`: where, when and what it writes.

    Args:
        every_s: Seconds between writes during training; None turns the ledger off (neither
            written nor read).

    Raises:
        SlammingError: ``every_s`` is not a positive number of seconds.

    Attributes:
        lineage: Ids of the fits whose consumption the current one continues, its own last.
        checkpoint_step: Global step of the last checkpoint this fit saved or resumed from.
        lost_gpu_hours: GPU-hours the ledger added at the start of this fit (0.0 when none).
        paths: The ledger files this fit writes (none outside a fit or without a ledger).
    """

    def __init__(self, every_s: float | None) -> None:
        if every_s is not None and not (math.isfinite(every_s) and every_s > 0):
            raise SlammingError(
                f"ComputeBudget: ledger_every_s must be > 0 seconds or null (no ledger), got {every_s}."
            )
        self.every_s = None if every_s is None else float(every_s)
        self.lineage: list[str] = []
        self.checkpoint_step: int | None = None
        self.lost_gpu_hours = 0.0
        self.paths: list[str] = []
        self._written_at: float | None = None
        self._warned = False

    def start(self, trainer: pl.Trainer, resumed: dict[str, Any] | None) -> dict[str, Any] | None:
        """Draw this fit's id, choose where to write and, on a resume, the ledger to adopt.

        Rank 0 reads the ledger beside the resumed checkpoint and broadcasts its decision (a
        collective reached by every rank in ``on_train_start``), so every rank continues from the
        same consumption and lineage.

        Args:
            trainer: The trainer of the fit.
            resumed: The resumed checkpoint's budget state (``gpu_hours``, ``tokens``, ``lineage``),
                or None for a fit that does not resume.

        Returns:
            The ledger's ``gpu_hours``, ``tokens`` and ``lineage`` to continue from, or None to keep
            the checkpoint's.
        """
        self.checkpoint_step = trainer.global_step if resumed is not None else None
        self.lost_gpu_hours, self._written_at, self._warned = 0.0, None, False
        resumed_from = os.fspath(trainer.ckpt_path) if resumed is not None and trainer.ckpt_path else None
        if resumed_from is not None and not os.path.isfile(resumed_from):
            resumed_from = None  # a remote checkpoint: no ledger beside it to read or write
        decision: dict[str, Any] | None = None
        if trainer.is_global_zero:
            adopted = None
            if resumed is not None and resumed_from is not None and self.every_s is not None:
                ledger = os.path.join(os.path.dirname(resumed_from), LEDGER_NAME)
                adopted = read_ledger(ledger, resumed, trainer.global_step)
            decision = {"run_id": uuid.uuid4().hex, "adopted": adopted}
        decision = trainer.strategy.broadcast(decision, src=0)
        assert decision is not None
        base = list(self.lineage) if resumed is None else list(resumed.get("lineage") or [])
        adopted = decision["adopted"]
        if adopted is not None:
            self.lost_gpu_hours = adopted["gpu_hours"] - resumed["gpu_hours"]  # type: ignore[index]
            base = adopted["lineage"]
        self.lineage = [*base, decision["run_id"]][-LINEAGE_KEPT:]
        self.paths = [] if self.every_s is None else ledger_paths(trainer, resumed_from)
        return adopted

    def due(self, now: float) -> bool:
        """Whether ``every_s`` has passed since the last write (on the budget's clock)."""
        last = self._written_at
        return self.every_s is not None and last is not None and now - last >= self.every_s

    def write(
        self, now: float, step: int, gpu_hours: float, tokens: int, world_size: int, max_gpu_hours: float
    ) -> None:
        """Write the consumption to every path atomically; a failed write warns once per fit."""
        if not self.paths:
            return
        self._written_at = now
        record = {
            "format": LEDGER_FORMAT,
            "about": "slamming ComputeBudget ledger: consumption since the last checkpoint survives kill -9",
            "gpu_hours": gpu_hours,
            "tokens": tokens,
            "world_size": world_size,
            "global_step": step,
            "checkpoint_step": self.checkpoint_step,
            "max_gpu_hours": max_gpu_hours,
            "lineage": list(self.lineage),
        }
        text = json.dumps(record, indent=1) + "\n"
        for path in self.paths:
            try:
                write_text_atomic(path, text)
            except OSError as error:
                if not self._warned:
                    self._warned = True
                    rank_zero_warn(
                        f"Compute budget: cannot write the ledger {path} ({error}); until it can, a crash "
                        "loses the time since the last checkpoint. Free space on that disk."
                    )

    def stop(self) -> None:
        """The fit ended: nothing more is written until the next :meth:`start`."""
        self.paths = []


def read_consumed(checkpoint_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the budget state stored in a Lightning checkpoint.

    A later stage (DPO after pretraining) reads its parent's consumption with this.

    Args:
        checkpoint_path: A ``.ckpt`` written by a fit that ran under a :class:`ComputeBudget`.

    Returns:
        A dict with ``gpu_hours``, ``tokens``, ``max_gpu_hours``, ``max_tokens``, ``world_size``,
        ``stopped_by`` (``"gpu_hours"``, ``"tokens"`` or ``None``) and ``stop_step``.

    Raises:
        SlammingError: The file is missing, is not a checkpoint, or holds no budget state.
    """
    path = os.fspath(checkpoint_path)
    if not os.path.isfile(path):
        raise SlammingError(f"{path}: no such checkpoint file; pass the .ckpt written by the parent run.")
    checkpoint = read_checkpoint(path)  # one line for an untrusted pickle or an unreadable file
    state = budget_state(checkpoint)
    if state is None:
        raise SlammingError(
            f"{path}: this checkpoint holds no ComputeBudget state (its run had no ComputeBudget callback); "
            "use a checkpoint from a run with the budget callback."
        )
    return state
