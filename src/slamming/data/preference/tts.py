"""Text preference triples → spoken unit triples: TTS, a saved unit tokeniser, preference corpora.

This is how SpokenSwag is made (reference/slam-recipe.md §1.5): every side of every triple is
spoken by TTS and tokenised into units. The three sides of one triple are spoken with the *same*
voice, rate and pitch; only the triples differ in voice. Were the chosen side spoken by one voice
and the rejected by another, DPO could learn to prefer a voice instead of a continuation.

:func:`build_spoken_preferences` writes one build folder::

    <out_dir>/train/    a preference corpus (:mod:`slamming.data.preference.corpus`)
    <out_dir>/val/      the same for held-out triples, when there are any
    <out_dir>/done.json counts, hours of speech, build time and the caller's settings

It builds into ``<out_dir>.partial`` and renames it when done, so a folder with ``done.json`` is
always complete; callers cache builds under ``<cache_dir>/<source>-<key>`` with
:func:`spoken_preference_key` over every setting that changes the content. The build holds a file
lock on the folder (:func:`~slamming.locks.build_lock`): a second process building the same folder
at once waits, then returns the first one's build, which ``done.json`` shows to be of the same
inputs (its ``inputs`` key).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from slamming.atomic import atomic_build, read_done
from slamming.data.preference.corpus import PreferenceCorpusWriter
from slamming.data.preference.text import TextTriple, triples_hash
from slamming.errors import SlammingError
from slamming.hashing import settings_key
from slamming.locks import build_once
from slamming.speech.speak import speak_groups
from slamming.speech.tokenizers import HubertTokenizer, MFCCTokenizer, load_tokenizer
from slamming.speech.tts import TTSEngine, plan_jobs

__all__ = ["BUILD_VERSION", "build_spoken_preferences", "spoken_preference_key"]

#: Bump when the build's output changes for the same settings (invalidates old caches).
BUILD_VERSION = 1
#: Sample rate the unit tokenisers read (MFCC and HuBERT both take 16 kHz).
_TOKENIZER_RATE = 16000
# Triple ids listed in the skip log line before "and N more".
_SHOWN_SKIPS = 5


def spoken_preference_key(settings: dict[str, Any]) -> str:
    """A 16-hex-digit key of a build's settings: sha256 of their key-sorted JSON.

    The caller puts in everything that changes the content: the texts' hash
    (:func:`~slamming.data.preference.text.triples_hash`), the engine, voices and ranges, the TTS
    seed and the tokeniser identity.

    Raises:
        ValueError: a setting is not JSON-serialisable (its text would not be a stable key).
    """
    try:
        return settings_key(settings)
    except TypeError as err:
        raise ValueError(f"spoken preference settings must be JSON-serialisable: {err}") from err


def build_spoken_preferences(
    out_dir: str | Path,
    train: list[TextTriple],
    val: list[TextTriple],
    tokenizer_dir: str | Path,
    engine: TTSEngine,
    tts_seed: int = 0,
    tts_workers: int = 2,
    progress: bool = True,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Speak and tokenise preference triples into ``out_dir/train`` (and ``out_dir/val``).

    Triple ``i`` of a split is spoken in the voice, rate and pitch that :func:`plan_jobs` gives its
    prompt (seed ``tts_seed`` for train, ``tts_seed + 1`` for val); its chosen and rejected sides
    reuse them. A triple with a side that tokenises to no units is skipped, counted in the summary
    and logged, not an error.

    Args:
        out_dir: the build folder to create; an existing complete one is never replaced: one built
            from the same inputs (triples, tokeniser, engine settings, seed and ``info``, as its
            ``done.json`` records) is returned as it is, any other is an error.
        train: training triples (at least one).
        val: held-out triples (may be empty: no ``val`` corpus then).
        tokenizer_dir: a saved unit tokeniser (:func:`~slamming.speech.tokenizers.load_tokenizer`).
        engine: the TTS engine; it must speak at 16 kHz, the tokenisers' rate.
        tts_seed: seed of the voice/rate/pitch plan.
        tts_workers: concurrent syntheses.
        progress: show a progress bar per split.
        info: JSON-serialisable settings kept in ``done.json`` and each corpus's ``preference.json``.

    Returns:
        The summary also written to ``done.json`` (that of the finished build, when one of the same
        inputs was there).

    Raises:
        SlammingError: ``out_dir`` holds another build or is not a finished build, no training
            triples, a bad tokeniser folder, an engine at another sample rate, or a split in which no
            triple gave units.
    """
    out_dir = Path(out_dir)
    if not train:
        raise SlammingError(f"no training triples to speak into {out_dir}; give at least one")
    if engine.sample_rate != _TOKENIZER_RATE:
        raise SlammingError(
            f"the TTS engine speaks at {engine.sample_rate} Hz but unit tokenisers read {_TOKENIZER_RATE} Hz; "
            f"create the engine with sample_rate={_TOKENIZER_RATE}"
        )
    tokenizer = load_tokenizer(tokenizer_dir)
    inputs = spoken_preference_key(
        {
            "build_version": BUILD_VERSION,
            "train": triples_hash(train),
            "val": triples_hash(val),
            "tokenizer": tokenizer.identity,
            "engine": type(engine).__name__,
            "voices": list(engine.voices),
            "rate_range": list(engine.rate_range),
            "pitch_range": list(engine.pitch_range),
            "tts_seed": int(tts_seed),
            "info": dict(info or {}),
        }
    )
    return build_once(
        out_dir,
        lambda: _finished(out_dir, inputs),
        lambda: _build(out_dir, train, val, tokenizer, engine, tts_seed, tts_workers, progress, info, inputs),
    )


def _finished(out_dir: Path, inputs: str) -> dict[str, Any] | None:
    """The ``done.json`` of the finished build of ``inputs`` in ``out_dir``; None when there is none.

    Raises:
        SlammingError: ``out_dir`` holds a build of other inputs, or is not a finished build.
    """
    summary = read_done(out_dir)
    if summary is not None:
        if summary.get("inputs") == inputs:
            rank_zero_info(f"reusing the spoken preference build {out_dir} (same triples and settings)")
            return summary
        raise SlammingError(
            f"{out_dir} already holds a finished spoken preference build of other triples or settings; "
            "use it, or remove it to rebuild"
        )
    if out_dir.exists():
        raise SlammingError(
            f"{out_dir} exists but is not a finished build (no done.json); remove it or choose another folder"
        )
    return None


def _build(
    out_dir: Path,
    train: list[TextTriple],
    val: list[TextTriple],
    tokenizer: MFCCTokenizer | HubertTokenizer,
    engine: TTSEngine,
    tts_seed: int,
    tts_workers: int,
    progress: bool,
    info: dict[str, Any] | None,
    inputs: str,
) -> dict[str, Any]:
    """Speak and write both splits into ``out_dir`` (under its build lock); returns the summary."""
    started = time.monotonic()
    with atomic_build(out_dir) as (partial, summary):
        splits: dict[str, dict[str, Any]] = {}
        for split, seed, triples in (("train", tts_seed, train), ("val", tts_seed + 1, val)):
            if triples:
                splits[split] = _write_split(
                    partial / split, split, triples, engine, tokenizer, seed, tts_workers, progress, info
                )
        seconds = sum(s["seconds"] for s in splits.values())
        summary.update(
            build_version=BUILD_VERSION,
            splits=splits,
            hours=seconds / 3600,
            build_seconds=time.monotonic() - started,
            tokenizer=tokenizer.identity,
            tts_seed=int(tts_seed),
            voices=list(engine.voices),
            info=dict(info or {}),
            inputs=inputs,
        )
    rank_zero_info(
        f"built {out_dir} in {summary['build_seconds']:.0f} s: {summary['hours']:.2f} h of speech, "
        + ", ".join(f"{s['triples']} {name} triples" for name, s in splits.items())
    )
    return summary


def _write_split(
    path: Path,
    split: str,
    triples: list[TextTriple],
    engine: TTSEngine,
    tokenizer: MFCCTokenizer | HubertTokenizer,
    seed: int,
    workers: int,
    progress: bool,
    info: dict[str, Any] | None,
) -> dict[str, Any]:
    """Speak, tokenise and write one split's preference corpus; returns its counts."""
    plans = plan_jobs([t.prompt for t in triples], engine, seed)
    jobs = []
    for triple, plan in zip(triples, plans, strict=True):
        # One voice per triple: the chosen and rejected sides copy the prompt's plan.
        jobs += [
            plan,
            dataclasses.replace(plan, text=triple.chosen),
            dataclasses.replace(plan, text=triple.rejected),
        ]
    seconds = 0.0
    tokens = {"prompt": 0, "chosen": 0, "rejected": 0}
    skipped: list[str] = []
    corpus_info = {**(info or {}), "split": split, "tts_seed": int(seed), "build_version": BUILD_VERSION}
    stream = speak_groups(
        engine, jobs, desc=f"Speaking preference triples ({split})", group=3, unit="triple",
        tokenizer=tokenizer, workers=workers, progress=progress,
    )  # fmt: skip
    try:
        with PreferenceCorpusWriter(path, tokenizer.identity, tokenizer.k, info=corpus_info) as writer:
            for triple, plan, spoken in zip(triples, plans, stream, strict=True):
                encoded = [(side.units, side.durations) for side in spoken]
                seconds += sum(side.wav.numel() for side in spoken) / engine.sample_rate
                if any(len(units) == 0 for units, _ in encoded):
                    skipped.append(triple.id)
                    continue
                (prompt, prompt_d), (chosen, chosen_d), (rejected, rejected_d) = encoded
                writer.add(
                    prompt,
                    chosen,
                    rejected,
                    durations=(prompt_d, chosen_d, rejected_d),
                    texts=(triple.prompt, triple.chosen, triple.rejected),
                    source=f"{triple.id}|{plan.voice}|{plan.rate}|{plan.pitch}",
                )
                for side, (units, _) in zip(tokens, encoded, strict=True):
                    tokens[side] += len(units)
            if writer.num_triples == 0:  # raising inside the block discards the partial corpus
                raise SlammingError(
                    f"none of the {len(triples)} {split} triples gave units on every side; "
                    "check the TTS engine and the tokeniser (a tokeniser fitted on other speech?)"
                )
    finally:
        stream.close()  # stops the TTS threads early if writing failed
    if skipped:
        more = f" and {len(skipped) - _SHOWN_SKIPS} more" if len(skipped) > _SHOWN_SKIPS else ""
        rank_zero_info(
            f"skipped {len(skipped)} of {len(triples)} {split} triples whose speech gave no units on a side "
            f"(ids {', '.join(skipped[:_SHOWN_SKIPS])}{more})"
        )
    return {
        "triples": len(triples) - len(skipped),
        "skipped": len(skipped),
        "skipped_ids": skipped,
        "seconds": seconds,
        "hours": seconds / 3600,
        "tokens": tokens,
    }
