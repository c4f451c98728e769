"""Reading slamming's Lightning checkpoints: one reader, and the names of the sections we write.

A training stage stores its own settings under :data:`SECTION` (``checkpoint["slamming"]``: the
backbone or the full model config, the tokeniser identity and folder, ...), and the compute budget
stores its consumption under ``checkpoint["callbacks"][BUDGET_STATE]``. Every reader goes through
:func:`read_checkpoint`, so the format is read one way everywhere.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from slamming.errors import SlammingError

SECTION = "slamming"
"""The key of the checkpoint section written by ``on_save_checkpoint`` of slamming's stages."""

BUDGET_STATE = "ComputeBudget"
"""The key of the compute budget's state under ``checkpoint["callbacks"]``."""

TRUST_ENV = "SLAMMING_TRUST_CHECKPOINTS"
"""Set to ``1`` (``slamming --trust-checkpoint …`` does) to unpickle checkpoints that need more than
tensors and plain values: unpickling such a file runs whatever code its author put in it."""


def checkpoints_trusted() -> bool:
    """Whether the user opted in to unpickling arbitrary objects (:data:`TRUST_ENV` is ``1``)."""
    return os.environ.get(TRUST_ENV, "") == "1"


def read_checkpoint(path: str | os.PathLike[str], trust: bool | None = None) -> Any:
    """Load a checkpoint's pickled dict without reading its tensors into memory (mmap).

    Only tensors and plain values are unpickled (``weights_only=True``): slamming's own checkpoints
    need nothing more, and a pickle that asks for anything else (a class, a function such as
    ``os.system``) would run code. Such a file is refused in one line unless the user trusts it.

    Args:
        path: The ``.ckpt`` file.
        trust: Unpickle arbitrary objects too; None: :func:`checkpoints_trusted`.

    Returns:
        The checkpoint as Lightning saved it (normally a dict).

    Raises:
        SlammingError: the pickle needs more than tensors and plain values (and ``trust`` is off),
            or the file is not a readable checkpoint (truncated, corrupt, another format).
    """
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        if not (checkpoints_trusted() if trust is None else trust):
            found = re.search(r"GLOBAL ([\w.]+)", str(err))
            needs = found.group(1) if found else "objects other than tensors and plain values"
            raise SlammingError(
                f"{path}: loading it would unpickle {needs}, which can run code; slamming loads only "
                "tensors and plain values. If you made this file or trust its source, add --trust-checkpoint "
                f"(or set {TRUST_ENV}=1)"
            ) from None
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if os.path.getsize(path) == 0:  # torch's own words for it are about the zip format
            first = "the file is empty"
        raise SlammingError(
            f"{path}: not a readable checkpoint ({first}); it may be truncated or in another format: "
            "use a .ckpt written by slamming fit"
        ) from None


def stage_section(checkpoint: Any) -> dict[str, Any]:
    """The stage's own section of a loaded checkpoint (empty when there is none)."""
    section = checkpoint.get(SECTION) if isinstance(checkpoint, dict) else None
    return dict(section) if isinstance(section, dict) else {}


def budget_state(checkpoint: Any) -> dict[str, Any] | None:
    """The compute budget's state stored in a loaded checkpoint, or None when its run had none."""
    callbacks = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    state = callbacks.get(BUDGET_STATE)
    return None if state is None else dict(state)
