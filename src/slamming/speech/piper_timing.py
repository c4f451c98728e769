"""Word timings from Piper's phoneme durations: which samples of an utterance speak which word.

:class:`~slamming.speech.piper.PiperEngine` uses these with ``timings=True``; they are kept apart
from the engine because they only need the phonemes and their durations, so they are tested alone.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from slamming.errors import SlammingError
from slamming.speech.tts import WordTiming

if TYPE_CHECKING:
    from piper import AudioChunk

__all__ = ["sound_spans", "text_words", "word_timings"]

_STRESS = frozenset("ˈˌ")


def text_words(text: str) -> list[str]:
    """The words :meth:`PiperEngine.synthesize_with_timings` reports for ``text``, in order.

    A word is a whitespace-separated token with at least one letter or digit, stripped of the
    characters before its first and after its last letter or digit (``"field."`` gives ``"field"``,
    ``"don't"`` and ``"5:30"`` stay whole). Tokens without a letter or digit (``"--"``, ``"&"``) are
    not words: they get no entry, and what is spoken for them (``"&"`` is read "and") belongs to no word.
    """
    words = []
    for token in text.split():
        alnum = [i for i, char in enumerate(token) if char.isalnum()]
        if alnum:
            words.append(token[alnum[0] : alnum[-1] + 1])
    return words


def _is_sound(phoneme: str) -> bool:
    """A phoneme that is heard: an IPA letter, mark or tone digit; not stress, space or punctuation."""
    return phoneme not in _STRESS and unicodedata.category(phoneme[0])[0] in "LMN"


def sound_spans(chunks: Sequence[AudioChunk], id_map: dict[str, list[int]]) -> list[tuple[str, int, int]]:
    """``(phoneme, start, end)`` in voice samples of every heard phoneme of the concatenated chunks.

    Mirrors piper's ``phonemes_to_ids`` (BOS, PAD, then each phoneme's ids and a PAD, then EOS;
    phonemes missing from the id map are skipped). A phoneme lasts the samples of its ids and the PAD
    after it; a stress mark's samples go to the phoneme it stresses.
    """
    from piper.const import BOS, PAD

    spans: list[tuple[str, int, int]] = []
    offset = 0
    for chunk in chunks:
        samples = chunk.phoneme_id_samples
        if samples is None or len(samples) != len(chunk.phoneme_ids):
            raise SlammingError(
                "the Piper voice returned no phoneme durations, so it cannot give word timings; "
                "use a voice whose ONNX graph has the Ceil durations output"
            )
        edges = np.concatenate([[0], np.cumsum(samples, dtype=np.int64)])
        pos, pad = len(id_map[BOS]) + len(id_map[PAD]), len(id_map[PAD])
        stress_start: int | None = None
        for phoneme in chunk.phonemes:
            if phoneme not in id_map:
                continue
            width = len(id_map[phoneme]) + pad
            start, end = offset + int(edges[pos]), offset + int(edges[pos + width])
            pos += width
            if phoneme in _STRESS:
                stress_start = start if stress_start is None else stress_start
                continue
            if _is_sound(phoneme):
                spans.append((phoneme, start if stress_start is None else stress_start, end))
            stress_start = None
        offset += len(chunk.audio_float_array)
    return spans


def word_timings(
    text: str, sounds: Sequence[tuple[str, float, float]], phonemize: Callable[[str], list[str]]
) -> list[WordTiming]:
    """Map the heard phonemes of an utterance of ``text`` onto its words.

    espeak-ng phonemises a sentence in context: it joins words (``"in the"`` becomes ``ɪnðə``),
    expands numbers and abbreviations (``"5:30"``, ``"Mr."``) and ends sentences inside a text, so
    spaces in the utterance do not mark its words. Instead each whitespace token is phonemised alone
    with ``phonemize``; the concatenated heard phonemes (stress marks dropped) are aligned with the
    utterance's by :class:`difflib.SequenceMatcher`. Matched phonemes take their token's word; in a
    mismatched stretch the utterance's phonemes are shared out in proportion; unmatched utterance
    phonemes between two tokens join the earlier one. A word spans the start of its first heard
    phoneme to the end of its last, so pauses between words belong to none. A word none of whose
    phonemes were heard gets a zero-length span where it would have been.

    Args:
        text: the spoken text; its words are :func:`text_words`.
        sounds: ``(phoneme, start_s, end_s)`` of each heard phoneme of the utterance, in order.
        phonemize: phonemes of one token, e.g. piper's ``PiperVoice.phonemize`` flattened.

    Returns:
        ``(word, start_s, end_s)`` per word, in order, with ``start <= end <= next start``.
    """
    tokens = text.split()
    reference: list[str] = []
    bounds = [0]
    for token in tokens:
        reference.extend(ph for ph in phonemize(token) if _is_sound(ph))
        bounds.append(len(reference))
    heard = [phoneme for phoneme, _, _ in sounds]
    cut = [0] * (len(reference) + 1)
    matcher = difflib.SequenceMatcher(None, reference, heard, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for t in range(i2 - i1):
            cut[i1 + t] = j1 + (t if tag == "equal" else t * (j2 - j1) // (i2 - i1))
    cut[0], cut[-1] = 0, len(heard)
    last_end = float(sounds[-1][2]) if sounds else 0.0
    timings: list[WordTiming] = []
    for k, token in enumerate(tokens):
        word = text_words(token)
        if not word:
            continue
        lo, hi = cut[bounds[k]], cut[bounds[k + 1]]
        if lo < hi:
            start, end = float(sounds[lo][1]), float(sounds[hi - 1][2])
        else:
            start = end = float(sounds[lo][1]) if lo < len(sounds) else last_end
        timings.append((word[0], start, end))
    return timings
