"""k-means: matmul assignment against a plain reference, seeded fitting, safetensors files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from slamming.errors import SlammingError
from slamming.speech.kmeans import KMeans


def reference_assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The plain definition: argmin of float64 Euclidean distances."""
    return torch.cdist(x.double(), centroids.double()).argmin(dim=1)


def blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[10.0, 10.0, 0.0], [-10.0, 10.0, 5.0], [10.0, -10.0, -5.0], [-10.0, -10.0, 0.0]])
    points = centers.repeat_interleave(200, dim=0) + 0.1 * torch.randn(800, 3, generator=generator)
    return points, centers


def test_assign_equals_the_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 8, generator=generator)
    kmeans = KMeans(torch.randn(37, 8, generator=generator))
    expected = reference_assign(x, kmeans.centroids)
    labels = kmeans.assign(x)
    assert labels.dtype == torch.int64 and labels.shape == (3000,)
    assert torch.equal(labels, expected)
    assert torch.equal(kmeans.assign(x, chunk_size=97), expected)  # chunk edges change nothing


def test_assign_takes_numpy_and_checks_the_dimension() -> None:
    kmeans = KMeans(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    labels = kmeans.assign(np.array([[0.1, -0.2], [0.9, 1.3], [0.6, 0.6]], dtype=np.float64))
    assert labels.tolist() == [0, 1, 1] and labels.device.type == "cpu"
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        kmeans.assign(torch.zeros(3, 5))


def test_fit_recovers_well_separated_blobs() -> None:
    points, centers = blobs()
    kmeans = KMeans.fit(points, k=4, iters=20, seed=0)
    assert kmeans.centroids.shape == (4, 3) and kmeans.centroids.dtype == torch.float32
    # Match each true center to its nearest centroid: a one-to-one match, each within noise.
    match = reference_assign(centers, kmeans.centroids)
    assert sorted(match.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(kmeans.centroids[match], centers, atol=0.05)
    labels = kmeans.assign(points)
    assert torch.equal(labels, match.repeat_interleave(200))


def test_same_seed_same_centroids_other_seed_other_centroids() -> None:
    x = torch.randn(2000, 6, generator=torch.Generator().manual_seed(1))
    first = KMeans.fit(x, k=16, iters=10, seed=5)
    assert torch.equal(first.centroids, KMeans.fit(x, k=16, iters=10, seed=5).centroids)
    assert not torch.equal(first.centroids, KMeans.fit(x, k=16, iters=10, seed=6).centroids)


def test_lloyd_lowers_the_distortion_of_the_seeding() -> None:
    x = torch.randn(2000, 4, generator=torch.Generator().manual_seed(2))

    def distortion(kmeans: KMeans) -> float:
        return float((x - kmeans.centroids[kmeans.assign(x)]).pow(2).sum())

    seeded = KMeans.fit(x, k=12, iters=0, seed=0)  # k-means++ only
    fitted = KMeans.fit(x, k=12, iters=30, seed=0)
    assert distortion(fitted) < 0.9 * distortion(seeded)
    # Converged: every centroid is the mean of the points assigned to it.
    labels = fitted.assign(x)
    for j in range(12):
        assert torch.allclose(fitted.centroids[j], x[labels == j].mean(dim=0), atol=1e-4)


def test_fewer_distinct_points_than_k_stays_finite() -> None:
    # Three distinct points for k = 5: duplicate seeds leave clusters empty, which are re-seeded.
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]).repeat(10, 1)
    kmeans = KMeans.fit(x, k=5, iters=10, seed=0)
    assert torch.isfinite(kmeans.centroids).all()
    assert {tuple(row) for row in kmeans.centroids.tolist()} == {(0.0, 0.0), (5.0, 5.0), (9.0, 0.0)}


def test_fit_rejects_bad_data() -> None:
    with pytest.raises(ValueError, match="k <= number of vectors"):
        KMeans.fit(torch.zeros(3, 2), k=4)
    bad = torch.zeros(10, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        KMeans.fit(bad, k=2)
    with pytest.raises(ValueError, match="non-empty"):
        KMeans(torch.zeros(0, 3))


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    kmeans = KMeans(torch.randn(7, 5, generator=torch.Generator().manual_seed(3)))
    path = kmeans.save(tmp_path / "nested" / "km.safetensors", metadata={"note": "test"})
    loaded = KMeans.load(path)
    assert torch.equal(loaded.centroids, kmeans.centroids)
    with safe_open(str(path), framework="pt") as handle:
        assert list(handle.keys()) == ["centroids"]
        assert handle.metadata() == {"format": "slamming.kmeans/1", "k": "7", "dim": "5", "note": "test"}
    assert not (tmp_path / "nested" / "km.safetensors.partial").exists()


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(SlammingError, match=r"absent\.safetensors does not exist; fit the tokeniser first"):
        KMeans.load(path)


def test_load_corrupt_file(tmp_path: Path) -> None:
    path = KMeans(torch.randn(4, 3)).save(tmp_path / "km.safetensors")
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(SlammingError, match=r"km\.safetensors is corrupt or not a safetensors file") as err:
        KMeans.load(path)
    assert "\n" not in str(err.value)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(SlammingError, match="corrupt or not a safetensors file"):
        KMeans.load(text)


def test_load_wrong_contents(tmp_path: Path) -> None:
    save_file({"weights": torch.zeros(3, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SlammingError, match=r"has no 'centroids' tensor \(it holds \['weights'\]\)"):
        KMeans.load(tmp_path / "other.safetensors")
    save_file({"centroids": torch.zeros(6)}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(SlammingError, match=r"holds a \(6,\) tensor"):
        KMeans.load(tmp_path / "flat.safetensors")


def test_minibatch_fit_recovers_blobs_and_is_seeded() -> None:
    points, centers = blobs(3)
    a = KMeans.fit(points, k=4, iters=60, seed=1, batch_size=64)
    b = KMeans.fit(points, k=4, iters=60, seed=1, batch_size=64)
    assert torch.equal(a.centroids, b.centroids)
    match = reference_assign(centers, a.centroids)
    assert sorted(match.tolist()) == [0, 1, 2, 3]
    # Running means of ~900 noisy points each: within a few noise widths of the true centers.
    assert torch.allclose(a.centroids[match], centers, atol=0.1)
    assert not torch.equal(KMeans.fit(points, k=4, iters=60, seed=2, batch_size=64).centroids, a.centroids)
