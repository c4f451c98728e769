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

:func:`train_story_phone_tokenizer` (``slamming tokenizer train-phone``) does the same on the
generated stories alone and saves the result with a record of how it was made: that is how the
phone tokeniser that ships with slamming (``data.phone_tokenizer: bundled``) was trained.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from slamming.atomic import write_text_atomic
from slamming.data.text.stories import StoryGenerator
from slamming.errors import ConfigError, SlammingError
from slamming.speech.phonemes import espeak_phonemes
from slamming.speech.speak import speak_groups
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tokenizers.base import CONFIG_FILE
from slamming.speech.tokenizers.merges import learn_merges
from slamming.speech.tokenizers.phone import PhoneTokenizer, phone_tokenizer_dir
from slamming.speech.tokenizers.phone_train import train_phone_tokenizer
from slamming.speech.tts import (
    DEFAULT_VOICES,
    RECOGNISER_VARIANTS,
    EspeakEngine,
    SpeechJob,
    TTSEngine,
    WordTiming,
    plan_jobs,
    synthesize_many,
)

__all__ = [
    "PHONE_PITCH_RANGE",
    "PHONE_RATE_RANGE",
    "TRAINING_RECORD",
    "fit_mfcc_tokenizer",
    "fit_phone_tokenizer",
    "phone_build_settings",
    "sentences",
    "train_story_phone_tokenizer",
]

#: The file beside a tokeniser saved by :func:`train_story_phone_tokenizer` that says how it was made.
TRAINING_RECORD = "training.json"

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


def phone_build_settings(
    settings: dict[str, Any],
    *,
    steps: int,
    merges: int,
    voices: Sequence[str] | None,
    given: str | None,
    seed: int,
) -> tuple[PhoneTokenizer, Path] | None:
    """Make a synthetic build's ``settings`` (its cache key) those of a ``tokenizer: phone`` build, in place.

    A phone build has no k-means or MFCC settings. With ``given`` (``data.phone_tokenizer``: a folder
    or ``"bundled"``) the tokeniser is opened now and its identity keys the build instead of the
    recogniser's training settings; otherwise those settings do (``phone_voices`` by default the
    corpus's voices and :data:`~slamming.speech.tts.RECOGNISER_VARIANTS`).

    Returns:
        The given tokeniser and its folder, or None when the build trains one.

    Raises:
        ConfigError: ``steps`` < 1, ``merges`` outside ``[0, num_units)``, or a given tokeniser
            that is missing, whose K is not ``num_units`` or whose merges are not ``merges`` (or 0).
        SlammingError: a given tokeniser's files are malformed.
    """
    num_units = settings["num_units"]
    if int(steps) < 1:
        raise ConfigError(f"data.phone_steps must be >= 1, got {steps}")
    if not 0 <= int(merges) < num_units:
        raise ConfigError(f"data.phone_merges must be in [0, data.num_units), got {merges}")
    for name in ("frame_rate", "segment", "kmeans_seed"):  # MFCC builds' keys stay as they were
        del settings[name]
    if given is None:
        settings.update(
            tokenizer="phone",
            phone_steps=int(steps),
            phone_seed=int(seed),
            phone_voices=list(dict.fromkeys(voices or [*settings["voices"], *RECOGNISER_VARIANTS])),
            **({"phone_merges": int(merges)} if int(merges) else {}),  # else the old key
        )
        return None
    path = phone_tokenizer_dir(given)
    tokenizer = PhoneTokenizer.load(path)
    if tokenizer.k != num_units:
        raise ConfigError(
            f"data.num_units is {num_units} but the phone tokeniser in {path} has K = {tokenizer.k}; "
            f"set data.num_units: {tokenizer.k}"
        )
    if int(merges) not in (0, len(tokenizer.merges)):
        raise ConfigError(
            f"data.phone_merges is {merges} but the phone tokeniser in {path} has "
            f"{len(tokenizer.merges)} merges; drop data.phone_merges (a given tokeniser brings its own)"
        )
    del settings["fit_stories"]  # it trains nothing here
    settings.update(tokenizer="phone", phone_tokenizer=tokenizer.identity)
    return tokenizer, path


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


def train_story_phone_tokenizer(
    out: str | Path,
    *,
    stories: int = 1000,
    story_seed: int = 0,
    steps: int = 4000,
    merges: int = 300,
    k: int = 400,
    seed: int = 0,
    voices: Sequence[str] | None = None,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a phone tokeniser on the first ``stories`` generated training stories and save it in ``out``.

    The same as a ``tokenizer: phone`` build of :class:`~slamming.data.pretrain.synthetic.SyntheticSpeechDataModule`
    with ``num_train_stories`` >= ``stories`` (its ``fit_stories``), ``story_seed``, ``phone_steps``
    = ``steps``, ``phone_merges`` = ``merges``, ``num_units`` = ``k``, ``kmeans_seed`` = ``seed`` and
    ``phone_voices`` = ``voices`` (default: the corpus's four voices and
    :data:`~slamming.speech.tts.RECOGNISER_VARIANTS`): the stories are spoken sentence by sentence
    and the recogniser trained by :func:`fit_phone_tokenizer`. Besides the tokeniser, ``out`` gets
    :data:`TRAINING_RECORD`: these settings, the command that repeats them, the training summary
    and the versions of slamming, torch and espeak-ng it ran with.

    Returns:
        The record written to :data:`TRAINING_RECORD`.

    Raises:
        SlammingError: ``out`` already holds a tokeniser and ``overwrite`` is False (said before
            any training).
        ConfigError: ``stories`` < 1, or ``k`` too small for the phonemes and merges.
    """
    out = Path(out)
    if (out / CONFIG_FILE).exists() and not overwrite:
        raise SlammingError(f"{out} already holds a tokeniser; pass --overwrite to replace it")
    if stories < 1:
        raise ConfigError(f"stories must be >= 1, got {stories}")
    chosen = list(dict.fromkeys(voices or [*DEFAULT_VOICES, *RECOGNISER_VARIANTS]))
    texts = [story.text for story in StoryGenerator(story_seed).stories(stories, "train")]
    engine = EspeakEngine(voices=DEFAULT_VOICES)
    tokenizer, report = fit_phone_tokenizer(
        engine, texts, voices=chosen, k=k, steps=steps, seed=seed, workers=workers,
        progress=progress, merges=merges,
    )  # fmt: skip
    tokenizer.save(out, overwrite=overwrite)
    settings = {
        "stories": stories,
        "story_seed": story_seed,
        "steps": steps,
        "merges": merges,
        "k": k,
        "seed": seed,
        "voices": chosen,
    }
    command = (
        f"slamming tokenizer train-phone --out {out} --stories {stories} --story-seed {story_seed} "
        f"--steps {steps} --merges {merges} --k {k} --seed {seed}"
    )
    if voices:
        command += " --voices " + " ".join(chosen)
    record = {
        "settings": settings,
        "command": command,
        "training": report,
        "identity": tokenizer.identity,
        "versions": _versions(engine.program),
        "made": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    write_text_atomic(out / TRAINING_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def _versions(program: str) -> dict[str, str | None]:
    """slamming's, torch's and Python's versions, the CPU's instruction set and espeak-ng's ``--version`` line."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        slamming_version: str | None = version("slamming")
    except PackageNotFoundError:
        slamming_version = None
    espeak = None
    executable = shutil.which(program)
    if executable:
        try:
            done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10)
            espeak = done.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            espeak = None
    return {
        "slamming": slamming_version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "espeak-ng": espeak,
    }
