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
    """A batch of 16 on the GPU (model and k-means on device) gives each file's CPU features and units."""
    # Plain float32 on the GPU too (no TF32 convolutions or matmuls): only the summation order differs.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids, dedup=False)
        gpu = HubertTokenizer(model_dir, layer=LAYER, kmeans=centroids, device="cuda", dedup=False)
        assert gpu.kmeans.device.type == "cuda" and cpu.kmeans.device.type == "cpu"
        wavs = random_wavs(16, seed=16)
        gpu_features = gpu.features(wavs)
        batched = gpu.encode_batch(wavs)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    c = centroids.centroids.double()
    for wav, features, (units, durations) in zip(wavs, gpu_features, batched, strict=True):
        assert features.device.type == "cuda"
        alone = cpu.features([wav])[0]
        assert alone.device.type == "cpu" and len(alone) == cpu.features.num_frames(len(wav))
        torch.testing.assert_close(features.cpu(), alone, rtol=1e-4, atol=1e-4)
        cpu_units, cpu_durations = cpu.encode(wav)
        assert np.array_equal(cpu_units, centroids.assign(alone).numpy())
        assert np.array_equal(durations, cpu_durations) and len(units) == len(cpu_units)
        # Equal units, except where the features' own difference can explain a flip: moving x by dx
        # changes the score gap of centroids i, j by at most 2 |dx| |c_i - c_j| (plus float32 rounding
        # of the scores), so only a CPU near tie within that bound may give the GPU another unit.
        scores = (c**2).sum(dim=1) - 2 * alone.double() @ c.T
        shift = (features.cpu().double() - alone.double()).norm(dim=1)
        for frame in np.flatnonzero(units != cpu_units):
            i, j = int(cpu_units[frame]), int(units[frame])
            gap = float(scores[frame, j] - scores[frame, i])
            bound = 2 * float(shift[frame]) * float((c[i] - c[j]).norm()) + 1e-5 * float(
                scores[frame].abs().max()
            )
            assert abs(gap) <= bound, f"frame {frame}: unit {j} on the GPU, {i} on the CPU, not a near tie"
