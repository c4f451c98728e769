"""The unit corpus: memory-mapped uint16 token shards, int64 offsets and a ``meta.json``.

- :mod:`.format`: the format's constants, :class:`UnitCorpus` (open, verify, read) and ``summarize``.
- :mod:`.meta`: the ``meta.json`` checksum and open-time checks, and ``member_path`` (a file name
  read from an index must be a plain name inside its folder).
- :mod:`.verified`: verification skipped when a corpus's files are unchanged since the last one.
- :mod:`.writer`: :class:`CorpusWriter`, streaming documents into a new corpus atomically.
- :mod:`.slamkit`: import and export of the authors' (slamkit) features/tokens jsonl files.
- ``atomic_build`` (from :mod:`slamming.atomic`): building any data folder under ``.partial`` and renaming it.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "FORMAT_VERSION": ".format",
    "MAX_UNITS": ".format",
    "UnitCorpus": ".format",
    "summarize": ".format",
    "CorpusWriter": ".writer",
    "ImportReport": ".slamkit",
    "import_features_jsonl": ".slamkit",
    "import_tokens_jsonl": ".slamkit",
    "export_features_jsonl": ".slamkit",
    "export_tokens_jsonl": ".slamkit",
    "atomic_build": "slamming.atomic",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
