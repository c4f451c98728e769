"""Spoken preference triples: real espeak-ng speech, a real fitted MFCC tokeniser, preference corpora."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slamming.data.preference.corpus import PreferenceCorpus
from slamming.data.preference.text import TextTriple, story_triples
from slamming.data.preference.tts import build_spoken_preferences, spoken_preference_key
from slamming.errors import SlammingError
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tts import DEFAULT_VOICES, EspeakEngine, plan_jobs

K = 16


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return EspeakEngine(voices=DEFAULT_VOICES)


@pytest.fixture(scope="module")
def tokenizer_dir(engine: EspeakEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MFCC tokeniser fitted on a few espeak utterances of story text."""
    texts = [t.prompt for t in story_triples(3, "test", seed=5)]
    wavs = [engine.synthesize(text, voice, 175, 50) for text in texts for voice in ("en-us", "en-gb")]
    directory = tmp_path_factory.mktemp("tok") / "mfcc"
    MFCCTokenizer(k=K, segment=True).fit(wavs, seed=0).save(directory)
    return directory


def test_builds_spoken_preference_corpora(engine: EspeakEngine, tokenizer_dir: Path, tmp_path: Path) -> None:
    train, val = story_triples(6, "train"), story_triples(2, "val")
    out = tmp_path / "cache" / "stories-abc"
    summary = build_spoken_preferences(
        out, train, val, tokenizer_dir, engine, tts_seed=3, tts_workers=2, progress=False, info={"note": "t"}
    )
    assert not out.with_name("stories-abc.partial").exists()
    done = json.loads((out / "done.json").read_text())
    assert done == json.loads(json.dumps(summary))
    assert done["splits"]["train"]["triples"] == 6 and done["splits"]["val"]["triples"] == 2
    assert done["hours"] > 0 and done["info"] == {"note": "t"} and done["tts_seed"] == 3

    tokenizer = MFCCTokenizer.load(tokenizer_dir)
    corpora = {"train": PreferenceCorpus(out / "train"), "val": PreferenceCorpus(out / "val")}
    assert len(corpora["train"]) == 6 and len(corpora["val"]) == 2
    assert corpora["train"].tokenizer == tokenizer.identity and corpora["train"].num_units == K
    assert corpora["train"].info["split"] == "train" and corpora["train"].info["note"] == "t"
    for split, triples in (("train", train), ("val", val)):
        corpus = corpora[split]
        assert [corpus.texts(i) for i in range(len(corpus))] == [
            (t.prompt, t.chosen, t.rejected) for t in triples
        ]
        for i, triple in enumerate(triples):
            # One provenance for all three sides: the triple id and the one voice they were spoken in.
            sides = {corpus.sides[side].source(i) for side in ("prompt", "chosen", "rejected")}
            assert len(sides) == 1 and sides.pop().split("|")[0] == triple.id
            assert all(0 <= int(u.min()) and int(u.max()) < K and len(u) > 0 for u in corpus.triple(i))
    voices = {corpora["train"].source(i).split("|")[1] for i in range(6)}
    assert len(voices) >= 2

    # The stored units are exactly the tokeniser's units of the planned speech (voice, rate, pitch).
    plan = plan_jobs([t.prompt for t in train], engine, seed=3)[4]
    _, voice, rate, pitch = corpora["train"].source(4).split("|")
    assert (voice, int(rate), int(pitch)) == (plan.voice, plan.rate, plan.pitch)
    for side_index, text in enumerate((train[4].prompt, train[4].rejected)):
        units, _ = tokenizer.encode(engine.synthesize(text, plan.voice, plan.rate, plan.pitch))
        np.testing.assert_array_equal(corpora["train"].triple(4)[2 * side_index], units)

    with pytest.raises(SlammingError, match="already holds a finished spoken preference build"):
        build_spoken_preferences(out, train, [], tokenizer_dir, engine, progress=False)


def test_skips_stale_partial_and_refuses_bad_input(
    engine: EspeakEngine, tokenizer_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "build"
    stale = tmp_path / "build.partial"
    (stale / "train").mkdir(parents=True)
    (stale / "junk").write_text("left by a crash")
    triples = [TextTriple("Hello there.", "General Kenobi.", "Good morning.", "t0")]
    build_spoken_preferences(out, triples, [], tokenizer_dir, engine, progress=False)
    assert not stale.exists() and not (out / "val").exists() and not (out / "junk").exists()
    assert len(PreferenceCorpus(out / "train")) == 1

    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    with pytest.raises(SlammingError, match="not a finished build"):
        build_spoken_preferences(user_dir, triples, [], tokenizer_dir, engine, progress=False)
    with pytest.raises(SlammingError, match="no training triples"):
        build_spoken_preferences(tmp_path / "empty", [], [], tokenizer_dir, engine, progress=False)
    with pytest.raises(SlammingError, match="sample_rate=16000"):
        build_spoken_preferences(tmp_path / "sr", triples, [], tokenizer_dir, EspeakEngine(sample_rate=24000))
    with pytest.raises(SlammingError, match="no tokeniser at"):
        build_spoken_preferences(tmp_path / "tok", triples, [], tmp_path / "nothing", engine, progress=False)


def test_spoken_preference_key() -> None:
    settings = {"texts": "ab12", "voices": ["en-us"], "tts_seed": 0, "tokenizer": {"k": 16}}
    key = spoken_preference_key(settings)
    assert len(key) == 16 and int(key, 16) >= 0
    assert spoken_preference_key(dict(reversed(list(settings.items())))) == key
    assert spoken_preference_key({**settings, "tts_seed": 1}) != key
    with pytest.raises(ValueError, match="JSON-serialisable"):
        spoken_preference_key({"engine": object()})


class _DropsOneSide:
    """The real tokeniser, except that its ``drop``-th encode (0-based) gives no units."""

    def __init__(self, tokenizer: MFCCTokenizer, drop: int) -> None:
        self.tokenizer, self.drop, self.calls = tokenizer, drop, 0
        self.identity, self.k = tokenizer.identity, tokenizer.k

    def encode(self, wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        units, durations = self.tokenizer.encode(wav)
        self.calls += 1
        return (units[:0], durations[:0]) if self.calls - 1 == self.drop else (units, durations)

    def encode_batch(self, wavs: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.encode(wav) for wav in wavs]  # in order, so ``drop`` counts utterances as before


def test_triple_with_a_unitless_side_is_skipped_and_counted(
    engine: EspeakEngine,
    tokenizer_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = _DropsOneSide(MFCCTokenizer.load(tokenizer_dir), drop=4)  # triple 1, chosen side
    monkeypatch.setattr("slamming.data.preference.tts.load_tokenizer", lambda _: fake)
    triples = story_triples(3, "train")
    with caplog.at_level("INFO"):
        summary = build_spoken_preferences(tmp_path / "b", triples, [], tokenizer_dir, engine, progress=False)
    assert any(
        "skipped 1 of 3 train triples" in r.getMessage() and triples[1].id in r.getMessage()
        for r in caplog.records
    )
    assert summary["splits"]["train"]["triples"] == 2 and summary["splits"]["train"]["skipped_ids"] == [
        triples[1].id
    ]
    corpus = PreferenceCorpus(tmp_path / "b" / "train")
    assert [corpus.texts(i)[0] for i in range(2)] == [triples[0].prompt, triples[2].prompt]
