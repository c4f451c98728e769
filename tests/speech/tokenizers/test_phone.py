"""The phone tokeniser's parts: CTC decoding, phoneme parsing, batching, saving and loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slamming.errors import ConfigError, SlammingError, TokenizerMismatchError
from slamming.speech.phonemes import espeak_phonemes, parse_phonemes, voice_language
from slamming.speech.tokenizers import load_tokenizer
from slamming.speech.tokenizers.phone import WEIGHTS_FILE, PhoneTokenizer, ctc_units
from slamming.speech.tokenizers.phone_train import edit_distance, train_phone_tokenizer, unit_disagreement

PHONEMES = ["@", "I", "l", "i", "n", "d", "t", "s"]


def untrained(seed: int = 0) -> PhoneTokenizer:
    torch.manual_seed(seed)
    return PhoneTokenizer(PHONEMES, [0.0] * 39, [10.0] * 39)


def test_ctc_units_drops_blanks_merges_repeats_and_durations_cover_every_frame() -> None:
    units, durations = ctc_units(np.array([0, 3, 3, 0, 3, 5, 0]))
    assert units.tolist() == [2, 2, 4] and units.dtype == np.uint16
    assert durations.tolist() == [4, 1, 2] and durations.sum() == 7
    units, durations = ctc_units(np.array([0, 0, 0]))
    assert len(units) == 0 and len(durations) == 0
    assert ctc_units(np.array([1, 1, 1]))[1].tolist() == [3]


def test_parse_phonemes_keeps_symbols_and_drops_stress() -> None:
    assert parse_phonemes("l_'I_l_i f_'aU_n_d D_@2 r_,E_d\n") == [
        "l",
        "I",
        "l",
        "i",
        "f",
        "aU",
        "n",
        "d",
        "D",
        "@2",
        "r",
        "E",
        "d",
    ]
    assert voice_language("en-us+f3") == "en-us" and voice_language("en-gb") == "en-gb"


def test_espeak_phonemes_follow_the_voice_language(espeak) -> None:  # noqa: ARG001 - skips without espeak-ng
    us, variant, gb = espeak_phonemes(["the park"] * 3, ["en-us", "en-us+f3", "en-gb"])
    assert us == variant  # a variant changes the sound, not the phonemes
    assert us != gb and us[-1] == "k" and gb[-1] == "k"
    with pytest.raises(SlammingError, match="one voice per text"):
        espeak_phonemes(["a", "b"], ["en-us"])


def test_encode_batch_equals_encode_alone_whatever_the_batch(speech) -> None:
    tokenizer = untrained()
    batch = tokenizer.encode_batch(speech[:5])
    for wav, (units, durations) in zip(speech[:5], batch, strict=True):
        alone_units, alone_durations = tokenizer.encode(wav)
        assert np.array_equal(units, alone_units) and np.array_equal(durations, alone_durations)
        frames = len(tokenizer.frames(wav))
        if len(units):
            assert durations.sum() == (frames + 1) // 2
            assert units.max() < tokenizer.k


def test_save_load_round_trip_keeps_units_and_identity(tmp_path, speech) -> None:
    tokenizer = untrained()
    tokenizer.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, PhoneTokenizer)
    assert loaded.identity == tokenizer.identity
    assert loaded.identity["kind"] == "phone" and loaded.identity["frame_rate"] == 50
    assert loaded.identity["k"] == len(PHONEMES)
    for a, b in zip(loaded.encode_batch(speech[:3]), tokenizer.encode_batch(speech[:3]), strict=True):
        assert np.array_equal(a[0], b[0])
    assert untrained(seed=1).identity != tokenizer.identity  # other weights, another identity
    with pytest.raises(SlammingError, match="already exists"):
        tokenizer.save(tmp_path / "tok")


def test_tampered_weights_or_missing_files_are_refused(tmp_path) -> None:
    folder = untrained().save(tmp_path / "tok")
    untrained(seed=2).save(tmp_path / "other")
    (folder / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(TokenizerMismatchError, match="recorded identity"):
        load_tokenizer(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(SlammingError, match="missing"):
        load_tokenizer(folder)
    config = json.loads((tmp_path / "other" / "tokenizer.json").read_text())
    config["settings"]["hidden"] = "wide"
    (tmp_path / "other" / "tokenizer.json").write_text(json.dumps(config))
    with pytest.raises(SlammingError, match="cannot read|can read"):
        load_tokenizer(tmp_path / "other")


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        PhoneTokenizer([], [0.0] * 39, [1.0] * 39)
    with pytest.raises(ConfigError):
        PhoneTokenizer(["a", "a"], [0.0] * 39, [1.0] * 39)
    with pytest.raises(ConfigError):
        PhoneTokenizer(["a"], [0.0] * 13, [1.0] * 13)
    with pytest.raises(ConfigError):
        PhoneTokenizer(["a"], [0.0] * 39, [0.0] * 39)


def test_training_lowers_the_ctc_loss_and_refuses_mismatched_labels(speech) -> None:
    labels = [["h", "@", "l", "oU"] * 5 for _ in speech[:4]]
    tokenizer, summary = train_phone_tokenizer(speech[:4], labels, steps=8, batch_size=2, progress=False)
    assert summary.steps == 8 and summary.utterances == 4
    assert summary.final_loss < summary.first_loss
    assert tokenizer.phonemes == sorted({"h", "@", "l", "oU"})
    with pytest.raises(SlammingError, match="one label per waveform"):
        train_phone_tokenizer(speech[:2], labels[:1], steps=1, progress=False)
    with pytest.raises(SlammingError, match="no phonemes"):
        train_phone_tokenizer(speech[:1], [[]], steps=1, progress=False)
    with pytest.raises(SlammingError, match="only"):
        train_phone_tokenizer([speech[0][:1600]], [["a"] * 80], steps=1, progress=False)
    with pytest.raises(ConfigError):
        train_phone_tokenizer(speech[:1], labels[:1], steps=0, progress=False)


def test_edit_distance() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance("flaw", "lawn") == 2


def test_unit_disagreement_is_the_mean_normalised_edit_distance() -> None:
    assert unit_disagreement([[1, 2, 3]], [[1, 2, 3]]) == 0.0
    assert unit_disagreement([[1, 2, 3, 4], [5]], [[1, 2, 3], [6, 7]]) == pytest.approx((1 / 4 + 2 / 2) / 2)
    assert unit_disagreement([[]], [[]]) == 0.0
    with pytest.raises(ValueError, match="same non-zero"):
        unit_disagreement([[1]], [])
