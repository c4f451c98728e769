"""Resumable data order: a rank-sharded sampler with a cursor, and the DataModule base that keeps it.

- :mod:`.resumable`: :class:`ResumableSampler` (``(epoch, k)`` items for one rank, resuming from a
  cursor of consumed samples), :class:`ResumableDataModule` (the cursor, its checkpoint state and the
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
