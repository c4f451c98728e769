"""Text to speech: real espeak-ng synthesis, seeded plans, ordered parallel synthesis, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from slamming.errors import SlammingError
from slamming.speech.tts import DEFAULT_VOICES, EspeakEngine, SpeechJob, TTSEngine, plan_jobs, synthesize_many

SENTENCE = "The little fox ran across the green field to find his friend."  # 12 words


class FakeEngine(TTSEngine):
    """Returns ``[len(text)]`` after a delay that makes later jobs finish first; counts calls."""

    def __init__(self, voices: Sequence[str] = ("a", "b", "c"), fail_on: str | None = None) -> None:
        super().__init__(voices, rate_range=(100, 110), pitch_range=(0, 3))
        self.fail_on = fail_on
        self.calls = 0
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> torch.Tensor:
        with self._lock:
            self.calls += 1
        if text == self.fail_on:
            raise SlammingError(f"cannot speak {text}")
        time.sleep(0.02 if len(text) % 2 else 0.001)
        return torch.tensor([float(len(text))])


def test_espeak_speaks_a_sentence_at_16k(espeak: EspeakEngine) -> None:
    wav = espeak.synthesize(SENTENCE, "en-us", 175, 50)
    assert espeak.sample_rate == 16000
    assert wav.dtype == torch.float32 and wav.dim() == 1
    seconds = wav.shape[0] / 16000
    # 12 words at 175 words per minute is ~4 s of speech, plus espeak-ng's short edge silences.
    assert 2.5 < seconds < 6.0
    assert 0.02 < float(wav.pow(2).mean().sqrt()) and float(wav.abs().max()) <= 1.0


def test_espeak_is_deterministic(espeak: EspeakEngine) -> None:
    job = SpeechJob(SENTENCE, "en-us+f3", 160, 60)
    assert torch.equal(espeak.synthesize_job(job), espeak.synthesize_job(job))


def test_voices_rates_and_pitches_change_the_audio(espeak: EspeakEngine) -> None:
    us = espeak.synthesize(SENTENCE, "en-us", 175, 50)
    gb = espeak.synthesize(SENTENCE, "en-gb", 175, 50)
    assert us.shape != gb.shape or not torch.allclose(us, gb, atol=1e-3)
    slow = espeak.synthesize(SENTENCE, "en-us", 120, 50)
    fast = espeak.synthesize(SENTENCE, "en-us", 240, 50)
    assert slow.shape[0] > 1.5 * fast.shape[0]
    high = espeak.synthesize(SENTENCE, "en-us", 175, 90)
    assert high.shape != us.shape or not torch.allclose(high, us, atol=1e-3)


def test_text_starting_with_a_dash_is_spoken_not_parsed(espeak: EspeakEngine) -> None:
    # Were the text on the command line, "--version" would print the version and no audio.
    wav = espeak.synthesize("--version", "en-us", 175, 50)
    assert wav.shape[0] > 0.3 * 16000


def test_missing_program_says_how_to_install() -> None:
    engine = EspeakEngine(program="espeak-ng-not-installed-here")
    with pytest.raises(
        SlammingError, match=r"'espeak-ng-not-installed-here' was not found.*apt-get install espeak-ng"
    ):
        engine.synthesize("hello", "en-us", 175, 50)


def test_unknown_voice_is_a_clear_error(espeak: EspeakEngine) -> None:
    with pytest.raises(SlammingError, match=r"voice 'xx-nowhere'.*espeak-ng --voices=en") as err:
        espeak.synthesize("hello", "xx-nowhere", 175, 50)
    assert "\n" not in str(err.value)


def test_empty_text_is_refused(espeak: EspeakEngine) -> None:
    with pytest.raises(ValueError, match="empty text"):
        espeak.synthesize("  \n", "en-us", 175, 50)


def test_engine_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="at least one voice"):
        EspeakEngine(voices=[])
    with pytest.raises(ValueError, match="rate_range"):
        EspeakEngine(rate_range=(200, 100))
    assert EspeakEngine().voices == list(DEFAULT_VOICES) and len(DEFAULT_VOICES) >= 4


def test_plan_is_seeded_and_within_ranges() -> None:
    engine = FakeEngine()
    texts = [f"text {i}" for i in range(300)]
    plan = plan_jobs(texts, engine, seed=7)
    assert plan == plan_jobs(texts, engine, seed=7)
    assert plan != plan_jobs(texts, engine, seed=8)
    assert [job.text for job in plan] == texts
    assert {job.voice for job in plan} == {"a", "b", "c"}
    assert {job.rate for job in plan} == set(range(100, 111))
    assert {job.pitch for job in plan} == {0, 1, 2, 3}


def test_plan_of_a_text_does_not_depend_on_later_texts() -> None:
    engine = FakeEngine()
    texts = [f"text {i}" for i in range(50)]
    assert plan_jobs(texts[:5], engine, seed=3) == plan_jobs(texts, engine, seed=3)[:5]
    with pytest.raises(ValueError, match="non-negative"):
        plan_jobs(texts, engine, seed=-1)


def test_synthesize_many_keeps_input_order() -> None:
    engine = FakeEngine()
    jobs = plan_jobs(["x" * n for n in range(1, 30)], engine, seed=0)
    out = list(synthesize_many(engine, jobs, workers=3, progress=False))
    assert [float(wav[0]) for wav in out] == [float(n) for n in range(1, 30)]


def test_synthesize_many_with_espeak_equals_one_by_one(espeak: EspeakEngine) -> None:
    jobs = plan_jobs(["Hello there.", "The cat sat on the mat.", "Good night, moon."], espeak, seed=1)
    streamed = list(synthesize_many(espeak, jobs, workers=2, progress=False))
    assert len(streamed) == 3
    for job, wav in zip(jobs, streamed, strict=True):
        assert torch.equal(wav, espeak.synthesize_job(job))


def test_progress_bar_can_be_switched_off(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FakeEngine()
    jobs = plan_jobs(["ab", "abc"], engine, seed=0)
    list(synthesize_many(engine, jobs, progress=False))
    assert "Synthesising speech" not in capsys.readouterr().err
    list(synthesize_many(engine, jobs, progress=True))
    err = capsys.readouterr().err
    assert "Synthesising speech" in err and "2/2" in err and "utt" in err


def test_stopping_early_does_not_synthesise_everything() -> None:
    engine = FakeEngine()
    jobs = (SpeechJob(f"t{i}", "a", 100, 0) for i in range(1000))  # a stream: no total
    stream = synthesize_many(engine, jobs, workers=1, progress=False)
    assert float(next(stream)[0]) == 2.0
    stream.close()
    # Only the in-flight window (4 x workers) was ever submitted.
    assert engine.calls <= 5


def test_a_failing_job_raises_in_place() -> None:
    engine = FakeEngine(fail_on="bad")
    jobs = [SpeechJob(text, "a", 100, 0) for text in ("ok", "bad", "ok")]
    stream = synthesize_many(engine, jobs, workers=2, progress=False)
    assert float(next(stream)[0]) == 2.0
    with pytest.raises(SlammingError, match="cannot speak bad"):
        next(stream)
    with pytest.raises(ValueError, match="workers"):
        list(synthesize_many(engine, jobs, workers=0, progress=False))


def test_plan_draws_every_default_voice(espeak: EspeakEngine) -> None:
    plan = plan_jobs([str(i) for i in range(100)], espeak, seed=0)
    assert {job.voice for job in plan} == set(DEFAULT_VOICES)
    rates = np.array([job.rate for job in plan])
    assert espeak.rate_range[0] <= rates.min() and rates.max() <= espeak.rate_range[1]
