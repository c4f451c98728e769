"""SyntheticSpeechDataModule: stories → espeak-ng → units → corpus, cached, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from slamming.data.pretrain.synthetic import SyntheticSpeechDataModule
from slamming.data.pretrain.tokenizer_fit import train_story_phone_tokenizer
from slamming.data.text.reader import split_texts, text_id
from slamming.data.text.stories import StoryGenerator
from slamming.errors import ConfigError, SlammingError
from slamming.speech.tokenizers.phone import BUNDLED_PHONE_TOKENIZER, PhoneTokenizer
from slamming.speech.tts import DEFAULT_VOICES, RECOGNISER_VARIANTS
from tests.conftest import speech_fit_config


def _config(tmp_path: Path, max_steps: int = 6, **data: Any) -> Path:
    return speech_fit_config(tmp_path, trainer={"max_steps": max_steps}, data={"init_args": data})


def test_builds_once_then_reuses_and_trains(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(tmp_path)
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("building the synthetic corpus" in r.getMessage() for r in caplog.records)
    builds = list((tmp_path / "cache").glob("stories-*"))
    assert len(builds) == 1 and (builds[0] / "done.json").is_file()
    train, val = UnitCorpus(builds[0] / "train"), UnitCorpus(builds[0] / "val")
    assert len(train) == 24 and len(val) == 6
    assert (
        train.tokenizer == val.tokenizer and train.tokenizer["k"] == 32 and train.tokenizer["kind"] == "mfcc"
    )
    stories = StoryGenerator(0).stories(24, "train")
    assert [train.text(i) for i in range(24)] == [s.text for s in stories]
    assert int(train.document(0).max()) < 32 and train.hours > 0
    assert (tmp_path / "runs" / "syn" / "version_0" / "hf_model" / "config.json").is_file()

    caplog.clear()
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("reusing the cached synthetic corpus" in r.getMessage() for r in caplog.records)
    assert not any("building the synthetic corpus" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "cache").glob("stories-*"))) == 1


def test_user_text_file_is_spoken_split_by_hash_and_cached_by_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [st.text for st in StoryGenerator(3).stories(12, "train")]
    messy = "\n".join(
        f"  {t.replace(' ', '   ', 2)}\t" + ("\n" if i % 4 == 0 else "") for i, t in enumerate(texts)
    )
    (tmp_path / "mine.txt").write_text(messy + "\n")
    train_texts, val_texts = split_texts(texts, 0.25, seed=0)
    assert len(val_texts) > 0 and len(train_texts) > 0  # the fixture exercises both splits
    data = {
        "text_files": [str(tmp_path / "mine.txt")],
        "val_fraction": 0.25,
        "fit_stories": 8,
        "tts_workers": 3,
    }
    cfg = _config(tmp_path, max_steps=2, **data)
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("building the synthetic corpus" in r.getMessage() for r in caplog.records)
    assert any("text corpus: read 12 texts from 15 lines" in r.getMessage() for r in caplog.records)
    builds = list((tmp_path / "cache").glob("texts-*"))
    assert len(builds) == 1 and not list((tmp_path / "cache").glob("stories-*"))
    train, val = UnitCorpus(builds[0] / "train"), UnitCorpus(builds[0] / "val")
    assert [train.text(i) for i in range(len(train))] == train_texts
    assert [val.text(i) for i in range(len(val))] == val_texts
    for corpus in (train, val):
        for i in range(len(corpus)):
            ident, voice, rate, pitch = corpus.source(i).split("|")
            assert ident == text_id(corpus.text(i)) and voice in DEFAULT_VOICES
            assert 150 <= int(rate) <= 190 and 35 <= int(pitch) <= 65
    assert train.tokenizer["k"] == 32 and int(train.document(0).max()) < 32
    done = json.loads((builds[0] / "done.json").read_text())
    assert done["settings"]["texts_sha256"] == SyntheticSpeechDataModule(**data).text_corpus.content_hash
    assert done["text_report"]["texts"] == 12 and done["text_report"]["skipped"] == {}
    assert (done["train_documents"], done["val_documents"]) == (len(train_texts), len(val_texts))

    # The same content under another name reuses the build; editing one line changes the key.
    (tmp_path / "mine.txt").rename(tmp_path / "renamed.txt")
    data["text_files"] = [str(tmp_path / "renamed.txt")]
    cfg = _config(tmp_path, max_steps=2, **data)
    init_args = yaml.safe_load(cfg.read_text())["data"]["init_args"]
    assert SyntheticSpeechDataModule(**init_args).build_dir == builds[0]
    caplog.clear()
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("reusing the cached synthetic corpus" in r.getMessage() for r in caplog.records)
    assert not any("building the synthetic corpus" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "cache").glob("texts-*")) == builds
    (tmp_path / "edited.txt").write_text("\n".join([*texts[:5], "An edited line.", *texts[6:]]))
    edited = SyntheticSpeechDataModule(**{**init_args, "text_files": [str(tmp_path / "edited.txt")]})
    assert edited.build_dir.parent == builds[0].parent and edited.build_dir != builds[0]


def test_text_files_that_all_fall_into_validation_are_refused(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("A single line.\n")
    _, val = split_texts(["A single line."], 0.99, seed=0)
    assert val == ["A single line."]
    with pytest.raises(SlammingError, match="fell into validation; lower data.val_fraction"):
        SyntheticSpeechDataModule(
            cache_dir=str(tmp_path), text_files=[str(tmp_path / "one.txt")], val_fraction=0.99
        )
    with pytest.raises(SlammingError, match="missing.txt does not exist"):
        SyntheticSpeechDataModule(cache_dir=str(tmp_path), text_files=[str(tmp_path / "missing.txt")])


def test_espeak_build_keeps_its_cache_key_and_stores_no_words(tmp_path: Path) -> None:
    dm = SyntheticSpeechDataModule(cache_dir=str(tmp_path), num_train_stories=3, num_val_stories=0)
    # The espeak settings have no engine entries, so caches built before engines were selectable stay valid.
    assert "engine" not in dm.settings and dm.settings["voices"] == list(DEFAULT_VOICES)
    assert (dm.settings["rate_range"], dm.settings["pitch_range"]) == ([150, 190], [35, 65])
    assert dm.make_engine().supports_timings is False
    with pytest.raises(SlammingError, match="data.engine must be 'espeak' or 'piper', got 'festival'"):
        SyntheticSpeechDataModule(cache_dir=str(tmp_path), engine="festival")  # type: ignore[arg-type]
    with pytest.raises(SlammingError, match="piper_voice is set but data.engine is espeak"):
        SyntheticSpeechDataModule(cache_dir=str(tmp_path), piper_voice="x.onnx")
    # Corpus-wide MFCC statistics are the default and part of the key; per-utterance ones keep the
    # key the corpora had before the option existed.
    assert dm.settings["normalization"] == "corpus"
    old = SyntheticSpeechDataModule(
        cache_dir=str(tmp_path), num_train_stories=3, num_val_stories=0, normalization="utterance"
    )
    assert "normalization" not in old.settings and old.build_dir != dm.build_dir
    with pytest.raises(SlammingError, match="data.normalization must be one of"):
        SyntheticSpeechDataModule(cache_dir=str(tmp_path), normalization="speaker")


PIPER_TEXTS = [
    "Once upon a time, there was a little fox named Max.",
    "He liked to run in the green field with his friend.",
    "One day, Max found 3 shiny stones -- red, blue and gold!",
    '"Look at this," said Max. His friend smiled.',
    "They went home at 5:30 and ate some bread & honey.",
    "The end.",
]


def test_piper_build_stores_word_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("piper", reason="piper-tts is not installed (pip install slamming[tts])")
    pytest.importorskip("onnx", reason="onnx is not installed (pip install slamming[tts])")
    from slamming.speech.piper import PiperEngine, text_words

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the patched voice lands here
    (tmp_path / "texts.txt").write_text("\n".join(PIPER_TEXTS) + "\n")
    args: dict[str, Any] = {
        "cache_dir": str(tmp_path / "cache"),
        "text_files": [str(tmp_path / "texts.txt")],
        "val_fraction": 0.0,
        "num_units": 16,
        "fit_stories": 6,
        "progress": False,
    }
    dm = SyntheticSpeechDataModule(engine="piper", **args)
    assert dm.settings["engine"] == "piper" and len(dm.settings["piper_voice_sha256"]) == 64
    assert dm.settings["voices"] == ["en_US-joe-medium"] and dm.settings["rate_range"] == [85, 115]
    assert dm.build_dir != SyntheticSpeechDataModule(**args).build_dir  # the engine is in the key
    assert SyntheticSpeechDataModule(engine="piper", **args).build_dir == dm.build_dir
    assert SyntheticSpeechDataModule(engine="piper", rate_range=(90, 110), **args).build_dir != dm.build_dir
    dm.prepare_data()
    assert list((tmp_path / "xdg" / "slamming" / "piper").glob("en_US-joe-medium-*.aligned.onnx"))
    corpus = UnitCorpus(dm.build_dir / "train")
    corpus.verify()
    assert len(corpus) == 6 and corpus.meta["has_words"] is True
    assert sorted(corpus.text(i) for i in range(6)) == sorted(PIPER_TEXTS)
    engine = PiperEngine(timings=True)
    for i in range(6):
        text, words = corpus.text(i), corpus.words(i)
        assert text is not None and words is not None
        assert [w for w, _, _ in words] == text_words(text)
        _, voice, rate, pitch = corpus.source(i).split("|")
        wav, expected = engine.synthesize_with_timings(text, voice, int(rate), int(pitch))
        assert words == expected  # what was stored is what the planned job gives
        seconds = wav.shape[0] / 16000
        frames = corpus.durations(i)
        assert frames is not None and abs(int(frames.sum()) / corpus.tokenizer["frame_rate"] - seconds) < 0.05
        times = [t for _, start, end in words for t in (start, end)]
        assert times == sorted(times) and 0.0 <= times[0] and times[-1] <= seconds
        assert all(end - start > 0.03 for _, start, end in words)  # every word is heard
    assert text_words(PIPER_TEXTS[2]) == [
        "One",
        "day",
        "Max",
        "found",
        "3",
        "shiny",
        "stones",
        "red",
        "blue",
        "and",
        "gold",
    ]


def test_phone_tokenizer_build_trains_a_recogniser_and_writes_phone_units(tmp_path: Path) -> None:
    """``tokenizer: phone`` through the real CLI: a recogniser trained on the fitting stories'
    sentences, a saved ``phone`` tokeniser, corpora of its units, and a model whose vocabulary is
    ``num_units`` + 2 whatever the phoneme count."""
    # One step leaves the recogniser near its random start, which still labels most frames; a few
    # more and it hears only blanks until CTC leaves that plateau (~250 steps), too long for a test.
    cfg = _config(tmp_path, max_steps=2, tokenizer="phone", phone_steps=1, fit_stories=6, num_units=80)
    main(["fit", "--config", str(cfg)])
    [build] = list((tmp_path / "cache").glob("stories-*"))
    done = json.loads((build / "done.json").read_text())
    settings = done["settings"]
    assert settings["tokenizer"] == "phone" and settings["phone_steps"] == 1
    assert "segment" not in settings and "normalization" not in settings
    assert settings["phone_voices"] == [*settings["voices"], *RECOGNISER_VARIANTS]  # the default
    phone = done["phone_training"]
    assert phone["steps"] == 1 and phone["sentences"] >= 6 * 4  # every story has at least 4 sentences
    saved = json.loads((build / "tokenizer" / "tokenizer.json").read_text())
    assert saved["kind"] == "phone" and saved["settings"]["k"] == 80
    assert 30 <= len(saved["settings"]["phonemes"]) < 80
    train = UnitCorpus(build / "train")
    skipped = done["skipped_empty"]["train"]
    assert train.tokenizer == saved["identity"] and train.num_units == 80
    assert len(train) == 24 - skipped == done["train_documents"] and skipped < 24
    model = json.loads((tmp_path / "runs" / "syn" / "version_0" / "hf_model" / "config.json").read_text())
    assert model["vocab_size"] == 82


def test_bundled_phone_tokenizer_builds_a_corpus_without_training_a_recogniser(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``phone_tokenizer: bundled`` (the demo's) through the real CLI: the shipped recogniser
    tokenises the corpus as it is (no training), its identity keys the cache and marks the corpora,
    and it hears every story."""
    bundled = PhoneTokenizer.load(BUNDLED_PHONE_TOKENIZER)
    cfg = _config(tmp_path, max_steps=2, tokenizer="phone", phone_tokenizer="bundled", num_units=400)
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    messages = [r.getMessage() for r in caplog.records]
    assert not any("training the phone tokeniser" in m for m in messages)
    assert any(
        f"phone tokeniser from {BUNDLED_PHONE_TOKENIZER}" in m and "not trained here" in m for m in messages
    )
    [build] = list((tmp_path / "cache").glob("stories-*"))
    done = json.loads((build / "done.json").read_text())
    assert done["phone_tokenizer"] == str(BUNDLED_PHONE_TOKENIZER) and "phone_training" not in done
    settings = done["settings"]
    assert settings["phone_tokenizer"] == bundled.identity
    assert not {"phone_steps", "phone_voices", "phone_seed", "fit_stories"} & set(settings)
    copied = PhoneTokenizer.load(build / "tokenizer")
    assert copied.identity == bundled.identity and copied.merges == bundled.merges
    train = UnitCorpus(build / "train")
    assert train.tokenizer == bundled.identity and train.num_units == 400
    assert len(train) == 24 == done["train_documents"]  # a trained recogniser hears every story
    model = json.loads((tmp_path / "runs" / "syn" / "version_0" / "hf_model" / "config.json").read_text())
    assert model["vocab_size"] == 402


def test_a_given_phone_tokenizer_keys_the_cache_by_its_identity_not_its_path(tmp_path: Path) -> None:
    made = train_story_phone_tokenizer(
        tmp_path / "a", stories=1, steps=1, merges=3, k=60, voices=["en-us"], progress=False
    )
    assert made["settings"] == {
        "stories": 1, "story_seed": 0, "steps": 1, "merges": 3, "k": 60, "seed": 0, "voices": ["en-us"]
    }  # fmt: skip
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["identity"] == PhoneTokenizer.load(tmp_path / "a").identity == made["identity"]
    assert (
        record["command"].startswith("slamming tokenizer train-phone --out ")
        and record["training"]["steps"] == 1
    )
    with pytest.raises(SlammingError, match="already holds a tokeniser; pass --overwrite"):
        train_story_phone_tokenizer(
            tmp_path / "a", stories=1, steps=1, k=60, voices=["en-us"], progress=False
        )
    (tmp_path / "b").mkdir()
    for name in ("tokenizer.json", "recognizer.safetensors"):
        (tmp_path / "b" / name).write_bytes((tmp_path / "a" / name).read_bytes())
    args: dict[str, Any] = {"cache_dir": str(tmp_path / "cache"), "tokenizer": "phone", "num_units": 60}
    a = SyntheticSpeechDataModule(phone_tokenizer=str(tmp_path / "a"), **args)
    b = SyntheticSpeechDataModule(phone_tokenizer=str(tmp_path / "b"), phone_merges=3, **args)
    assert a.build_dir == b.build_dir and a.settings["phone_tokenizer"] == made["identity"]
    assert a.build_dir != SyntheticSpeechDataModule(**args).build_dir  # trained in the build: another key
    bundled = SyntheticSpeechDataModule(phone_tokenizer="bundled", **{**args, "num_units": 400})
    assert bundled.settings["phone_tokenizer"] == PhoneTokenizer.load(BUNDLED_PHONE_TOKENIZER).identity


@pytest.mark.parametrize(
    ("given", "match"),
    [
        (
            {"phone_tokenizer": "{tmp}/nowhere"},
            r"nowhere holds no tokenizer.json; give the folder of a tokeniser",
        ),
        ({"phone_tokenizer": "bundled", "num_units": 300}, r"set data.num_units: 400"),
        ({"phone_tokenizer": "bundled", "num_units": 400, "phone_merges": 100}, r"has 300 merges; drop"),
        ({"phone_tokenizer": "bundled", "tokenizer": "mfcc"}, r"set tokenizer: phone"),
    ],
)
def test_a_given_phone_tokenizer_that_cannot_serve_is_one_clear_error(
    tmp_path: Path, given: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"tokenizer": "phone", "num_units": 400, **given}
    args["phone_tokenizer"] = args["phone_tokenizer"].format(tmp=tmp_path)
    with pytest.raises(ConfigError, match=match):
        SyntheticSpeechDataModule(cache_dir=str(tmp_path), **args)


def test_phone_voices_choose_the_recognisers_voices_and_key_the_cache(tmp_path: Path) -> None:
    default = SyntheticSpeechDataModule(cache_dir=str(tmp_path), tokenizer="phone")
    chosen = SyntheticSpeechDataModule(
        cache_dir=str(tmp_path), tokenizer="phone", phone_voices=["en-us", "en-us"]
    )
    assert chosen.settings["phone_voices"] == ["en-us"]
    assert default.settings["phone_voices"] == [*DEFAULT_VOICES, *RECOGNISER_VARIANTS]
    assert chosen.build_dir != default.build_dir


def test_phone_tokenizer_needs_espeak(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match="set data.engine: espeak"):
        SyntheticSpeechDataModule(cache_dir=str(tmp_path), engine="piper", tokenizer="phone")
