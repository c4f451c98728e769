"""A rank-sharded sampler that resumes from a global data position, and the DataModule base that keeps it.

A run resumed from a mid-epoch checkpoint must see exactly the data the uninterrupted run would,
also on another number of ranks. The position is global: ``(epoch, index)``, where ``index`` counts
the items of the epoch's order that all ranks together have consumed. Rank ``r`` of ``W`` takes
items ``index + r, index + r + W, ...`` of the epoch, so after each step the ranks together have
consumed a prefix of the order; a resume on ``W'`` ranks continues that prefix. Only the tail of an
epoch that does not divide among the ranks is dropped (every rank runs the same number of steps).

:class:`ResumableSampler` yields ``(epoch, k)`` items (the dataset maps them to its ``k``-th item of
epoch ``epoch``'s order); :class:`ResumableDataModule` counts the samples the training loop consumes
and saves the position, the world size and the epoch's size in checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

log = logging.getLogger(__name__)


def path_list(paths: str | Sequence[str] | None) -> list[str]:
    """One path, several or none, as a list of strings."""
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]


def rank_share(size: int, world: int, index: int) -> int:
    """Items each of ``world`` ranks takes from item ``index`` to the end of an epoch of ``size``."""
    return max(0, (size - index) // world)


def normalized_position(size: int, world: int, epoch: int, index: int) -> tuple[int, int]:
    """``(epoch, index)``, moved to the start of the next epoch when no rank has an item left.

    An epoch with fewer items than ranks never moves (its ranks have nothing to take).
    """
    if size >= world and rank_share(size, world, index) == 0:
        return epoch + 1, 0
    return epoch, index


def position_from_cursor(cursor: int, size: int, world: int) -> tuple[int, int]:
    """The global position of a per-rank ``cursor`` of the sampler before the world size was saved.

    That sampler gave rank ``r`` the items ``j * W + r`` for ``j`` from ``cursor % (size // W)`` in
    epoch ``cursor // (size // W)``: the same items as the global position below on ``W`` ranks.
    """
    per_rank = size // world
    if per_rank == 0:
        return 0, 0
    epoch, offset = divmod(int(cursor), per_rank)
    return epoch, offset * world


class ResumableSampler(DistributedSampler):
    """Yields ``(epoch, k)`` pairs for one rank, from a global data position.

    From position ``(epoch, index)`` rank ``r`` of ``W`` yields ``k = index + r + j * W`` for
    ``j < (size - index) // W``: the ranks together take the next items of the epoch's order, and only
    the last ``(size - index) % W`` are dropped. An iteration runs to the end of the position's epoch;
    :meth:`advance` moves the position past consumed samples (into the next epoch once this rank has
    consumed its share). The sampler does not follow Lightning's epoch counter. Only
    ``len(dataset)`` is read: the dataset maps ``(epoch, k)`` to an item itself (packed windows,
    shuffled triples).

    It subclasses :class:`DistributedSampler` only so that Lightning recognises it as already
    distributed and does not wrap or replace it (Lightning's ``set_epoch`` sets an attribute this
    sampler does not read).

    Args:
        dataset: Anything with a length: the items per epoch.
        num_replicas: ``W``, the number of ranks.
        rank: This rank, in ``[0, W)``.
        epoch: The epoch of the position.
        index: Items of that epoch all ranks have consumed.
        cursor: Instead of ``epoch`` and ``index``: a per-rank count of consumed samples on ``W``
            ranks, as checkpoints held before the world size was saved.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
        index: int = 0,
        cursor: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)  # type: ignore[arg-type]
        self.size = len(dataset)
        if cursor is not None:
            epoch, index = position_from_cursor(cursor, self.size, num_replicas)
        self._epoch, self._index = normalized_position(self.size, num_replicas, int(epoch), int(index))

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, index)``: the epoch, and the items of it that all ranks have consumed."""
        return self._epoch, self._index

    def state(self) -> dict[str, int]:
        """The position as checkpoints store it, with the world size and the epoch's size."""
        return {
            "epoch": self._epoch,
            "position": self._index,
            "world_size": self.num_replicas,
            "epoch_items": self.size,
        }

    def __len__(self) -> int:
        return rank_share(self.size, self.num_replicas, self._index)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self._epoch, self._index + self.rank
        for j in range(rank_share(self.size, self.num_replicas, self._index)):
            yield epoch, start + j * self.num_replicas

    def advance(self, samples: int) -> None:
        """Move the position past ``samples`` samples this rank consumed (as did every other rank)."""
        self._epoch, self._index = normalized_position(
            self.size, self.num_replicas, self._epoch, self._index + int(samples) * self.num_replicas
        )


class ResumableDataModule(pl.LightningDataModule):
    """Base of the data modules whose training order resumes mid-epoch, on any number of ranks.

    It keeps the training :class:`ResumableSampler`, advances it once per consumed batch, and builds
    the loaders. Subclasses set :attr:`collate` and :attr:`batch_key`, put :meth:`_position_state`
    in their ``state_dict`` and pass their saved state to :meth:`_load_position`. Expects
    ``batch_size``, ``num_workers`` and ``pin_memory`` attributes.
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
        self._sampler: ResumableSampler | None = None
        # A checkpoint's position, resolved when the training loader is made: only then are the
        # training set (its size) and the world size known.
        self._restored: dict[str, Any] | None = None

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

    # -- the data position ---------------------------------------------------------------------------
    def _position_state(self) -> dict[str, Any]:
        """The training data position for a checkpoint.

        Returns:
            ``{"epoch", "position", "world_size", "epoch_items"}``: the epoch, the items of it all
            ranks have consumed, the number of ranks that consumed them and the epoch's size (None
            before the training set is opened). A restored position not used yet is returned as it
            was loaded.
        """
        if self._restored is not None:
            return dict(self._restored)
        if self._sampler is not None:
            return self._sampler.state()
        return {"epoch": 0, "position": 0, "world_size": self._rank_world()[1], "epoch_items": None}

    def _load_position(self, state: Mapping[str, Any]) -> None:
        """Take a checkpoint's position (used when the training loader is next made)."""
        keys = ("epoch", "position", "world_size", "epoch_items", "cursor")
        self._restored = {key: state[key] for key in keys if key in state}

    def _restart_position(self) -> None:
        """Start the data order from the beginning (a checkpoint of other data settings)."""
        self._restored = None
        self._sampler = None

    def _resolve_position(self, size: int, world: int) -> tuple[int, int]:
        """Where the training loader starts: the restored position if any, else where training is."""
        restored, self._restored = self._restored, None
        if restored is None:
            return self._sampler.position if self._sampler is not None else (0, 0)
        rank0 = self._rank_world()[0] == 0
        items = restored.get("epoch_items")
        if items is not None and int(items) != size:
            if rank0:
                log.warning(
                    "the checkpoint's training data had %d items per epoch, now %d: the data order "
                    "restarts from the beginning",
                    int(items),
                    size,
                )
            return 0, 0
        if "position" not in restored:
            cursor = int(restored.get("cursor", 0))
            if rank0 and cursor:
                log.warning(
                    "the checkpoint's data position is a per-rank cursor (%d samples) from a slamming that "
                    "did not record the number of ranks: it is read as made on the current %d; resumed on "
                    "another number of ranks, data is skipped or repeated",
                    cursor,
                    world,
                )
            return position_from_cursor(cursor, size, world)
        epoch, index = int(restored.get("epoch", 0)), int(restored["position"])
        saved_world = restored.get("world_size")
        if rank0 and saved_world is not None and int(saved_world) != world:
            rank_zero_info(
                f"resuming the data order at item {index} of epoch {epoch} on {world} ranks "
                f"(the checkpoint was made on {int(saved_world)})"
            )
        return epoch, index

    # -- loaders ---------------------------------------------------------------------------------------
    def _train_loader(self, dataset: Dataset) -> DataLoader:
        """The training loader, in the resumable order from the data position (kept to advance it)."""
        rank, world = self._rank_world()
        epoch, index = self._resolve_position(len(dataset), world)  # type: ignore[arg-type]
        self._sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, epoch=epoch, index=index)  # type: ignore[arg-type]
        return self._loader(dataset, self._sampler)

    def _val_loader(self, dataset: Dataset) -> DataLoader:
        """A validation loader: the dataset sharded across ranks, from the start."""
        rank, world = self._rank_world()
        return self._loader(dataset, ResumableSampler(dataset, num_replicas=world, rank=rank))  # type: ignore[arg-type]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called once per batch the training loop actually consumes (prefetched batches are not
        # transferred yet), so the position counts exactly what training has seen.
        trainer = self.trainer
        if trainer is not None and trainer.training and self._sampler is not None:
            self._sampler.advance(int(batch[self.batch_key].shape[0]))
        return batch
