"""Text to be spoken: the seeded story generator, users' text corpora, the story vocabulary.

- :mod:`.stories`: short English stories whose endings agree with their beginnings, split by hash.
- :mod:`.reader`: users' text files (plain lines, jsonl, TinyStories), split into TTS-sized pieces.
- :mod:`.lexicon`: the generator's vocabulary and pronounceable non-words made from it.
- :mod:`.repetition`: auto-BLEU, the self-repetition of a text (DPO data filter, generation metric).
"""

from slamming.exports import lazy_exports

_NAMES = {
    "Story": ".stories",
    "StoryGenerator": ".stories",
    "split_of": ".stories",
    "prefix_and_ending": ".stories",
    "swap_ending": ".stories",
    "swap_character": ".stories",
    "contradict_ending": ".stories",
    "TextCorpus": ".reader",
    "TextReport": ".reader",
    "read_texts": ".reader",
    "detect_format": ".reader",
    "split_texts": ".reader",
    "split_by_hash": ".reader",
    "text_id": ".reader",
    "auto_bleu": ".repetition",
    "story_vocabulary": ".lexicon",
    "nonwords": ".lexicon",
    "espeak_phonemes": ".lexicon",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
