"""HuBERT tokeniser: units and run lengths, batch = alone, sklearn agreement, identity, save/load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SklearnKMeans

from slamming.errors import SlammingError, TokenizerMismatchError
from slamming.speech.hubert import HubertFeatures
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers import HubertTokenizer, MFCCTokenizer, load_tokenizer
from tests.speech.test_hubert import random_wavs, tiny_hubert

LAYER, K = 3, 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hubert(tmp_path_factory.mktemp("hubert"), stable=False)


@pytest.fixture(scope="module")
def centroids(model_dir: Path) -> KMeans:
    features = HubertFeatures(model_dir, layer=LAYER)(random_wavs(6, seed=10))
    return KMeans.fit(torch.cat(features), K, seed=0)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path, centroids: KMeans) -> HubertTokenizer:
    return HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids)


def test_encode_units_and_run_lengths(tokenizer: HubertTokenizer, model_dir: Path, centroids: KMeans) -> None:
    wav = random_wavs(1, seed=11)[0]
    units, durations = tokenizer.encode(wav)
    frames = tokenizer.features.num_frames(len(wav))
    assert units.dtype == np.uint16 and durations.dtype == np.int32
    assert int(durations.sum()) == frames and durations.min() >= 1
    assert np.all(units[1:] != units[:-1]) and units.max() < K
    plain = HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids, dedup=False)
    raw, ones = plain.encode(wav)
    assert len(raw) == frames and np.all(ones == 1)
    expected = centroids.assign(HubertFeatures(model_dir, layer=LAYER)([wav])[0]).numpy()
    assert np.array_equal(raw, expected)
    assert np.array_equal(np.repeat(units, durations), raw)
    assert len(np.unique(raw)) > 3


def test_batch_of_16_gives_the_units_of_each_file_alone(tokenizer: HubertTokenizer) -> None:
    wavs = random_wavs(16, seed=12)
    assert len({len(w) for w in wavs}) == 16
    batched = tokenizer.encode_batch(wavs)
    assert len(batched) == 16
    for wav, (units, durations) in zip(wavs, batched, strict=True):
        alone_units, alone_durations = tokenizer.encode(wav)
        assert np.array_equal(units, alone_units)
        assert np.array_equal(durations, alone_durations)
    assert tokenizer.encode_batch([]) == []


def test_sklearn_pickle_kmeans_gives_sklearn_units(model_dir: Path, tmp_path: Path) -> None:
    features = torch.cat(HubertFeatures(model_dir, layer=LAYER)(random_wavs(4, seed=13))).numpy()
    model = SklearnKMeans(n_clusters=K, n_init=1, random_state=0).fit(features)
    path = tmp_path / "tiny_L3_km20.bin"
    joblib.dump(model, path)
    with pytest.raises(SlammingError, match="trust_pickle=True"):
        HubertTokenizer(model_dir, layer=LAYER, kmeans=path)
    tok = HubertTokenizer(model_dir, layer=LAYER, kmeans=path, trust_pickle=True, dedup=False)
    wav = random_wavs(1, seed=14)[0]
    units, _ = tok.encode(wav)
    reference = model.predict(HubertFeatures(model_dir, layer=LAYER)([wav])[0].numpy())
    assert np.array_equal(units, reference)
    # The conversion is reused afterwards without the flag.
    assert HubertTokenizer(model_dir, layer=LAYER, kmeans=path).k == K


def test_identity(tokenizer: HubertTokenizer, model_dir: Path, centroids: KMeans, tmp_path: Path) -> None:
    identity = tokenizer.identity
    assert set(identity) == {"kind", "model", "layer", "k", "frame_rate", "dedup", "settings_hash"}
    assert identity["kind"] == "hubert" and identity["model"] == model_dir.name
    assert (identity["layer"], identity["k"], identity["frame_rate"], identity["dedup"]) == (
        LAYER,
        K,
        200,
        True,
    )
    assert len(identity["settings_hash"]) == 16
    moved = shutil.copytree(model_dir, tmp_path / model_dir.name)
    assert HubertTokenizer(moved, layer=LAYER, kmeans=centroids).identity == identity
    other_weights = tiny_hubert(tmp_path / "w", seed=5)
    variants = [
        HubertTokenizer(model_dir, layer=LAYER - 1, kmeans=centroids),
        HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids, dedup=False),
        HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids, dtype="bfloat16"),
        HubertTokenizer(model_dir, layer=LAYER, kmeans=KMeans(centroids.centroids + 1e-3)),
        HubertTokenizer(other_weights, layer=LAYER, kmeans=centroids),
    ]
    hashes = {v.identity["settings_hash"] for v in variants}
    assert len(hashes) == len(variants) and identity["settings_hash"] not in hashes


def test_save_load_round_trip(tokenizer: HubertTokenizer, model_dir: Path, tmp_path: Path) -> None:
    saved = tokenizer.save(tmp_path / "tok")
    payload = json.loads((saved / "tokenizer.json").read_text())
    assert payload["kind"] == "hubert"
    assert payload["settings"] == {
        "model": str(model_dir.resolve()),
        "layer": LAYER,
        "dedup": True,
        "dtype": "float32",
    }
    with pytest.raises(SlammingError, match="already exists"):
        tokenizer.save(saved)
    loaded = load_tokenizer(saved)
    assert isinstance(loaded, HubertTokenizer)
    assert loaded.identity == tokenizer.identity
    wav = random_wavs(1, seed=15)[0]
    for a, b in zip(loaded.encode(wav), tokenizer.encode(wav), strict=True):
        assert np.array_equal(a, b)


def test_load_detects_other_weights(tokenizer: HubertTokenizer, tmp_path: Path) -> None:
    saved = tokenizer.save(tmp_path / "tok")
    other = tiny_hubert(tmp_path / "other", seed=9)
    with pytest.raises(TokenizerMismatchError, match="settings_hash"):
        HubertTokenizer.load(saved, model=str(other))


def test_load_tokenizer_dispatches_to_mfcc(tmp_path: Path) -> None:
    mfcc = MFCCTokenizer(
        k=4,
        normalization="utterance",
        kmeans=KMeans(torch.randn(4, 13, generator=torch.Generator().manual_seed(0))),
    )
    mfcc.save(tmp_path / "mfcc")
    loaded = load_tokenizer(tmp_path / "mfcc")
    assert isinstance(loaded, MFCCTokenizer) and loaded.identity == mfcc.identity
    with pytest.raises(SlammingError, match="not 'hubert'"):
        HubertTokenizer.load(tmp_path / "mfcc")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "tokenizer.json").write_text(json.dumps({"kind": "wavlm"}))
    with pytest.raises(SlammingError, match="kind 'wavlm'"):
        load_tokenizer(tmp_path / "odd")
    with pytest.raises(SlammingError, match="does not exist"):
        load_tokenizer(tmp_path / "nothing")


def test_constructor_errors(model_dir: Path) -> None:
    with pytest.raises(SlammingError, match="needs kmeans="):
        HubertTokenizer(model_dir, layer=LAYER)
    with pytest.raises(SlammingError, match="dim=13 but HuBERT .* hidden size 48"):
        HubertTokenizer(model_dir, layer=LAYER, kmeans=KMeans(torch.randn(5, 13)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_units_match_cpu_alone(model_dir: Path, centroids: KMeans) -> None:
    """On the GPU (model and k-means on device) a batch of 16 gives each file's units alone."""
    gpu = HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids, device="cuda", dedup=False)
    assert gpu.kmeans.device.type == "cuda"
    wavs = random_wavs(16, seed=16)
    batched = gpu.encode_batch(wavs)
    for wav, (units, _) in zip(wavs, batched, strict=True):
        assert np.array_equal(units, gpu.encode(wav)[0])
