"""Fit the synthetic corpus's tokeniser on its first training texts: MFCC k-means, or a phone recogniser.

:class:`~slamming.data.pretrain.synthetic.SyntheticSpeechDataModule` calls :func:`fit_mfcc_tokenizer`
(the texts spoken whole; statistics and k-means fitted on them) or, with ``tokenizer: phone``,
:func:`fit_phone_tokenizer`. A recogniser learns from many short utterances far faster than from a
few long ones (CTC aligns a sentence sooner than a story, and the GRU's cost is per frame), so each
fitting text is spoken one sentence at a time, each sentence in a voice drawn from the corpus's
voices and :data:`~slamming.speech.tts.RECOGNISER_VARIANTS` (by default), so that the units hold on
voices the recogniser never heard. The labels are espeak-ng's phonemes of each sentence in that
voice's language. Those sentences train the recogniser only; the corpus speaks its texts anew.
With ``merges``, the same labels (as unit strings) teach the tokeniser its byte-pair merges
(:mod:`slamming.speech.tokenizers.merges`): no extra audio is spoken or tokenised for them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from slamming.errors import ConfigError
from slamming.speech.phonemes import espeak_phonemes
from slamming.speech.speak import speak_groups
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tokenizers.merges import learn_merges
from slamming.speech.tokenizers.phone import PhoneTokenizer
from slamming.speech.tokenizers.phone_train import train_phone_tokenizer
from slamming.speech.tts import EspeakEngine, SpeechJob, TTSEngine, WordTiming, plan_jobs, synthesize_many

__all__ = ["PHONE_PITCH_RANGE", "PHONE_RATE_RANGE", "fit_mfcc_tokenizer", "fit_phone_tokenizer", "sentences"]

#: Speaking rates (words per minute) and pitches (0-99) of the phone recogniser's training sentences:
#: wider than the corpus's, so the recogniser hears more ways of saying a phoneme.
PHONE_RATE_RANGE = (140, 200)
PHONE_PITCH_RANGE = (30, 70)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """``text`` cut after each ``.``, ``!`` or ``?`` that a space follows (the whole text when none)."""
    return [part for part in _SENTENCE_END.split(text.strip()) if part.strip()] or [text]


def fit_mfcc_tokenizer(
    engine: TTSEngine, jobs: list[SpeechJob], settings: dict[str, Any], *, workers: int, progress: bool
) -> tuple[MFCCTokenizer, list[tuple[torch.Tensor, list[WordTiming] | None]]]:
    """Speak ``jobs`` and fit the MFCC tokeniser's statistics and k-means on them (the build's
    ``settings``); returns it and the spoken ``(waveform, words)``, to be reused for the corpus."""
    spoken = [
        (one.wav, one.words)
        for [one] in speak_groups(
            engine,
            jobs,
            desc="Speaking the k-means fitting texts",
            timings=True,
            workers=workers,
            progress=progress,
        )
    ]
    tokenizer = MFCCTokenizer(
        k=settings["num_units"],
        frame_rate=settings["frame_rate"],
        segment=settings["segment"],
        normalization=settings.get("normalization", "utterance"),
    )
    tokenizer.fit([wav for wav, _ in spoken], seed=settings["kmeans_seed"])
    return tokenizer, spoken


def fit_phone_tokenizer(
    engine: EspeakEngine,
    texts: list[str],
    *,
    voices: Sequence[str],
    k: int | None,
    steps: int,
    seed: int,
    workers: int,
    progress: bool,
    merges: int = 0,
) -> tuple[PhoneTokenizer, dict[str, Any]]:
    """Train a phone tokeniser on ``texts`` spoken sentence by sentence.

    Each sentence gets its own voice of ``voices`` and a rate and pitch from the wider
    :data:`PHONE_RATE_RANGE` and :data:`PHONE_PITCH_RANGE`, drawn from ``seed``: the more voices a
    recogniser hears, the better it reads one it never heard. With ``merges`` > 0 the tokeniser
    also learns that many byte-pair merges of its units from the sentences' phoneme labels.

    Returns:
        The tokeniser and a summary for ``done.json`` (sentences, hours, steps, seconds, first and
        final CTC loss, merges learnt).

    Raises:
        ConfigError: ``k`` is too small for the phonemes and merges.
    """
    started = time.perf_counter()
    speaker = EspeakEngine(voices, PHONE_RATE_RANGE, PHONE_PITCH_RANGE, engine.sample_rate, engine.program)
    jobs = plan_jobs([part for text in texts for part in sentences(text)], speaker, seed)
    rank_zero_info(
        f"training the phone tokeniser on {len(texts)} texts ({len(jobs)} sentences in {len(voices)} voices) "
        f"with espeak-ng phoneme labels, {steps} steps"
    )
    wavs = list(synthesize_many(speaker, jobs, workers=workers, progress=progress))
    labels = espeak_phonemes([j.text for j in jobs], [j.voice for j in jobs], workers=workers)
    keep = [i for i, label in enumerate(labels) if label]  # "..." alone has no phonemes
    symbols = len({symbol for label in labels for symbol in label})
    if k is not None and symbols + merges > k:  # said now, not after minutes of training
        raise ConfigError(
            f"data.num_units {k} cannot hold the {symbols} phonemes of the recogniser's texts and "
            f"{merges} merges; set data.num_units to at least {symbols + merges} or lower data.phone_merges"
        )
    tokenizer, summary = train_phone_tokenizer(
        [wavs[i] for i in keep], [labels[i] for i in keep], steps=steps, seed=seed, k=k, progress=progress
    )
    if merges > 0:
        index = {symbol: unit for unit, symbol in enumerate(tokenizer.phonemes)}
        strings = [[index[symbol] for symbol in labels[i]] for i in keep]
        tokenizer = tokenizer.with_merges(learn_merges(strings, merges, len(tokenizer.phonemes)), k=k)
    report = {
        "sentences": len(keep),
        "hours": round(summary.hours, 3),
        "steps": summary.steps,
        "first_loss": round(summary.first_loss, 4),
        "final_loss": round(summary.final_loss, 4),
        "merges": len(tokenizer.merges),
        "seconds": round(time.perf_counter() - started, 1),
    }
    rank_zero_info(
        f"phone tokeniser: {len(tokenizer.phonemes)} phonemes, {len(tokenizer.merges)} merges, CTC loss {summary.first_loss:.2f} -> "
        f"{summary.final_loss:.3f} in {summary.steps} steps ({report['seconds']:.0f} s in all)"
    )
    return tokenizer, report
