"""The unit vocabulary layout shared by corpus, models and checkpoints.

Compatible with the authors' released checkpoints (slamkit ``UnitTokeniser``):
id 0 is PAD, id 1 is ``<S>`` used both as BOS and EOS, unit ``u`` is id ``u + 2``.
A document is ``<S> u... <S>``. Corpora store raw units ``0..K-1``; the mapping to ids happens when
batches are built, so one corpus serves any model.
"""

from __future__ import annotations

import numpy as np
import torch

PAD_ID = 0
BOS_ID = 1
EOS_ID = 1
UNIT_OFFSET = 2
NUM_SPECIAL = 2
IGNORE_INDEX = -100


def vocab_size(num_units: int) -> int:
    """Model vocabulary size for ``num_units`` units: units plus PAD and ``<S>``."""
    return int(num_units) + NUM_SPECIAL


def units_to_ids(units: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Map raw units ``0..K-1`` to model ids ``2..K+1``."""
    if isinstance(units, torch.Tensor):
        return units.long() + UNIT_OFFSET
    return np.asarray(units, dtype=np.int64) + UNIT_OFFSET


def document_ids(units: np.ndarray) -> np.ndarray:
    """A whole document as model ids: ``<S> u+2 ... <S>``."""
    out = np.empty(len(units) + 2, dtype=np.int64)
    out[0] = BOS_ID
    out[-1] = EOS_ID
    out[1:-1] = np.asarray(units, dtype=np.int64) + UNIT_OFFSET
    return out
