"""Unit consistency across voices: the MFCC segment tokeniser vs the CTC phone tokeniser (issue 13).

Trains a phone tokeniser on the demo's first ``--stories`` training stories (spoken sentence by
sentence in the demo's four voices, as ``SyntheticSpeechDataModule(tokenizer="phone")`` does) and fits
the demo's MFCC tokeniser (k = 100, corpus normalisation, segments) on the same stories spoken whole.
Then speaks ``--test`` held-out test stories in every demo voice and in voices no tokeniser heard, and
reports for each tokeniser and voice pair the mean normalised edit distance between the unit strings
of the same story (0 = the same units; lower is better), the phone tokeniser's phoneme error rate on
the held-out voice, and the CPU seconds of fitting and of tokenising.

Usage::

    .venv/bin/python bench/units_bench.py                 # ~6 min on 2 cores; prints the table
    .venv/bin/python bench/units_bench.py --log           # and appends it to docs/perf-log.md
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from slamming.data.pretrain.tokenizer_fit import sentences
from slamming.data.text.stories import StoryGenerator
from slamming.speech.phonemes import espeak_phonemes
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tokenizers.phone_train import edit_distance, phoneme_error_rate, train_phone_tokenizer
from slamming.speech.tts import DEFAULT_VOICES, EspeakEngine, SpeechJob, plan_jobs, synthesize_many

HELD_OUT = ("en-us+f4", "en-us+klatt")
PAIRS = (
    ("en-us", "en-us+f3"),
    ("en-us", "en-us+m3"),
    ("en-us", "en-gb"),
    ("en-us", "en-us+f4"),
    ("en-us", "en-us+klatt"),
)


def disagreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean over stories of edit distance / the longer unit string."""
    return float(
        np.mean([edit_distance(list(x), list(y)) / max(len(x), len(y), 1) for x, y in zip(a, b, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", type=int, default=300, help="training stories (default 300)")
    parser.add_argument("--steps", type=int, default=500, help="phone recogniser steps (default 500)")
    parser.add_argument("--test", type=int, default=60, help="held-out test stories (default 60)")
    parser.add_argument("--log", action="store_true", help="append the result to docs/perf-log.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    engine = EspeakEngine(rate_range=(150, 190))
    stories = StoryGenerator(0).stories(args.stories, "train")
    planned = plan_jobs([s.text for s in stories], engine, 0)
    sentence_jobs = [SpeechJob(t, j.voice, j.rate, j.pitch) for j in planned for t in sentences(j.text)]
    started = time.process_time()
    wavs = list(synthesize_many(engine, sentence_jobs, workers=2, progress=False))
    labels = espeak_phonemes([j.text for j in sentence_jobs], [j.voice for j in sentence_jobs])
    phone, training = train_phone_tokenizer(wavs, labels, steps=args.steps, progress=False)
    phone_cpu = time.process_time() - started
    started = time.process_time()
    whole = list(synthesize_many(engine, planned, workers=2, progress=False))
    mfcc = MFCCTokenizer(k=100).fit(whole[:200])
    mfcc_cpu = time.process_time() - started
    test = [s.text for s in StoryGenerator(0).stories(args.test, "test")]
    voices = list(DEFAULT_VOICES) + list(HELD_OUT)
    spoken = {
        v: list(synthesize_many(engine, [SpeechJob(t, v, 170, 50) for t in test], workers=2, progress=False))
        for v in voices
    }
    audio_s = sum(w.numel() for ws in spoken.values() for w in ws) / 16000
    rows, cpu = {}, {}
    for name, tokenizer in (("mfcc", mfcc), ("phone", phone)):
        started = time.process_time()
        units = {v: [u for u, _ in tokenizer.encode_batch(spoken[v])] for v in voices}
        cpu[name] = time.process_time() - started
        rows[name] = {pair: disagreement(units[pair[0]], units[pair[1]]) for pair in PAIRS}
    per = phoneme_error_rate(phone, spoken["en-us+f4"], espeak_phonemes(test, ["en-us"] * len(test)))
    lines = [
        f"- Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"`bench/units_bench.py --stories {args.stories} --steps {args.steps} --test {args.test}`.",
        f"- Phone tokeniser: {len(phone.phonemes)} phonemes, {training.utterances} sentences "
        f"({training.hours:.2f} h), CTC loss {training.first_loss:.2f} -> {training.final_loss:.3f} in "
        f"{training.steps} steps; fit {phone_cpu:.0f} CPU s (synthesis, phonemes and training); "
        f"phoneme error rate on {args.test} stories in the unheard voice en-us+f4: **{per:.3f}**.",
        f"- MFCC tokeniser (k 100, corpus normalisation, segments) fitted on 200 of the stories: {mfcc_cpu:.0f} CPU s "
        "(synthesis of all of them included).",
        f"- Tokenising {audio_s / 3600:.2f} h of test speech: mfcc {cpu['mfcc']:.0f} CPU s, phone {cpu['phone']:.0f} CPU s.",
        "",
        "| voices (same story) | MFCC segment units | phone units |",
        "|---|---:|---:|",
        *[
            f"| {a} vs {b}{' (unheard)' if b in HELD_OUT else ''} | {rows['mfcc'][(a, b)]:.3f} | {rows['phone'][(a, b)]:.3f} |"
            for a, b in PAIRS
        ],
        "",
        "Figures are the mean normalised edit distance between the unit strings (0 = identical).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.log:
        stamp = datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
        log = Path(__file__).resolve().parent.parent / "docs" / "perf-log.md"
        with log.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## {stamp} — unit consistency across voices: MFCC vs phone units (bench/units_bench.py)\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
