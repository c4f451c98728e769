"""Embedded pair benchmarks on disk: the pairs of :mod:`slamming.data.benchmarks.embedded_pairs`, spoken.

:func:`build_embedded_benchmarks` speaks every pair with espeak-ng and writes, for each benchmark
(``lexical``, ``syntactic``, ``topic_cloze``, ``spoken_cloze``), the generic pair manifest the
benchmark reader takes::

    <out_dir>/<benchmark>/manifest.jsonl   {"positive", "negative", "id", "group", "voice"} per line
                                           (and "prefix" for the cloze benchmarks), wav paths
                                           relative to the manifest's folder
    <out_dir>/<benchmark>/texts.jsonl      {"id", "group", "positive", "negative"}: what was said
    <out_dir>/<benchmark>/wav/<voice>/     <id>_pos.wav, <id>_neg.wav (and <id>_pre.wav) (16 kHz mono PCM-16)
    <out_dir>/done.json                    settings, their key, counts, hours of speech

The two sides of a pair share voice, rate and pitch, so only their content differs. Lexical and
syntactic pairs are short and spoken in every voice, sharing their ``id`` across voices as in
ZeroSpeech; the cloze pairs are stories, each in one voice (pair ``i`` in voice ``i mod
len(voices)``), as the real ones are single-speaker, and both cloze benchmarks speak a story's
positive alike. A cloze pair's two texts differ only in the last sentence, so the sentences before
it are spoken once as the pair's ``prefix`` and the two endings apart: the sides' units are the
prefix's followed by the ending's (:class:`~slamming.tasks.PairEvaluation`), identical up to the
ending, at less than half the speech to synthesise and tokenise. An utterance the build has already
spoken (the same text, voice, rate and pitch: the spoken cloze's prefixes and positives are the
topic cloze's) is not synthesised again: its file is a hard link to the first one (a copy where the
file system has no links), byte for byte what speaking it again would write. The default voices and ranges are
those of ``configs/tiny/pretrain.yaml``, so the benchmarks sound like the embedded training data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from slamming.atomic import atomic_build, read_done
from slamming.data.benchmarks.embedded_pairs import (
    BENCHMARKS,
    TextPair,
    embedded_pairs,
    lexical_pairs,
    spoken_cloze_pairs,
    syntactic_pairs,
    topic_cloze_pairs,
)
from slamming.errors import SlammingError
from slamming.hashing import settings_key
from slamming.locks import build_once
from slamming.speech.audio import write_wav
from slamming.speech.speak import speak_groups
from slamming.speech.tts import DEFAULT_VOICES, EspeakEngine, SpeechJob, plan_jobs

__all__ = [
    "BENCHMARKS",
    "BUILD_VERSION",
    "TextPair",
    "build_embedded_benchmarks",
    "embedded_pairs",
    "lexical_pairs",
    "split_beginning",
    "spoken_cloze_pairs",
    "syntactic_pairs",
    "topic_cloze_pairs",
]

#: Bump when the output changes for the same settings (a cached build then no longer matches).
BUILD_VERSION = 2  # 2: the cloze pairs' shared beginning spoken once, as their prefix
#: The speaking ranges of configs/tiny/pretrain.yaml, so the benchmarks sound like the training data.
DEFAULT_RATE_RANGE = (150, 190)
DEFAULT_PITCH_RANGE = (35, 65)
SAMPLE_RATE = 16000
# Benchmarks spoken in every voice; the others get one voice per pair.
_EVERY_VOICE = frozenset({"lexical", "syntactic"})
# Benchmarks whose pairs share all sentences but the last: that beginning is spoken once.
_SHARED_BEGINNING = frozenset({"topic_cloze", "spoken_cloze"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_beginning(positive: str, negative: str) -> tuple[str, str, str]:
    """``(beginning, positive ending, negative ending)``: the whole sentences both texts start with
    (never all of either), and what follows them in each.

    Raises:
        SlammingError: the texts share no first sentence, so there is no beginning to share.
    """
    a, b = _SENTENCE_END.split(positive), _SENTENCE_END.split(negative)
    k = 0
    while k < min(len(a), len(b)) - 1 and a[k] == b[k]:
        k += 1
    if k == 0:
        raise SlammingError(f"the two sides share no first sentence: {positive[:60]!r} / {negative[:60]!r}")
    return " ".join(a[:k]), " ".join(a[k:]), " ".join(b[k:])


def _espeak_version() -> str:
    """espeak-ng's version line: its rules decide the phonemes, so it is part of the cache key."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise SlammingError(
            "the TTS program 'espeak-ng' was not found on PATH; install it with `apt-get install espeak-ng` "
            "(Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
        )
    out = subprocess.run([found, "--version"], capture_output=True, check=False).stdout.decode(
        errors="replace"
    )
    return out.split("Data at")[0].strip()


def _voice_dirs(voices: Sequence[str]) -> dict[str, str]:
    dirs = {voice: re.sub(r"[^A-Za-z0-9._-]", "_", voice) for voice in voices}
    if len(voices) == 0 or len(set(dirs.values())) != len(voices):
        raise SlammingError(f"voices must be one or more distinct espeak-ng voice names, got {list(voices)}")
    return dirs


def build_embedded_benchmarks(
    out_dir: str | Path,
    num_pairs: int = 400,
    voices: Sequence[str] = DEFAULT_VOICES,
    seed: int = 0,
    tts_workers: int = 2,
    progress: bool = True,
    rate_range: tuple[int, int] = DEFAULT_RATE_RANGE,
    pitch_range: tuple[int, int] = DEFAULT_PITCH_RANGE,
    cloze_pairs: int | None = None,
) -> dict[str, Any]:
    """Speak the four embedded benchmarks into ``out_dir`` (layout in the module doc).

    The folder is built as ``<out_dir>.partial`` and renamed when complete, so a folder with
    ``done.json`` is always whole. The build holds :func:`~slamming.locks.build_lock` of ``out_dir``:
    a second process building the same folder at once waits, then reuses the first one's build.
    Calling again with the same settings reuses it (and says so);
    other settings, or a folder that is not a finished build, are an error: nothing is overwritten.
    Audio is streamed: each utterance is written as soon as it is spoken.

    Args:
        out_dir: the folder to create.
        num_pairs: text pairs per benchmark (lexical and syntactic ones are spoken in every voice).
        voices: espeak-ng voices; the defaults are the tiny pretraining config's.
        seed: seed of the stories, the pairs and the rate/pitch plan; must be >= 0.
        tts_workers: concurrent espeak-ng processes.
        progress: show a progress bar per benchmark.
        rate_range: inclusive words-per-minute range; a pair's two sides share one rate.
        pitch_range: inclusive espeak-ng pitch range; a pair's two sides share one pitch.
        cloze_pairs: pairs of each cloze benchmark (one voice per pair); None: ``num_pairs``.

    Returns:
        The summary written to ``done.json`` plus ``"reused"``: whether an earlier build was reused.

    Raises:
        SlammingError: bad settings, espeak-ng missing or failing, or ``out_dir`` in the way.
    """
    out_dir = Path(out_dir)
    if num_pairs < 1 or seed < 0 or (cloze_pairs is not None and cloze_pairs < 1):
        raise SlammingError(
            "num_pairs and cloze_pairs must be >= 1 and seed >= 0, got "
            f"num_pairs={num_pairs}, cloze_pairs={cloze_pairs}, seed={seed}"
        )
    voice_dirs = _voice_dirs(voices)
    settings: dict[str, Any] = {
        "build_version": BUILD_VERSION,
        "num_pairs": int(num_pairs),
        "voices": list(voices),
        "seed": int(seed),
        "rate_range": [int(rate_range[0]), int(rate_range[1])],
        "pitch_range": [int(pitch_range[0]), int(pitch_range[1])],
        "sample_rate": SAMPLE_RATE,
        "espeak": _espeak_version(),
    }
    if cloze_pairs is not None and cloze_pairs != num_pairs:  # else the key of the builds before it
        settings["cloze_pairs"] = int(cloze_pairs)
    key = settings_key(settings)

    def build() -> dict[str, Any]:
        engine = EspeakEngine(voices, rate_range=rate_range, pitch_range=pitch_range, sample_rate=SAMPLE_RATE)
        return _build(out_dir, key, settings, engine, voice_dirs, tts_workers, progress)

    return build_once(out_dir, lambda: _reusable(out_dir, key), build)


def _build(
    out_dir: Path,
    key: str,
    settings: dict[str, Any],
    engine: EspeakEngine,
    voice_dirs: dict[str, str],
    tts_workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Speak the benchmarks into ``out_dir`` (under its build lock); returns the summary."""
    num_pairs, seed = settings["num_pairs"], settings["seed"]
    started = time.monotonic()
    with atomic_build(out_dir) as (partial, summary):
        stats = {}
        said: dict[SpeechJob, tuple[Path, int]] = {}  # every utterance written so far: file, samples
        made = embedded_pairs(num_pairs, seed, settings.get("cloze_pairs"))
        for index, (name, pairs) in enumerate(made.items()):
            # Both cloze benchmarks share one plan: their positives are the same stories, spoken alike.
            plan_seed = seed * len(BENCHMARKS) + min(index, BENCHMARKS.index("topic_cloze"))
            stats[name] = _speak(
                partial / name, name, pairs, engine, voice_dirs, plan_seed, tts_workers, progress, said
            )
        summary.update(
            key=key,
            settings=settings,
            benchmarks=stats,
            hours=sum(s["hours"] for s in stats.values()),
            build_seconds=round(time.monotonic() - started, 1),
        )
    rank_zero_info(
        f"built the embedded benchmarks in {out_dir} in {summary['build_seconds']:.0f} s: "
        + ", ".join(f"{s['rows']} {name} pairs" for name, s in stats.items())
        + f", {summary['hours']:.2f} h of speech"
    )
    return {**summary, "reused": False}


def _reusable(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The finished build of these settings in ``out_dir``, None when there is none, or an error."""
    summary = read_done(out_dir)
    if summary is not None:
        if summary.get("key") == key:
            rank_zero_info(
                f"reusing the embedded benchmarks in {out_dir} ({summary.get('hours', 0.0):.2f} h of speech)"
            )
            return {**summary, "reused": True}
        raise SlammingError(
            f"{out_dir} holds embedded benchmarks built with other settings ({summary.get('settings')}); "
            "choose another out_dir, or remove it to rebuild"
        )
    if out_dir.exists():
        raise SlammingError(f"{out_dir} exists but is not a finished benchmark build; choose another out_dir")
    return None


def _speak(
    folder: Path,
    name: str,
    pairs: list[TextPair],
    engine: EspeakEngine,
    voice_dirs: dict[str, str],
    plan_seed: int,
    workers: int,
    progress: bool,
    said: dict[SpeechJob, tuple[Path, int]],
) -> dict[str, Any]:
    """Speak one benchmark's pairs into ``folder``: wavs, ``manifest.jsonl`` and ``texts.jsonl``.

    ``said`` maps every utterance the build has written to its file and sample count; one already
    in it is linked, not spoken, and each one spoken here is added.
    """
    voices = list(voice_dirs)
    if name in _EVERY_VOICE:
        rows = [(pair, voice) for pair in pairs for voice in voices]
    else:
        rows = [(pair, voices[i % len(voices)]) for i, pair in enumerate(pairs)]
    plans = plan_jobs([pair.positive for pair, _ in rows], engine, plan_seed)
    shared = name in _SHARED_BEGINNING
    sides = ("prefix", "positive", "negative") if shared else ("positive", "negative")
    jobs = []
    for (pair, voice), plan in zip(rows, plans, strict=True):
        texts = split_beginning(pair.positive, pair.negative) if shared else (pair.positive, pair.negative)
        jobs += [dataclasses.replace(plan, voice=voice, text=text) for text in texts]
    folder.mkdir(parents=True)
    with (folder / "texts.jsonl").open("w", encoding="utf-8") as texts:
        for pair in pairs:
            texts.write(json.dumps(dataclasses.asdict(pair)) + "\n")
    samples = 0
    # Each utterance not yet written, once, in the order the rows below first need it.
    fresh = list(dict.fromkeys(job for job in jobs if job not in said))
    stream = speak_groups(engine, fresh, desc=f"Speaking {name}", workers=workers, progress=progress)
    try:
        with (folder / "manifest.jsonl").open("w", encoding="utf-8") as manifest:
            for r, (pair, voice) in enumerate(rows):
                entry = {"id": pair.id, "group": pair.group, "voice": voice}
                for side, job in zip(sides, jobs[r * len(sides) : (r + 1) * len(sides)], strict=True):
                    relative = f"wav/{voice_dirs[voice]}/{pair.id}_{side[:3]}.wav"
                    path = folder / relative
                    if job in said:
                        _link(said[job][0], path)
                    else:
                        [spoken] = next(stream)
                        write_wav(path, spoken.wav, SAMPLE_RATE)
                        said[job] = (path, spoken.wav.shape[-1])
                    samples += said[job][1]
                    entry[side] = relative
                manifest.write(json.dumps(entry) + "\n")
    finally:
        stream.close()
    return {
        "pairs": len(pairs),
        "rows": len(rows),
        "groups": dict(sorted(Counter(pair.group for pair in pairs).items())),
        "hours": samples / SAMPLE_RATE / 3600,
        "manifest": f"{name}/manifest.jsonl",
    }


def _link(source: Path, path: Path) -> None:
    """Make ``path`` the file ``source`` (a hard link; a copy where the file system has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)
