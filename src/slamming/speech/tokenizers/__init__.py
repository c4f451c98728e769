"""Unit tokenisers: speech → deduplicated units, saved as a folder, loaded by kind.

- :mod:`.base`: the folder format, :func:`dedup`, :func:`check_identity`, :func:`load_tokenizer` and
  the :class:`UnitTokenizer` protocol.
- :mod:`.identity`: :func:`unknown_identity`, what units whose tokeniser nobody named record.
- :mod:`.mfcc`: :class:`MFCCTokenizer`, the embedded, download-free tokeniser.
- :mod:`.phone`: :class:`PhoneTokenizer`, units from a small CTC phone recogniser, the same in every
  voice (trained by :mod:`.phone_train`).
- :mod:`.hubert`: :class:`HubertTokenizer`, HuBERT layer features quantised by k-means (the paper's).
- :mod:`.spec`: :class:`HubertTokenizerSpec`, a HuBERT tokeniser named by model, layer and k-means
  file, made into a folder once (configs/tokenize.yaml), and :func:`hubert_from_kmeans`.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "UnitTokenizer": ".base",
    "dedup": ".base",
    "check_identity": ".base",
    "unit_spans": ".base",
    "unknown_identity": ".identity",
    "is_unknown": ".identity",
    "UNKNOWN_KIND": ".identity",
    "save_tokenizer_files": ".base",
    "read_config": ".base",
    "recorded_identity": ".base",
    "load_tokenizer": ".base",
    "NORMALIZATIONS": ".mfcc",
    "MFCCTokenizer": ".mfcc",
    "PhoneTokenizer": ".phone",
    "HubertTokenizer": ".hubert",
    "HubertTokenizerSpec": ".spec",
    "hubert_from_kmeans": ".spec",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
