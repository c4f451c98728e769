"""Resumable data order: a rank-sharded sampler with a global position, and the DataModule base that keeps it.

- :mod:`.resumable`: :class:`ResumableSampler` (``(epoch, k)`` items for one rank, resuming from a
  global position: epoch and items consumed by all ranks), :class:`ResumableDataModule` (the
  position, its checkpoint state with the world size, and the
  loaders built on the sampler; :class:`~slamming.data.pretrain.datamodule.UnitDataModule` and
  :class:`~slamming.data.preference.datamodule.PreferenceDataModule` derive from it) and
  :func:`path_list`.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "ResumableSampler": ".resumable",
    "ResumableDataModule": ".resumable",
    "path_list": ".resumable",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
