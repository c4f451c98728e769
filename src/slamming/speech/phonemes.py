"""Phoneme strings of texts from espeak-ng: the labels a phone recogniser is trained on.

Only training needs them: :class:`~slamming.speech.tokenizers.phone.PhoneTokenizer` maps audio to
units with no text. espeak-ng writes its own phoneme mnemonics (``-x``), one symbol per phoneme when
asked to separate them (``--sep=_``); stress marks are not phonemes and are dropped. The symbols
depend on the voice's language (``en-gb`` says ``A:`` where ``en-us`` says ``A@``), so a text is
phonemised with the voice it was spoken in; a variant (``+f3``) changes the sound, not the phonemes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from slamming.errors import SlammingError

__all__ = ["STRESS_MARKS", "espeak_phonemes", "parse_phonemes", "voice_language"]

#: espeak-ng's primary and secondary stress marks and its pause/emphasis marks: not phonemes.
STRESS_MARKS = "'," + "%=_|"


def voice_language(voice: str) -> str:
    """The language part of an espeak-ng voice name: ``"en-us+f3"`` → ``"en-us"``."""
    return voice.split("+", 1)[0]


def parse_phonemes(output: str) -> list[str]:
    """espeak-ng ``-x --sep=_`` output → phoneme symbols in order (words and lines joined).

    Example:
        ``"l_'I_l_i f_'aU_n_d"`` gives ``["l", "I", "l", "i", "f", "aU", "n", "d"]``.
    """
    symbols = []
    for word in output.split():
        for piece in word.split("_"):
            symbol = piece.strip(STRESS_MARKS)
            if symbol:
                symbols.append(symbol)
    return symbols


def _phonemise(program: str, text: str, language: str, timeout: float) -> list[str]:
    command = [program, "-q", "-x", "--sep=_", "-v", language]
    try:
        result = subprocess.run(
            command, input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise SlammingError(
            f"espeak-ng took over {timeout:.0f} s to phonemise a {len(text)}-character text; split it"
        ) from err
    if result.returncode != 0:
        reason = " ".join(result.stderr.decode("utf-8", "replace").split()) or f"exit {result.returncode}"
        raise SlammingError(
            f"espeak-ng could not phonemise with voice {language!r}: {reason}; "
            "list the installed voices with `espeak-ng --voices=en`"
        )
    return parse_phonemes(result.stdout.decode("utf-8", "replace"))


def espeak_phonemes(
    texts: Sequence[str],
    voices: Sequence[str],
    program: str = "espeak-ng",
    workers: int = 2,
    timeout: float = 60.0,
) -> list[list[str]]:
    """The espeak-ng phoneme symbols of each text in its voice's language.

    Args:
        texts: what was spoken.
        voices: the espeak-ng voice each text was spoken in (same length as ``texts``).
        program: the espeak-ng executable.
        workers: parallel espeak-ng processes.
        timeout: seconds one text may take.

    Returns:
        One list of symbols per text, in order.

    Raises:
        SlammingError: espeak-ng is missing, rejects a voice or hangs; or the lengths differ.
    """
    if len(texts) != len(voices):
        raise SlammingError(f"got {len(texts)} texts but {len(voices)} voices; give one voice per text")
    found = shutil.which(program)
    if found is None:
        raise SlammingError(
            f"the phonemiser {program!r} was not found on PATH; install it with `apt-get install espeak-ng`"
        )
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        return list(
            pool.map(
                lambda pair: _phonemise(found, pair[0], voice_language(pair[1]), timeout),
                zip(texts, voices, strict=True),
            )
        )
