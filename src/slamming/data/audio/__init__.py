"""Audio inputs: manifests of files, the fairseq2 audio pipeline, prompts, fitting a tokeniser.

- :mod:`.manifest`: which files to read, in which order, under which id (folder, tsv, jsonl).
- :mod:`.decode`: one file to a 16 kHz mono waveform, fairseq2's native decoder for WAV/FLAC and
  soundfile for the rest, the same samples either way (:class:`AudioFileDecoder`).
- :mod:`.pipeline`: 16 kHz mono batches from a manifest on fairseq2's data pipeline, sharded,
  resumable (:class:`AudioManifestDataModule`, used by ``slamming predict`` extraction).
- :mod:`.prompts`: the prompts ``slamming predict`` continues (:class:`PromptDataModule`).
- :mod:`.tokenizer_fit`: make a tokeniser from audio (k-means on sampled features) or a k-means file.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "AUDIO_SUFFIXES": ".manifest",
    "ManifestEntry": ".manifest",
    "read_manifest": ".manifest",
    "AudioFileDecoder": ".decode",
    "NATIVE_SUFFIXES": ".decode",
    "AudioBatches": ".pipeline",
    "AudioManifestDataModule": ".pipeline",
    "read_unit_prompts": ".prompts",
    "PromptDataModule": ".prompts",
    "fit_tokenizer": ".tokenizer_fit",
    "tokenizer_from_kmeans": ".tokenizer_fit",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
