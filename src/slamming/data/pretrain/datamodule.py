"""``UnitDataModule``: packed, document-masked windows from unit corpora for next-unit pretraining."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.verified import verify_on_node
from slamming.data.pretrain.packing import collate_packed
from slamming.data.pretrain.windows import PackedWindowDataset
from slamming.data.sampling.resumable import ResumableDataModule, path_list
from slamming.errors import ConfigError, CorpusError, SlammingError
from slamming.speech.tokenizers import check_identity, read_config

log = logging.getLogger(__name__)


__all__ = ["UnitDataModule", "path_list"]


class UnitDataModule(ResumableDataModule):
    """Serves packed windows of ``context_length + 1`` ids from one or more unit corpora.

    Data order is a pure function of ``seed`` and the number of samples consumed: windows are
    sharded across ranks, and the global position (epoch, windows consumed by all ranks) is saved in
    checkpoints with the world size, so a resumed run, on any number of ranks, continues with exactly
    the windows the uninterrupted run would have seen next.

    Args:
        train: training corpus directories (see :mod:`slamming.data.corpus.format`).
        val: validation corpus directories (optional).
        weights: mixture weights of the training corpora (token shares); ``None`` = every document
            of every corpus once per epoch; a corpus of weight 0 contributes nothing.
        context_length: model context ``L``; windows hold ``L + 1`` ids.
        batch_size: windows per micro-batch (per device).
        num_workers: data-loader worker processes (0 builds batches in the training process; with
            packing done by slicing memory maps this is cheap).
        seed: seed of the document order.
        verify_checksums: verify every corpus file's sha256 in ``setup``, on local rank 0 of each node,
            when the files changed since their last successful verification
            (:mod:`slamming.data.corpus.verified`).
        pin_memory: pin batches for faster host-to-GPU copies.
        tokenizer_dir: the saved tokeniser that made the corpora (checked against their recorded
            identity). Pretraining records it in its checkpoints and export, so DPO and evaluation
            turn new speech into the same units without being told where the tokeniser is.
    """

    collate = collate_packed
    batch_key = "input_ids"

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        weights: list[float] | None = None,
        context_length: int = 1024,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        verify_checksums: bool = True,
        pin_memory: bool = True,
        tokenizer_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._tokenizer_folder = None if tokenizer_dir is None else Path(tokenizer_dir)
        self.train_paths = path_list(train)
        self.val_paths = path_list(val)
        if not self.train_paths:
            raise SlammingError("data.train: give at least one corpus directory")
        if weights is not None and len(weights) != len(self.train_paths):
            raise SlammingError(
                f"data.weights has {len(weights)} values for {len(self.train_paths)} training corpora: give one per corpus"
            )
        if weights is not None and not (all(0 <= w < math.inf for w in weights) and sum(weights) > 0):
            raise ConfigError(
                f"data.weights={list(weights)}: weights must be finite and non-negative with a positive "
                "sum (a weight of 0 leaves its corpus out of training)"
            )
        self.weights = weights
        self.context_length = int(context_length)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.verify_checksums = verify_checksums
        self.pin_memory = pin_memory
        self.train_set: PackedWindowDataset | None = None
        self.val_set: PackedWindowDataset | None = None
        self._identity: dict[str, Any] | None = None
        self._num_units: int | None = None
        if self._ready_to_open():
            self._read_identity()

    # -- corpora -----------------------------------------------------------------------------------
    def _open(self, paths: list[str]) -> list[UnitCorpus]:
        corpora = [UnitCorpus(p) for p in paths]
        if self.verify_checksums:
            # Local rank 0 of each node hashes, and only files changed since their last verification;
            # the other ranks wait, and all raise together if a corpus is corrupt.
            verify_on_node(corpora, local_rank=getattr(self.trainer, "local_rank", 0))
        return corpora

    def _read_identity(self) -> None:
        """Read the tokeniser identity of every corpus (meta.json only) and check they agree."""
        first: UnitCorpus | None = None
        for p in self.train_paths + self.val_paths:
            corpus = UnitCorpus(p)
            if first is None:
                first = corpus
                continue
            if corpus.num_units != first.num_units:
                raise CorpusError(
                    f"corpus {p} has {corpus.num_units} units but {first.path} has {first.num_units}: "
                    "all corpora of a run must come from the same tokeniser"
                )
            check_identity(first.tokenizer, corpus.tokenizer, what=f"corpus {p} (vs {first.path})")
        assert first is not None
        self._identity = dict(first.tokenizer)
        self._num_units = int(first.num_units)

    @property
    def num_units(self) -> int:
        """Number of units K of the corpora's tokeniser (the model's vocabulary is K + 2)."""
        if self._num_units is None:
            self._read_identity()
        assert self._num_units is not None
        return self._num_units

    @property
    def tokenizer_dir(self) -> Path | None:
        """The tokeniser folder given as ``tokenizer_dir`` (None when not given)."""
        return self._tokenizer_folder

    def check_tokenizer_dir(self) -> None:
        """The given tokeniser folder must be the one whose units the corpora hold."""
        folder = self._tokenizer_folder
        if folder is None:
            return
        recorded = read_config(folder).get("identity") or {}
        check_identity(
            self.tokenizer, recorded, what=f"data.tokenizer_dir {folder} (vs the corpora's tokeniser)"
        )

    @property
    def tokenizer(self) -> dict[str, Any]:
        """Identity of the tokeniser that made the corpora."""
        if self._identity is None:
            self._read_identity()
        assert self._identity is not None
        return self._identity

    # -- Lightning hooks ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.check_tokenizer_dir()
            self.train_set = PackedWindowDataset(
                self._open(self.train_paths), self.context_length, self.weights, self.seed, shuffle=True
            )
            if len(self.train_paths) > 1:
                rank_zero_info(self.train_set.mix_report([Path(p).name for p in self.train_paths]))
            if len(self.train_set) == 0:
                raise CorpusError(
                    f"training corpora {self.train_paths} hold fewer than {self.context_length + 1} ids: "
                    "add data or lower data.context_length"
                )
        if self.val_set is None and self.val_paths and stage in (None, "fit", "validate"):
            self.val_set = PackedWindowDataset(
                self._open(self.val_paths), self.context_length, None, self.seed, shuffle=False
            )
            if len(self.val_set) == 0:
                raise CorpusError(
                    f"validation corpora {self.val_paths} hold fewer than {self.context_length + 1} ids: "
                    "add data or lower data.context_length"
                )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup('fit') first"
        return self._train_loader(self.train_set)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._val_loader(self.val_set)

    def state_dict(self) -> dict[str, Any]:
        # The position is global (items of the epoch consumed by all ranks) and names the world
        # size, so a resume on another number of ranks continues the same order.
        return {**self._position_state(), "seed": self.seed, "context_length": self.context_length}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if int(state_dict.get("context_length", self.context_length)) != self.context_length:
            log.warning(
                "checkpoint was made with another context length: data order restarts from the beginning"
            )
            self._restart_position()
            return
        self._load_position(state_dict)
