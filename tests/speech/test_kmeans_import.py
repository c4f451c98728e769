"""Importing scikit-learn k-means pickles: trust flag, exact labels, conversion reused without unpickling."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from safetensors import safe_open
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.cluster import MiniBatchKMeans

from slamming.errors import SlammingError
from slamming.hashing import sha256_file
from slamming.speech import kmeans_import
from slamming.speech.kmeans import KMeans
from slamming.speech.kmeans_import import converted_path, load_kmeans, load_sklearn_kmeans

K, DIM = 50, 32


def blobs(count: int, seed: int) -> np.ndarray:
    """Float32 points around 50 well-separated means (so float32 vs float64 never flips a label)."""
    means = np.random.default_rng(123).normal(0.0, 4.0, size=(K, DIM))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, K, size=count)
    return (means[which] + rng.normal(0.0, 1.0, size=(count, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def sklearn_model() -> SklearnKMeans:
    return SklearnKMeans(n_clusters=K, n_init=1, random_state=0).fit(blobs(5000, seed=0))


@pytest.fixture()
def pickle_path(tmp_path: Path, sklearn_model: SklearnKMeans) -> Path:
    path = tmp_path / "hubert_L11_km50.bin"
    joblib.dump(sklearn_model, path)
    return path


def test_labels_equal_sklearn_predict(pickle_path: Path, sklearn_model: SklearnKMeans) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kmeans = load_sklearn_kmeans(pickle_path, trust_pickle=True, device=device)
    assert (kmeans.k, kmeans.dim) == (K, DIM)
    frames = blobs(10_000, seed=1)
    labels = kmeans.assign(torch.from_numpy(frames).to(device)).cpu().numpy()
    expected = sklearn_model.predict(frames)
    assert np.array_equal(labels, expected)
    assert len(np.unique(labels)) == K


def test_refuses_without_trust_flag(pickle_path: Path) -> None:
    with pytest.raises(SlammingError, match="unpickling runs code.*trust_pickle=True.*trust"):
        load_sklearn_kmeans(pickle_path)
    with pytest.raises(SlammingError, match="trust_pickle=True"):
        load_kmeans(pickle_path)
    assert not converted_path(pickle_path).exists()


def test_conversion_is_reused_without_unpickling(
    pickle_path: Path, sklearn_model: SklearnKMeans, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_kmeans(pickle_path, trust_pickle=True)
    tensor_file = converted_path(pickle_path)
    assert tensor_file.name == "hubert_L11_km50.safetensors"
    with safe_open(str(tensor_file), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["source_sha256"] == sha256_file(pickle_path)
    assert meta["source_class"] == "KMeans" and meta["source_name"] == pickle_path.name

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("joblib.load must not be called")

    monkeypatch.setattr(joblib, "load", refuse)
    again = load_kmeans(pickle_path)  # no trust flag needed: the verified tensor file is used
    assert torch.equal(again.centroids, first.centroids)
    assert torch.equal(again.centroids, torch.from_numpy(sklearn_model.cluster_centers_.astype(np.float32)))
    assert torch.equal(load_kmeans(tensor_file).centroids, first.centroids)


def test_changed_pickle_is_not_matched_to_old_conversion(pickle_path: Path) -> None:
    load_kmeans(pickle_path, trust_pickle=True)
    other = SklearnKMeans(n_clusters=K, n_init=1, random_state=1).fit(blobs(2000, seed=7))
    joblib.dump(other, pickle_path)
    with pytest.raises(SlammingError, match="trust_pickle=True"):
        load_kmeans(pickle_path)
    kmeans = load_kmeans(pickle_path, trust_pickle=True)
    assert torch.equal(kmeans.centroids, torch.from_numpy(other.cluster_centers_.astype(np.float32)))


def test_minibatch_kmeans_and_explicit_output(tmp_path: Path) -> None:
    model = MiniBatchKMeans(n_clusters=8, random_state=0, n_init=1).fit(blobs(800, seed=2))
    path = tmp_path / "mb.bin"
    joblib.dump(model, path)
    out = tmp_path / "elsewhere" / "centroids.safetensors"
    kmeans = load_sklearn_kmeans(path, trust_pickle=True, out=out)
    assert out.is_file() and not converted_path(path).exists()
    assert torch.equal(KMeans.load(out).centroids, kmeans.centroids)
    frames = blobs(1000, seed=3)
    assert np.array_equal(kmeans.assign(frames).numpy(), model.predict(frames))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match="does not exist"):
        load_kmeans(tmp_path / "absent.bin", trust_pickle=True)
    not_kmeans = tmp_path / "list.bin"
    joblib.dump([1, 2, 3], not_kmeans)
    with pytest.raises(SlammingError, match="holds a list, not a fitted scikit-learn k-means"):
        load_sklearn_kmeans(not_kmeans, trust_pickle=True)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(SlammingError, match="cannot unpickle"):
        load_sklearn_kmeans(garbage, trust_pickle=True)


def test_missing_sklearn_names_pip_install(pickle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name: str, *args: object, **kwargs: object) -> object:
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(SlammingError, match="pip install scikit-learn"):
        kmeans_import.load_sklearn_kmeans(pickle_path, trust_pickle=True)
