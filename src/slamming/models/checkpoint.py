"""Reading slamming's Lightning checkpoints: one reader, and the names of the sections we write.

A training stage stores its own settings under :data:`SECTION` (``checkpoint["slamming"]``: the
backbone or the full model config, the tokeniser identity and folder, ...), and the compute budget
stores its consumption under ``checkpoint["callbacks"][BUDGET_STATE]``. Every reader goes through
:func:`read_checkpoint`, so the format is read one way everywhere.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

SECTION = "slamming"
"""The key of the checkpoint section written by ``on_save_checkpoint`` of slamming's stages."""

BUDGET_STATE = "ComputeBudget"
"""The key of the compute budget's state under ``checkpoint["callbacks"]``."""


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint's pickled dict without reading its tensors into memory (mmap).

    Args:
        path: The ``.ckpt`` file.

    Returns:
        The checkpoint as Lightning saved it (normally a dict).
    """
    try:
        # The restricted unpickler reads plain Lightning checkpoints (tensors, numbers, strings).
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError:
        # Hyperparameters may hold arbitrary objects that the restricted unpickler rejects. This is
        # the user's own run output, which Lightning itself loads with weights_only=False on resume.
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)


def stage_section(checkpoint: Any) -> dict[str, Any]:
    """The stage's own section of a loaded checkpoint (empty when there is none)."""
    section = checkpoint.get(SECTION) if isinstance(checkpoint, dict) else None
    return dict(section) if isinstance(section, dict) else {}


def budget_state(checkpoint: Any) -> dict[str, Any] | None:
    """The compute budget's state stored in a loaded checkpoint, or None when its run had none."""
    callbacks = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    state = callbacks.get(BUDGET_STATE)
    return None if state is None else dict(state)
