"""Pair benchmarks (sWUGGY, sBLIMP, StoryCloze, SALMon, manifests): readers, data, embedded ones.

"Benchmark" here means a likelihood benchmark of (positive, negative) audio pairs; performance
benchmarks live in the repository's ``bench/`` folder (``make bench``).

- :mod:`.readers`: the published layouts read into :class:`PairBenchmark` lists of :class:`Pair`.
- :mod:`.datamodule`: one test dataloader of audio pairs per benchmark (published or embedded).
- :mod:`.embedded_pairs`: the text of the embedded stand-ins, made from the story generator.
- :mod:`.embedded`: the embedded pairs spoken by espeak-ng into the ZeroSpeech/StoryCloze layouts.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "KINDS": ".readers",
    "Pair": ".readers",
    "PairBenchmark": ".readers",
    "load_benchmarks": ".readers",
    "PairAudioDataset": ".datamodule",
    "PairBenchmarkDataModule": ".datamodule",
    "EmbeddedBenchmarkDataModule": ".datamodule",
    "TextPair": ".embedded_pairs",
    "embedded_pairs": ".embedded_pairs",
    "build_embedded_benchmarks": ".embedded",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
