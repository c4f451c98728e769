"""k-means over a plain centroid tensor: seeded fitting, matmul assignment, safetensors files.

Units are the index of the nearest centroid. Assignment is one matrix product and an argmin on the
centroids' device, using ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`` (the ``||x||^2`` term is the
same for every centroid, so the argmin drops it). Centroids are stored as a safetensors tensor, not
a pickle, so loading a tokeniser never runs code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from slamming.atomic import atomic_path
from slamming.errors import ConfigError, SlammingError

__all__ = ["KMeans"]

_KEY = "centroids"
_FORMAT = "slamming.kmeans/1"
# Rows per chunk are chosen so a chunk's (rows, k) score matrix stays near 64 MiB of float32.
_SCORE_ELEMENTS = 1 << 24
# On a CPU the score block should stay in cache: 2^18 floats (1 MiB, ~500 rows at k = 500) ran at
# ~1.4x the frames/s of 64 MiB blocks on our 2-core machine (docs/perf-log.md, k-means rows).
_CPU_SCORE_ELEMENTS = 1 << 18


def _default_chunk(k: int, device: torch.device) -> int:
    """Rows per score block: cache-sized on a CPU, large on an accelerator."""
    return max(1, (_CPU_SCORE_ELEMENTS if device.type == "cpu" else _SCORE_ELEMENTS) // k)


def _as_float_matrix(x: torch.Tensor | np.ndarray, device: torch.device | str, what: str) -> torch.Tensor:
    """``x`` as a 2-D float32 tensor on ``device``."""
    tensor = torch.as_tensor(x)
    if tensor.dim() != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def _nearest(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance to it for every row of ``x`` (same device as both)."""
    k = centroids.shape[0]
    chunk = chunk_size or _default_chunk(k, x.device)
    c_norm = centroids.pow(2).sum(dim=1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk):
        rows = x[start : start + chunk]
        scores = torch.addmm(c_norm, rows, centroids.T, alpha=-2.0)  # ||c||^2 - 2 x.c
        best, index = scores.min(dim=1)
        labels[start : start + chunk] = index
        # Rounding can make the expanded form slightly negative for a point sitting on a centroid.
        dist[start : start + chunk] = (best + rows.pow(2).sum(dim=1)).clamp_min(0.0)
    return labels, dist


def _cluster_sums(
    x: torch.Tensor, labels: torch.Tensor, k: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums and counts.

    Computed as one-hot matrix products rather than ``index_add_``: on CUDA ``index_add_`` uses
    atomic float adds whose order varies, so the same seed would not give the same centroids.
    """
    sums = torch.zeros(k, x.shape[1], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        rows = x[start : start + chunk_size]
        onehot = torch.zeros(rows.shape[0], k, dtype=torch.float32, device=x.device)
        onehot.scatter_(1, labels[start : start + chunk_size, None], 1.0)
        sums += onehot.T @ rows
    counts = torch.bincount(labels, minlength=k)
    return sums, counts


def _plus_plus_init(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centroid is a point drawn with probability ~ squared distance."""
    num = x.shape[0]
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = int(torch.randint(num, (1,), generator=generator))
    closest = (x - x[chosen[0]]).pow(2).sum(dim=1)
    for j in range(1, k):
        cumulative = torch.cumsum(closest.double(), dim=0)
        # The random draw comes from a CPU generator, so the seed means the same on every device.
        target = float(torch.rand(1, generator=generator, dtype=torch.float64)) * float(cumulative[-1])
        index = int(
            torch.searchsorted(
                cumulative, torch.tensor([target], dtype=torch.float64, device=x.device), right=True
            )
        )
        chosen[j] = min(index, num - 1)
        closest = torch.minimum(closest, (x - x[chosen[j]]).pow(2).sum(dim=1))
    return x[chosen.to(x.device)].clone()


def _minibatch(
    data: torch.Tensor, k: int, steps: int, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Mini-batch k-means: k-means++ on a first batch, then per-centroid running-mean updates."""
    n = data.shape[0]
    batch_size = max(min(batch_size, n), k)
    first = torch.randperm(n, generator=generator)[:batch_size].to(data.device)
    centroids = _plus_plus_init(data[first], k, generator)
    seen = torch.zeros(k, dtype=torch.float64, device=data.device)
    chunk = max(1, _SCORE_ELEMENTS // k)
    for _ in range(steps):
        index = torch.randint(0, n, (batch_size,), generator=generator).to(data.device)
        batch = data[index]
        labels, _ = _nearest(batch, centroids, chunk)
        sums, counts = _cluster_sums(batch, labels, k, chunk)
        seen += counts.to(seen.dtype)
        hit = counts > 0
        # Moving the centroid to the running mean of every point it has been given.
        rate = (counts[hit].to(seen.dtype) / seen[hit]).to(centroids.dtype).unsqueeze(1)
        centroids[hit] += rate * (sums[hit] / counts[hit].unsqueeze(1).to(sums.dtype) - centroids[hit])
    return centroids


class KMeans:
    """Nearest-centroid quantiser over a ``(k, D)`` centroid tensor.

    Args:
        centroids: ``(k, D)`` centroids; kept as float32 on their device.
    """

    def __init__(self, centroids: torch.Tensor) -> None:
        if centroids.dim() != 2 or centroids.shape[0] == 0:
            raise ValueError(
                f"centroids must be a non-empty (k, D) tensor, got shape {tuple(centroids.shape)}"
            )
        self.centroids = centroids.detach().to(torch.float32).contiguous()

    @property
    def k(self) -> int:
        """Number of centroids (units)."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.centroids.shape[1])

    @property
    def device(self) -> torch.device:
        """Device the assignment runs on."""
        return self.centroids.device

    def to(self, device: torch.device | str) -> KMeans:
        """A copy whose centroids (and therefore assignment) live on ``device``."""
        return KMeans(self.centroids.to(device))

    @classmethod
    def fit(
        cls,
        x: torch.Tensor | np.ndarray,
        k: int,
        iters: int = 50,
        seed: int = 0,
        device: torch.device | str = "cpu",
        batch_size: int | None = None,
    ) -> KMeans:
        """Fit centroids with k-means++ seeding and Lloyd iterations, in float32 on ``device``.

        With ``batch_size``, mini-batch k-means instead (Sculley, 2010): ``iters`` steps, each on a
        seeded random batch, moving every centroid towards its points with a per-centroid rate of
        1 / (points it has seen); memory then grows with the batch, not the data set.

        Stops early once no point changes cluster. A cluster that loses all its points is re-seeded
        with the point farthest from its centroid (then the next farthest, ...), which needs no
        randomness, so the same data, ``k`` and ``seed`` on the same device give the same centroids.

        Args:
            x: ``(N, D)`` training vectors, ``N >= k``.
            k: number of centroids.
            iters: maximum Lloyd iterations.
            seed: seed of the k-means++ draws.
            device: where to fit ("cpu", "cuda", ...).
            batch_size: vectors per mini-batch step; ``None`` = full-batch Lloyd.

        Returns:
            The fitted quantiser, its centroids on ``device``.
        """
        data = _as_float_matrix(x, device, "k-means training data")
        if k < 1 or data.shape[0] < k:
            raise ConfigError(
                f"k-means needs 1 <= k <= number of vectors, got k={k} for {data.shape[0]} vectors; "
                "lower k or give it more audio"
            )
        if not torch.isfinite(data).all():
            raise ValueError("k-means training data contains NaN or infinite values")
        generator = torch.Generator().manual_seed(int(seed))
        if batch_size is not None:
            return cls(_minibatch(data, k, iters, int(batch_size), generator))
        centroids = _plus_plus_init(data, k, generator)
        chunk = max(1, _SCORE_ELEMENTS // k)
        previous: torch.Tensor | None = None
        for _ in range(iters):
            labels, dist = _nearest(data, centroids, chunk)
            if previous is not None and torch.equal(labels, previous):
                break
            sums, counts = _cluster_sums(data, labels, k, chunk)
            centroids = sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype)
            empty = torch.nonzero(counts == 0).flatten()
            if len(empty) > 0:
                farthest = torch.argsort(dist, descending=True, stable=True)[: len(empty)]
                centroids[empty] = data[farthest]
            previous = labels
        return cls(centroids)

    def assign(self, x: torch.Tensor | np.ndarray, chunk_size: int | None = None) -> torch.Tensor:
        """Index of the nearest centroid for every row of ``x``.

        Args:
            x: ``(N, D)`` vectors; moved to the centroids' device chunk by chunk.
            chunk_size: rows per matrix product; by default each score block is 2 MiB on a CPU (cache
                sized) and 64 MiB on an accelerator.

        Returns:
            ``(N,)`` int64 labels on ``x``'s device (the CPU for a numpy array).
        """
        tensor = torch.as_tensor(x)
        if tensor.dim() != 2 or tensor.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) vectors, got shape {tuple(tensor.shape)}")
        x_dev = tensor.to(self.device, torch.float32)
        k = self.centroids.shape[0]
        chunk = chunk_size or _default_chunk(k, x_dev.device)
        c_norm = self.centroids.pow(2).sum(dim=1)
        labels = torch.empty(x_dev.shape[0], dtype=torch.long, device=x_dev.device)
        # Labels only: argmin of ||c||^2 - 2 x.c, written in place (no distances, no ||x||^2 pass).
        for start in range(0, x_dev.shape[0], chunk):
            scores = torch.addmm(c_norm, x_dev[start : start + chunk], self.centroids.T, alpha=-2.0)
            torch.argmin(scores, dim=1, out=labels[start : start + chunk])
        return labels.to(tensor.device)

    def save(self, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> Path:
        """Write the centroids as a safetensors file (key ``"centroids"``), replacing ``path``.

        Args:
            path: destination file; parent directories are created.
            metadata: extra string fields stored in the file header.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": _FORMAT, "k": str(self.k), "dim": str(self.dim), **(metadata or {})}
        # Write next to the target and rename, so a crash never leaves a half-written centroid file.
        with atomic_path(path) as partial:
            save_file({_KEY: self.centroids.cpu().contiguous()}, str(partial), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> KMeans:
        """Read centroids written by :meth:`save`.

        Args:
            path: the safetensors file.
            device: where the assignment will run.

        Raises:
            SlammingError: the file is missing, corrupt, lacks a ``"centroids"`` tensor or holds a
                tensor that is not a finite 2-D matrix.
        """
        path = Path(path)
        if not path.is_file():
            raise SlammingError(
                f"k-means file {path} does not exist; fit the tokeniser first or fix the path"
            )
        fix = "refit the tokeniser or restore the file"
        try:
            with safe_open(str(path), framework="pt") as handle:
                if _KEY not in handle.keys():
                    raise SlammingError(
                        f"k-means file {path} has no {_KEY!r} tensor (it holds {list(handle.keys())}); {fix}"
                    )
                centroids = handle.get_tensor(_KEY)
        except SafetensorError as err:
            reason = " ".join(str(err).split())
            raise SlammingError(
                f"k-means file {path} is corrupt or not a safetensors file ({reason}); {fix}"
            ) from err
        if centroids.dim() != 2 or centroids.shape[0] == 0 or not torch.isfinite(centroids.float()).all():
            raise SlammingError(
                f"k-means file {path} holds a {tuple(centroids.shape)} tensor with invalid values, "
                f"not finite (k, D) centroids; {fix}"
            )
        return cls(centroids.to(device))
