"""Pretraining data: packed, document-masked windows from unit corpora, and their DataModules.

- :mod:`.packing`: fixed-length windows filled from whole documents, collation, document masks.
- :mod:`.windows`: epoch plans over a mixture of corpora and the window dataset (served in order by
  :class:`~slamming.data.sampling.ResumableSampler`).
- :mod:`.datamodule`: :class:`UnitDataModule`, packed windows for next-unit pretraining.
- :mod:`.synthetic`: :class:`SyntheticSpeechDataModule`, texts → TTS → units, cached, then packed.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "num_windows": ".packing",
    "build_window": ".packing",
    "collate_packed": ".packing",
    "document_attention_mask": ".packing",
    "pad_documents": ".packing",
    "EpochPlan": ".windows",
    "PackedWindowDataset": ".windows",
    "UnitDataModule": ".datamodule",
    "SyntheticSpeechDataModule": ".synthetic",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
