"""Issue 13, item 1: the phone tokeniser's units for the same story agree across voices far better
than the MFCC units of the demo do, including in a voice the recogniser never heard.

The phone tokeniser measured first is the one the demo uses, the one that ships with slamming
(``data.phone_tokenizer: bundled``; its ``training.json`` says it heard none of
:data:`~slamming.speech.tts.HELD_OUT_VOICES`), by its phonemes before the merges. The slow test trains one the way
``SyntheticSpeechDataModule`` does (the fitting stories spoken sentence by sentence in the demo's
voices and the recogniser variants), on fewer stories than the demo, and holds it to the same
bounds: the recipe, not only its one product. The MFCC tokeniser is the demo's earlier default
(k = 100, change-point segments, corpus statistics) fitted on the same stories spoken whole.
``en-us+f4`` and ``en-us+klatt`` are voices neither heard. The figure is ``bench/units_bench.py``'s:
the mean over stories of the edit distance between the two voices' unit strings, over the longer
string (0 = the same units).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slamming.data.pretrain.tokenizer_fit import TRAINING_RECORD, fit_phone_tokenizer
from slamming.data.text.stories import StoryGenerator
from slamming.speech.tokenizers import MFCCTokenizer, UnitTokenizer
from slamming.speech.tokenizers.phone import BUNDLED_PHONE_TOKENIZER, PhoneTokenizer
from slamming.speech.tokenizers.phone_train import unit_disagreement
from slamming.speech.tts import (
    DEFAULT_VOICES,
    HELD_OUT_VOICES,
    RECOGNISER_VARIANTS,
    EspeakEngine,
    SpeechJob,
    synthesize_many,
)

FIT_STORIES = 200
PHONE_STEPS = 500
TEST_STORIES = 12
VOICES = ["en-us+f3", "en-us+m3", "en-gb", *HELD_OUT_VOICES]
ENGINE = {"rate_range": (150, 190)}


@pytest.fixture(scope="module")
def speech(espeak: EspeakEngine) -> dict[str, list[torch.Tensor]]:  # noqa: ARG001 - skips without espeak-ng
    """The test stories (never trained on) spoken in each voice at one rate and pitch."""
    engine = EspeakEngine(**ENGINE)
    texts = [s.text for s in StoryGenerator(0).stories(TEST_STORIES, "test")]
    return {
        voice: list(synthesize_many(engine, [SpeechJob(t, voice, 170, 50) for t in texts], progress=False))
        for voice in ("en-us", *VOICES)
    }


@pytest.fixture(scope="module")
def mfcc(speech: dict[str, list[torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    fit_texts = [s.text for s in StoryGenerator(0).stories(FIT_STORIES, "train")]
    jobs = [SpeechJob(t, DEFAULT_VOICES[i % 4], 170, 50) for i, t in enumerate(fit_texts)]
    tokenizer = MFCCTokenizer(k=100).fit(
        list(synthesize_many(EspeakEngine(**ENGINE), jobs, progress=False)), seed=0
    )
    return _units(tokenizer, speech)


def _units(tokenizer: UnitTokenizer, speech: dict[str, list[torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    return {voice: [u for u, _ in tokenizer.encode_batch(wavs)] for voice, wavs in speech.items()}


def _check(phone: dict[str, list[np.ndarray]], mfcc: dict[str, list[np.ndarray]], voice: str) -> float:
    """Hold the phone units of ``voice`` to the shared bounds; returns their disagreement with en-us."""
    mfcc_d = unit_disagreement(mfcc["en-us"], mfcc[voice])
    phone_d = unit_disagreement(phone["en-us"], phone[voice])
    print(f"en-us vs {voice}: phone {phone_d:.3f}, mfcc {mfcc_d:.3f}")
    assert phone_d < 0.6 * mfcc_d, f"en-us vs {voice}: phone {phone_d:.3f}, mfcc {mfcc_d:.3f}"
    assert phone_d < (0.4 if voice in HELD_OUT_VOICES else 0.25), f"en-us vs {voice}: phone {phone_d:.3f}"
    return phone_d


@pytest.fixture(scope="module")
def bundled(speech: dict[str, list[torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    record = json.loads((BUNDLED_PHONE_TOKENIZER / TRAINING_RECORD).read_text())
    tokenizer = PhoneTokenizer.load(BUNDLED_PHONE_TOKENIZER)
    assert record["identity"] == tokenizer.identity  # the record describes these weights
    assert not set(HELD_OUT_VOICES) & set(record["settings"]["voices"])
    assert record["settings"]["voices"] == [*DEFAULT_VOICES, *RECOGNISER_VARIANTS]
    # The recogniser's phonemes, before its 300 merges: merging joins neighbours into one unit, so one
    # phoneme heard differently changes a unit that spans several (the merged strings disagree ~2.5x
    # more for the same recognition: docs/perf-log.md, 2026-12-03 18:39).
    return {voice: [tokenizer.spell(u) for u in units] for voice, units in _units(tokenizer, speech).items()}


# What the bundled recogniser (1,000 stories, 4,000 steps) measured here, with ~3x headroom: its
# predecessor (300 stories, 500 steps) measured f3 0.109, en-gb 0.200, f4 0.163 and klatt 0.314 and
# would fail these bounds; en-gb keeps real accent differences (docs/perf-log.md, 2026-12-04 19:00).
BUNDLED_CEILING = {"en-us+f3": 0.02, "en-us+m3": 0.02, "en-gb": 0.15, "en-us+f4": 0.04, "en-us+klatt": 0.25}


@pytest.mark.parametrize("voice", VOICES)
def test_bundled_phone_units_agree_across_voices_far_better_than_mfcc_units(
    bundled, mfcc, voice: str
) -> None:
    measured = _check(bundled, mfcc, voice)
    assert measured < BUNDLED_CEILING[voice], f"en-us vs {voice}: bundled phone units {measured:.3f}"


@pytest.fixture(scope="module")
def trained(speech: dict[str, list[torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    voices = [*DEFAULT_VOICES, *RECOGNISER_VARIANTS]
    assert not set(HELD_OUT_VOICES) & set(voices)
    fit_texts = [s.text for s in StoryGenerator(0).stories(FIT_STORIES, "train")]
    tokenizer, report = fit_phone_tokenizer(
        EspeakEngine(**ENGINE),
        fit_texts,
        voices=voices,
        k=70,
        steps=PHONE_STEPS,
        seed=0,
        workers=2,
        progress=False,
    )
    assert report["final_loss"] < 0.1 * report["first_loss"], report
    return _units(tokenizer, speech)


@pytest.mark.slow
@pytest.mark.parametrize("voice", VOICES)
def test_a_recogniser_trained_as_the_build_does_agrees_across_voices_too(trained, mfcc, voice: str) -> None:
    _check(trained, mfcc, voice)
