"""A rank-sharded sampler that resumes from a cursor, and the DataModule base that keeps the cursor.

A run resumed from a mid-epoch checkpoint must see exactly the batches the uninterrupted run would.
:class:`ResumableSampler` yields ``(epoch, k)`` items (the dataset maps them to its ``k``-th item of
epoch ``epoch``'s order) from a cursor of consumed samples; :class:`ResumableDataModule` counts the
samples the training loop consumes and saves the cursor in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def path_list(paths: str | Sequence[str] | None) -> list[str]:
    """One path, several or none, as a list of strings."""
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]


class ResumableSampler(DistributedSampler):
    """Yields ``(epoch, k)`` pairs for one rank, resuming from a global cursor.

    Rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...`` of each epoch (the tail that does not
    divide evenly is dropped so every rank runs the same number of steps). The sampler does not
    follow Lightning's epoch counter: it keeps its own position, ``cursor`` = samples this rank has
    consumed since the start of training, which the data module stores in checkpoints. An
    iteration runs from the cursor to the end of the cursor's epoch. Only ``len(dataset)`` is read:
    the dataset maps ``(epoch, k)`` to an item itself (packed windows, shuffled triples).

    It subclasses :class:`DistributedSampler` only so that Lightning recognises it as already
    distributed and does not wrap or replace it.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, cursor: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)  # type: ignore[arg-type]
        self.per_rank = len(dataset) // num_replicas
        self.cursor = int(cursor)

    def __len__(self) -> int:
        if self.per_rank == 0:
            return 0
        return self.per_rank - self.cursor % self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.per_rank == 0:
            return
        epoch, offset = divmod(self.cursor, self.per_rank)
        for j in range(offset, self.per_rank):
            yield epoch, j * self.num_replicas + self.rank

    def advance(self, samples: int) -> None:
        """Move the cursor past ``samples`` consumed samples."""
        self.cursor += int(samples)


class ResumableDataModule(pl.LightningDataModule):
    """Base of the data modules whose training order resumes mid-epoch.

    It keeps ``_cursor`` (samples the training loop consumed) and the training
    :class:`ResumableSampler`, advances both once per consumed batch, and builds the loaders.
    Subclasses set :attr:`collate` and :attr:`batch_key` and save ``_cursor`` in their
    ``state_dict``. Expects ``batch_size``, ``num_workers`` and ``pin_memory`` attributes.
    """

    #: Turns a list of dataset items into a batch.
    collate: Callable[[Any], Any]
    #: A batch entry whose first dimension is the batch size (to count consumed samples).
    batch_key: str

    batch_size: int
    num_workers: int
    pin_memory: bool

    def __init__(self) -> None:
        super().__init__()
        self._cursor = 0
        self._sampler: ResumableSampler | None = None

    def _ready_to_open(self) -> bool:
        """Whether the data exists at construction time (subclasses build it in prepare_data)."""
        return True

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _on_gpu(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset, sampler: Any, batch_size: int | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            sampler=sampler,
            collate_fn=type(self).collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and self._on_gpu(),
            persistent_workers=False,
        )

    def _train_loader(self, dataset: Dataset) -> DataLoader:
        """The training loader, in the resumable order from the cursor (kept to advance it)."""
        rank, world = self._rank_world()
        self._sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, cursor=self._cursor)  # type: ignore[arg-type]
        return self._loader(dataset, self._sampler)

    def _val_loader(self, dataset: Dataset) -> DataLoader:
        """A validation loader: the dataset sharded across ranks, from the start."""
        rank, world = self._rank_world()
        return self._loader(dataset, ResumableSampler(dataset, num_replicas=world, rank=rank))  # type: ignore[arg-type]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called once per batch the training loop actually consumes (prefetched batches are not
        # transferred yet), so the cursor counts exactly what training has seen.
        trainer = self.trainer
        if trainer is not None and trainer.training and self._sampler is not None:
            n = int(batch[self.batch_key].shape[0])
            self._cursor += n
            self._sampler.advance(n)
        return batch
