"""speak_groups: the speak → tokenise pipeline every builder uses, on real espeak-ng speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slamming.speech.speak import speak_groups
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tts import EspeakEngine, SpeechJob, plan_jobs
from tests.speech.conftest import SENTENCES


class _CountingEngine(EspeakEngine):
    """The real espeak-ng engine, counting the texts it was asked to speak."""

    def __init__(self) -> None:
        super().__init__()
        self.spoken: list[str] = []

    def synthesize_job(self, job: SpeechJob) -> torch.Tensor:
        self.spoken.append(job.text)
        return super().synthesize_job(job)


@pytest.fixture(scope="module")
def tokenizer(speech: list[torch.Tensor]) -> MFCCTokenizer:
    return MFCCTokenizer(k=20).fit(speech, seed=0)


def test_groups_come_in_job_order_with_the_units_of_each_waveform(
    espeak: EspeakEngine, tokenizer: MFCCTokenizer
) -> None:
    jobs = plan_jobs(SENTENCES[:4], espeak, seed=3)
    groups = list(
        speak_groups(espeak, jobs, desc="test", group=2, tokenizer=tokenizer, workers=2, progress=False)
    )
    assert [[s.job for s in g] for g in groups] == [jobs[:2], jobs[2:]]
    for spoken in (s for g in groups for s in g):
        alone = espeak.synthesize_job(spoken.job)
        assert torch.equal(spoken.wav, alone)
        units, durations = tokenizer.encode(alone)
        assert np.array_equal(spoken.units, units) and np.array_equal(spoken.durations, durations)
        assert spoken.words is None  # espeak-ng gives no word timings


def test_without_a_tokeniser_there_are_no_units(espeak: EspeakEngine) -> None:
    jobs = plan_jobs(SENTENCES[:2], espeak, seed=0)
    [[first], [second]] = list(speak_groups(espeak, jobs, desc="test", progress=False))
    assert first.units is None and first.durations is None and second.job == jobs[1]


def test_spoken_utterances_are_not_synthesised_again(espeak: EspeakEngine) -> None:
    engine = _CountingEngine()
    jobs = plan_jobs(SENTENCES[:3], engine, seed=1)
    given = [(torch.zeros(1600), None)]
    groups = list(speak_groups(engine, jobs, desc="test", spoken=given, workers=1, progress=False))
    assert engine.spoken == SENTENCES[1:3]
    assert torch.equal(groups[0][0].wav, torch.zeros(1600)) and groups[0][0].job == jobs[0]


def test_closing_early_stops_speaking_the_rest(espeak: EspeakEngine) -> None:
    engine = _CountingEngine()
    jobs = plan_jobs(SENTENCES * 4, engine, seed=2)  # 24 jobs; at most 4 * workers are in flight
    stream = speak_groups(engine, jobs, desc="test", workers=1, progress=False)
    next(stream)
    stream.close()
    assert len(engine.spoken) <= 1 + 4


def test_jobs_must_fill_whole_groups(espeak: EspeakEngine) -> None:
    jobs = plan_jobs(SENTENCES[:3], espeak, seed=0)
    with pytest.raises(ValueError, match="3 jobs do not split into groups of 2"):
        next(speak_groups(espeak, jobs, desc="test", group=2, progress=False))
    with pytest.raises(ValueError, match="4 spoken utterances given for 3 jobs"):
        next(speak_groups(espeak, jobs, desc="test", spoken=[(torch.zeros(1), None)] * 4, progress=False))


def test_the_bar_names_its_stage_and_counts_groups(
    espeak: EspeakEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = plan_jobs(["One short line.", "Another one.", "And a third."] * 2, espeak, seed=0)
    stream = speak_groups(espeak, jobs, desc="Speaking train texts", group=3, unit="triple", progress=True)
    first = next(stream)
    stream.close()  # closing early stops the synthesis stream and the bar
    assert [s.job for s in first] == jobs[:3] and first[0].wav.dtype == torch.float32
    err = capsys.readouterr().err
    # One bar, named by the caller and counting groups (2 triples); the TTS pool's own bar is off.
    assert "Speaking train texts" in err and "/2 [" in err and "Synthesising speech" not in err


def test_tokenised_groups_are_encoded_in_batches_and_equal_encoding_alone(
    espeak: EspeakEngine, speech
) -> None:
    class _Counting(MFCCTokenizer):
        calls: list[int] = []

        def encode_batch(self, wavs):  # noqa: ANN001, ANN202 - counts the batch sizes
            self.calls.append(len(wavs))
            return super().encode_batch(wavs)

    tokenizer = _Counting(k=8).fit(speech)
    jobs = plan_jobs(SENTENCES * 2, espeak, seed=3)  # 12 jobs in pairs
    groups = list(
        speak_groups(espeak, jobs, desc="test", group=2, tokenizer=tokenizer, encode_batch=5, progress=False)
    )
    assert tokenizer.calls == [4, 4, 4]  # 5 rounds down to whole pairs
    assert [s.job for g in groups for s in g] == jobs
    for spoken in (s for g in groups for s in g):
        units, durations = tokenizer.encode(spoken.wav)
        assert np.array_equal(spoken.units, units) and np.array_equal(spoken.durations, durations)
