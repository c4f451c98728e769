"""Data: the unit corpus format and every dataset the stages read, one subpackage per concept.

- :mod:`slamming.data.corpus`: the on-disk unit corpus (format, reader, writer, the authors' jsonl
  import/export, atomic folder builds).
- :mod:`slamming.data.text`: text for speech synthesis (the seeded story generator, users' text files,
  the story vocabulary and non-words).
- :mod:`slamming.data.sampling`: the resumable, rank-sharded sampler and the DataModule base that
  keeps its global position (and world size) in checkpoints.
- :mod:`slamming.data.pretrain`: packed, document-masked windows and the pretraining DataModules
  (unit corpora, synthetic speech made on first use).
- :mod:`slamming.data.preference`: preference triples for DPO (text, TTS, preference corpora, batches).
- :mod:`slamming.data.benchmarks`: pair benchmarks (published layouts and the embedded ones).
- :mod:`slamming.data.audio`: audio manifests, the fairseq2 audio pipeline, generation prompts and
  tokeniser fitting from audio.

The DataModules and corpus classes are re-exported here, so configs name them by short, stable
class paths (``slamming.data.UnitDataModule``); modules are imported on first use.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "UnitCorpus": "slamming.data.corpus",
    "CorpusWriter": "slamming.data.corpus",
    "UnitDataModule": "slamming.data.pretrain",
    "SyntheticSpeechDataModule": "slamming.data.pretrain",
    "PreferenceDataModule": "slamming.data.preference",
    "SpokenPreferenceDataModule": "slamming.data.preference",
    "PairBenchmarkDataModule": "slamming.data.benchmarks",
    "EmbeddedBenchmarkDataModule": "slamming.data.benchmarks",
    "AudioManifestDataModule": "slamming.data.audio",
    "PromptDataModule": "slamming.data.audio",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
