"""Dedup, the MFCC tokeniser on real espeak-ng speech, its identity, files and mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slamming.errors import SlammingError, TokenizerMismatchError
from slamming.speech.features import MFCCFeatures
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers import MFCCTokenizer, check_identity, dedup

K = 16


@pytest.fixture(scope="module")
def tokenizer(speech: list[torch.Tensor]) -> MFCCTokenizer:
    return MFCCTokenizer(k=K).fit(speech, seed=0)


def test_dedup_hand_examples() -> None:
    units, runs = dedup([5, 5, 2, 2, 2, 5])
    assert units.tolist() == [5, 2, 5] and runs.tolist() == [2, 3, 1]
    units, runs = dedup(np.array([7], dtype=np.uint16))
    assert units.dtype == np.uint16 and units.tolist() == [7] and runs.tolist() == [1]
    units, runs = dedup(np.array([1, 2, 3]))
    assert units.tolist() == [1, 2, 3] and runs.tolist() == [1, 1, 1]
    units, runs = dedup(np.array([], dtype=np.uint16))
    assert units.shape == (0,) and runs.shape == (0,)


def test_dedup_sums_weights_over_a_run() -> None:
    units, durations = dedup([3, 3, 8, 3], weights=[4, 5, 3, 6])
    assert units.tolist() == [3, 8, 3] and durations.tolist() == [9, 3, 6]
    with pytest.raises(ValueError, match="does not match"):
        dedup([1, 2], weights=[1])
    with pytest.raises(ValueError, match="1-D"):
        dedup(np.zeros((2, 2)))


def test_encode_real_speech(tokenizer: MFCCTokenizer, speech: list[torch.Tensor]) -> None:
    for wav in speech[:3]:
        units, durations = tokenizer.encode(wav)
        assert units.dtype == np.uint16 and durations.dtype == np.int32
        assert len(units) == len(durations) > 10
        assert int(units.max()) < K
        assert int(durations.sum()) == wav.shape[0] // 160  # 100 Hz frames, all covered
        assert (units[1:] != units[:-1]).all()  # dedup leaves no repeated neighbours
    assert tokenizer.identity["frame_rate"] == 100


def test_the_same_speech_gives_the_same_units(tokenizer: MFCCTokenizer, speech: list[torch.Tensor]) -> None:
    first = tokenizer.encode(speech[0])
    second = tokenizer.encode(speech[0].clone())
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(tokenizer.encode(speech[1])[0], first[0])


def test_without_dedup_every_segment_is_a_unit(speech: list[torch.Tensor]) -> None:
    tokenizer = MFCCTokenizer(k=K, dedup=False).fit(speech, seed=0)
    units, durations = tokenizer.encode(speech[0])
    assert int(durations.min()) >= 3  # min_gap: no segment shorter than 3 frames
    assert int(durations.sum()) == speech[0].shape[0] // 160
    deduped = dedup(units, durations)
    settings = {**tokenizer.settings(), "dedup": True}
    with_dedup = MFCCTokenizer(**settings, kmeans=tokenizer.kmeans).encode(speech[0])
    assert np.array_equal(deduped[0], with_dedup[0]) and np.array_equal(deduped[1], with_dedup[1])


def test_frame_units_count_pooled_frames(speech: list[torch.Tensor]) -> None:
    tokenizer = MFCCTokenizer(k=K, segment=False, frame_rate=25).fit(speech, seed=0)
    units, durations = tokenizer.encode(speech[0])
    frames_100hz = speech[0].shape[0] // 160
    assert int(durations.sum()) == -(-frames_100hz // 4)
    assert tokenizer.identity["frame_rate"] == 25 and tokenizer.identity["segment"] is False
    assert int(units.max()) < K


def test_encode_batch_equals_encode(tokenizer: MFCCTokenizer, speech: list[torch.Tensor]) -> None:
    batch = tokenizer.encode_batch(speech[:4])
    assert len(batch) == 4
    for wav, (units, durations) in zip(speech[:4], batch, strict=True):
        single = tokenizer.encode(wav)
        assert np.array_equal(units, single[0]) and np.array_equal(durations, single[1])
    assert tokenizer.encode_batch([]) == []


def test_identity_keys_and_sensitivity(tokenizer: MFCCTokenizer, speech: list[torch.Tensor]) -> None:
    identity = tokenizer.identity
    assert set(identity) == {"kind", "k", "frame_rate", "dedup", "segment", "settings_hash"}
    assert (identity["kind"], identity["k"], identity["dedup"], identity["segment"]) == (
        "mfcc",
        K,
        True,
        True,
    )
    assert len(identity["settings_hash"]) == 16
    assert tokenizer.identity == identity  # stable
    other_fit = MFCCTokenizer(k=K).fit(speech, seed=1)
    assert other_fit.identity["settings_hash"] != identity["settings_hash"]
    same_centroids_other_setting = MFCCTokenizer(
        **{**tokenizer.settings(), "percentile": 80.0}, kmeans=tokenizer.kmeans
    )
    assert same_centroids_other_setting.identity["settings_hash"] != identity["settings_hash"]
    assert MFCCTokenizer(k=K + 1).fit(speech, seed=0).identity["k"] == K + 1


def test_fit_is_reproducible_and_respects_max_vectors(speech: list[torch.Tensor]) -> None:
    a = MFCCTokenizer(k=8).fit(speech, seed=3, max_vectors=60)
    b = MFCCTokenizer(k=8).fit(speech, seed=3, max_vectors=60)
    assert a.identity == b.identity
    assert a.identity != MFCCTokenizer(k=8).fit(speech, seed=3, max_vectors=10_000).identity


def test_save_load_round_trip(tokenizer: MFCCTokenizer, speech: list[torch.Tensor], tmp_path: Path) -> None:
    tokenizer.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["kmeans.safetensors", "tokenizer.json"]
    loaded = MFCCTokenizer.load(tmp_path / "tok")
    assert loaded.identity == tokenizer.identity
    assert loaded.settings() == tokenizer.settings()
    assert np.array_equal(loaded.encode(speech[5])[0], tokenizer.encode(speech[5])[0])
    with pytest.raises(SlammingError, match="already exists; pass overwrite=True"):
        tokenizer.save(tmp_path / "tok")
    tokenizer.save(tmp_path / "tok", overwrite=True)


def test_load_reports_bad_directories(
    tokenizer: MFCCTokenizer, speech: list[torch.Tensor], tmp_path: Path
) -> None:
    with pytest.raises(SlammingError, match=r"no tokeniser at .*missing.*fit and save one first"):
        MFCCTokenizer.load(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(SlammingError, match=r"broken/tokenizer\.json is not a valid tokenizer\.json"):
        MFCCTokenizer.load(broken)
    tokenizer.save(tmp_path / "swapped")
    MFCCTokenizer(k=K).fit(speech, seed=9).kmeans.save(tmp_path / "swapped" / "kmeans.safetensors")
    with pytest.raises(
        TokenizerMismatchError, match=r"recorded identity vs kmeans\.safetensors.*settings_hash"
    ):
        MFCCTokenizer.load(tmp_path / "swapped")
    tokenizer.save(tmp_path / "hubert")
    payload = json.loads((tmp_path / "hubert" / "tokenizer.json").read_text())
    payload["kind"] = "hubert"
    (tmp_path / "hubert" / "tokenizer.json").write_text(json.dumps(payload))
    with pytest.raises(SlammingError, match="describes a 'hubert' tokeniser"):
        MFCCTokenizer.load(tmp_path / "hubert")


def test_centroids_must_fit_the_settings(tmp_path: Path) -> None:
    path = KMeans(torch.randn(10, 13)).save(tmp_path / "km.safetensors")
    with pytest.raises(SlammingError, match=r"has k=10, dim=13 but the tokeniser expects k=16, dim=13"):
        MFCCTokenizer(k=16, kmeans_path=path)
    with pytest.raises(SlammingError, match=r"dim=13 .* expects k=10, dim=39"):
        MFCCTokenizer(k=10, deltas=True, kmeans_path=path)
    assert MFCCTokenizer(k=10, kmeans_path=path).kmeans is not None


def _units_alone_and_followed(tokenizer: MFCCTokenizer, word: torch.Tensor, more: torch.Tensor) -> tuple:
    return tokenizer.encode(word)[0].tolist(), tokenizer.encode(torch.cat([word, more]))[0].tolist()


def test_corpus_statistics_tokenise_a_word_alone_as_inside_longer_speech(
    tokenizer: MFCCTokenizer, speech: list[torch.Tensor], espeak
) -> None:
    """With corpus statistics a word's units do not depend on what else the utterance holds (only
    the last units, at the join, may change); with per-utterance statistics they do. This is what
    lets a model trained on whole stories recognise a word spoken alone (the lexical benchmark)."""
    assert tokenizer.normalization == "corpus" and tokenizer.threshold is not None
    per_utterance = MFCCTokenizer(k=K, normalization="utterance").fit(speech, seed=0)
    words = [espeak.synthesize(w, "en-us", 175, 50) for w in ("garden", "lantern", "bicycle", "yellow")]
    changed_per_utterance = 0
    for i, word in enumerate(words):
        more = speech[i + 2]  # several seconds of other speech after the word
        alone, followed = _units_alone_and_followed(tokenizer, word, more)
        assert len(alone) >= 4
        assert followed[: len(alone) - 2] == alone[:-2]
        alone, followed = _units_alone_and_followed(per_utterance, word, more)
        changed_per_utterance += followed[: len(alone) - 2] != alone[:-2]
    assert changed_per_utterance >= 3


def test_corpus_statistics_are_fitted_saved_and_checked(
    tokenizer: MFCCTokenizer, speech: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = tokenizer.settings()
    assert settings["normalization"] == "corpus"
    assert len(settings["feature_mean"]) == len(settings["feature_std"]) == 13
    raw = torch.cat([MFCCFeatures(normalize=False).frames(w) for w in speech]).double()
    np.testing.assert_allclose(settings["feature_mean"], raw.mean(0).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(settings["feature_std"], raw.std(0, unbiased=False).numpy(), rtol=1e-4)
    assert settings["threshold"] > 0
    # Other statistics are another tokeniser.
    moved = {**settings, "threshold": settings["threshold"] * 1.1}
    assert MFCCTokenizer(**moved, kmeans=tokenizer.kmeans).identity != tokenizer.identity
    with pytest.raises(SlammingError, match="no corpus statistics; call fit"):
        MFCCTokenizer(k=K, kmeans=tokenizer.kmeans).encode(speech[0])
    with pytest.raises(ValueError, match="need 13 values each"):
        MFCCTokenizer(**{**settings, "feature_mean": [0.0] * 12}, kmeans=tokenizer.kmeans)
    with pytest.raises(ValueError, match="needs their threshold"):
        MFCCTokenizer(**{**settings, "threshold": None}, kmeans=tokenizer.kmeans)
    with pytest.raises(ValueError, match="normalization must be one of"):
        MFCCTokenizer(normalization="speaker")
    # A tokenizer.json with statistics of the wrong shape is one clear error.
    tokenizer.save(tmp_path / "tok")
    payload = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    payload["settings"]["feature_std"] = [1.0]
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(payload))
    with pytest.raises(SlammingError, match="tokenizer.json has settings this version does not know"):
        MFCCTokenizer.load(tmp_path / "tok")


def test_tokenisers_saved_before_the_option_load_per_utterance(
    speech: list[torch.Tensor], tmp_path: Path
) -> None:
    old = MFCCTokenizer(k=K, normalization="utterance").fit(speech, seed=0)
    old.save(tmp_path / "old")
    payload = json.loads((tmp_path / "old" / "tokenizer.json").read_text())
    # The settings (and so the identity hash) are those written before `normalization` existed.
    assert set(payload["settings"]) == {
        "k",
        "frame_rate",
        "segment",
        "n_mfcc",
        "deltas",
        "percentile",
        "min_gap",
        "dedup",
    }
    loaded = MFCCTokenizer.load(tmp_path / "old")
    assert loaded.normalization == "utterance" and loaded.identity == old.identity
    assert np.array_equal(loaded.encode(speech[3])[0], old.encode(speech[3])[0])


def test_unfitted_or_underfed_tokeniser(speech: list[torch.Tensor]) -> None:
    with pytest.raises(SlammingError, match=r"no k-means centroids; call fit"):
        MFCCTokenizer().encode(speech[0])
    with pytest.raises(SlammingError, match=r"only \d+ feature vectors, fewer than k=5000"):
        MFCCTokenizer(k=5000).fit(speech[:1])


def test_check_identity_passes_on_equal_identities(tokenizer: MFCCTokenizer) -> None:
    assert check_identity(tokenizer.identity, dict(tokenizer.identity), "corpus vs model") is None


def test_check_identity_names_every_difference() -> None:
    expected = {"kind": "mfcc", "k": 100, "frame_rate": 100, "dedup": True, "settings_hash": "aaaa"}
    actual = {
        "kind": "mfcc",
        "k": 500,
        "frame_rate": 100,
        "dedup": True,
        "settings_hash": "bbbb",
        "layer": 11,
    }
    with pytest.raises(TokenizerMismatchError) as err:
        check_identity(expected, actual, "corpus data/units vs model ckpt")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("corpus data/units vs model ckpt: tokeniser mismatch")
    assert "k: expected 100, got 500" in message
    assert "settings_hash: expected 'aaaa', got 'bbbb'" in message
    assert "layer: expected <missing>, got 11" in message
    assert "kind" not in message.split("(")[1]  # equal keys are not listed
    assert "re-tokenise" in message and "same one" in message
    assert issubclass(TokenizerMismatchError, SlammingError)
