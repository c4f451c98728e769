"""Preference data for DPO: (prompt, chosen, rejected) triples from text to batches.

- :mod:`.text`: text triples (jsonl, SWAG CSV, embedded stories), splits and the auto-BLEU filter.
- :mod:`.tts`: text triples spoken by TTS and tokenised into preference corpora, cached.
- :mod:`.corpus`: preference corpora on disk (aligned unit triples) and their writer.
- :mod:`.sources`: one reading interface over preference corpora and the authors' jsonl.
- :mod:`.datamodule`: the authors' tokenisation of a triple, batches, :class:`PreferenceDataModule`.
- :mod:`.spoken`: :class:`SpokenPreferenceDataModule`, text triples → TTS → units on first use.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "TextTriple": ".text",
    "read_triples_jsonl": ".text",
    "read_swag_csv": ".text",
    "story_triples": ".text",
    "split_triples": ".text",
    "filter_auto_bleu": ".text",
    "build_spoken_preferences": ".tts",
    "PreferenceCorpus": ".corpus",
    "PreferenceCorpusWriter": ".corpus",
    "PreferenceSource": ".sources",
    "JsonlPreferences": ".sources",
    "open_source": ".sources",
    "preference_example": ".datamodule",
    "collate_preferences": ".datamodule",
    "PreferenceDataset": ".datamodule",
    "PreferenceDataModule": ".datamodule",
    "SpokenPreferenceDataModule": ".spoken",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
