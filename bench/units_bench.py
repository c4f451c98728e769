"""Unit consistency across voices: MFCC segment units vs CTC phone units (issue 13, item 1).

Fits three tokenisers on the demo's first ``--stories`` training stories, the way
``SyntheticSpeechDataModule`` fits them:

- ``mfcc``: the demo's MFCC tokeniser (k = 100, change-point segments, corpus statistics), on the
  stories spoken whole in the demo's four voices;
- ``phone-4``: a phone recogniser trained on the stories' sentences in the demo's four voices only;
- ``phone-25``: the same with :data:`~slamming.speech.tts.RECOGNISER_VARIANTS` too (the default).

Then speaks ``--test`` held-out test stories in the demo's voices and in
:data:`~slamming.speech.tts.HELD_OUT_VOICES` (never trained on), and prints for each tokeniser and
voice pair the mean normalised edit distance between the unit strings of the same story
(:func:`~slamming.speech.tokenizers.phone_train.unit_disagreement`: 0 = the same units, lower is
better), each phone tokeniser's phoneme error rate per held-out voice, and the CPU seconds of fitting
(of the main process: synthesis runs in worker processes) and of tokenising.

Usage::

    .venv/bin/python bench/units_bench.py                 # ~12 min on 2 cores; prints the table
    .venv/bin/python bench/units_bench.py --log           # and appends it to docs/perf-log.md
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from slamming.data.pretrain.tokenizer_fit import fit_phone_tokenizer
from slamming.data.text.stories import StoryGenerator
from slamming.speech.phonemes import espeak_phonemes
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tokenizers.phone_train import phoneme_error_rate, unit_disagreement
from slamming.speech.tts import (
    DEFAULT_VOICES,
    HELD_OUT_VOICES,
    RECOGNISER_VARIANTS,
    EspeakEngine,
    SpeechJob,
    plan_jobs,
    synthesize_many,
)

REFERENCE = "en-us"
OTHERS = ("en-us+f3", "en-us+m3", "en-gb", *HELD_OUT_VOICES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", type=int, default=300, help="fitting stories (default 300)")
    parser.add_argument("--steps", type=int, default=500, help="phone recogniser steps (default 500)")
    parser.add_argument("--test", type=int, default=60, help="held-out test stories (default 60)")
    parser.add_argument("--log", action="store_true", help="append the result to docs/perf-log.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    engine = EspeakEngine(rate_range=(150, 190))
    texts = [s.text for s in StoryGenerator(0).stories(args.stories, "train")]
    tokenizers, fit_cpu, notes = {}, {}, []
    started = time.process_time()
    whole = list(synthesize_many(engine, plan_jobs(texts, engine, 0), workers=2, progress=False))
    tokenizers["mfcc"] = MFCCTokenizer(k=100).fit(whole[:200], seed=0)
    fit_cpu["mfcc"] = time.process_time() - started
    del whole
    for name, voices in (("phone-4", DEFAULT_VOICES), ("phone-25", (*DEFAULT_VOICES, *RECOGNISER_VARIANTS))):
        started = time.process_time()
        tokenizers[name], report = fit_phone_tokenizer(
            engine, texts, voices=voices, k=None, steps=args.steps, seed=0, workers=2, progress=False
        )
        fit_cpu[name] = time.process_time() - started
        notes.append(
            f"- {name}: {len(voices)} training voices, {report['sentences']} sentences ({report['hours']:.2f} h), "
            f"CTC loss {report['first_loss']:.2f} -> {report['final_loss']:.3f} in {report['steps']} steps."
        )
    test = [s.text for s in StoryGenerator(0).stories(args.test, "test")]
    voices = (REFERENCE, *OTHERS)
    spoken = {
        v: list(synthesize_many(engine, [SpeechJob(t, v, 170, 50) for t in test], workers=2, progress=False))
        for v in voices
    }
    audio_h = sum(w.numel() for ws in spoken.values() for w in ws) / 16000 / 3600
    rows, encode_cpu = {}, {}
    for name, tokenizer in tokenizers.items():
        started = time.process_time()
        units = {v: [u for u, _ in tokenizer.encode_batch(spoken[v])] for v in voices}
        encode_cpu[name] = time.process_time() - started
        rows[name] = {v: unit_disagreement(units[REFERENCE], units[v]) for v in OTHERS}
    reference = espeak_phonemes(test, [REFERENCE] * len(test))
    per = {
        (name, v): phoneme_error_rate(tokenizers[name], spoken[v], reference)
        for name in ("phone-4", "phone-25")
        for v in (REFERENCE, *HELD_OUT_VOICES)
    }
    names = list(tokenizers)
    lines = [
        f"- Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"`bench/units_bench.py --stories {args.stories} --steps {args.steps} --test {args.test}`.",
        *notes,
        "",
        f"| same story, {REFERENCE} vs | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *[
            f"| {v}{' (never heard)' if v in HELD_OUT_VOICES else ''} | "
            + " | ".join(f"{rows[n][v]:.3f}" for n in names)
            + " |"
            for v in OTHERS
        ],
        "| fit, main-process CPU s (the 2 synthesis workers not counted) | "
        + " | ".join(f"{fit_cpu[n]:.0f}" for n in names)
        + " |",
        f"| tokenising {audio_h:.2f} h, CPU s (2 threads) | "
        + " | ".join(f"{encode_cpu[n]:.0f}" for n in names)
        + " |",
        "",
        "Mean normalised edit distance between the unit strings (0 = identical). Phoneme error rate "
        f"against espeak-ng's {REFERENCE} phonemes of the {args.test} test stories:",
        "",
        *[
            f"- {name}: " + ", ".join(f"{v} {per[name, v]:.3f}" for v in (REFERENCE, *HELD_OUT_VOICES))
            for name in ("phone-4", "phone-25")
        ],
    ]
    text = "\n".join(lines)
    print(text)
    if args.log:
        stamp = datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
        log = Path(__file__).resolve().parent.parent / "docs" / "perf-log.md"
        with log.open("a", encoding="utf-8") as out:
            out.write(f"\n## {stamp} — unit consistency across voices (bench/units_bench.py)\n\n{text}\n")


if __name__ == "__main__":
    main()
