"""The MFCC tokeniser: the embedded, download-free one.

:class:`MFCCTokenizer`: 100 Hz MFCCs, cut into phone-like change-point segments (or pooled to a fixed
frame rate), quantised by k-means, with consecutive duplicate units collapsed as in the Slam recipe.
Its defaults (segments, k = 100) are the settings that let a tiny CPU model learn story coherence in
the project's prototype measurements.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slamming.errors import ConfigError, SlammingError
from slamming.speech.features import BASE_FRAME_RATE, MFCCFeatures, frame_distances, segment_features
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers.base import (
    CONFIG_FILE,
    KMEANS_FILE,
    check_identity,
    dedup,
    read_config,
    save_tokenizer_files,
)

__all__ = ["NORMALIZATIONS", "MFCCTokenizer"]

#: How MFCCs are normalised and segment boundaries found (see :class:`MFCCTokenizer`).
NORMALIZATIONS: tuple[str, ...] = ("corpus", "utterance")


class MFCCTokenizer:
    """MFCC -> (change-point segments | pooled frames) -> k-means -> optional dedup.

    Durations: with ``segment=True`` they count 100 Hz frames (10 ms), because segments have no
    fixed rate; with ``segment=False`` they count frames of ``frame_rate``. Either way
    :attr:`identity`'s ``frame_rate`` is the rate the durations are counted in, and they sum to the
    number of such frames in the utterance, so ``sum / frame_rate`` is its length in seconds.

    Args:
        k: number of units.
        frame_rate: pooled frame rate in Hz when ``segment=False`` (must divide 100); unused when
            segmenting.
        segment: quantise phone-like change-point segments instead of fixed-rate frames.
        n_mfcc: cepstral coefficients per frame.
        deltas: append first and second derivatives to the MFCCs.
        percentile: segment boundaries need a frame-to-frame change above this percentile (of the
            fitting corpus's changes, or of each utterance's own with ``normalization="utterance"``).
        min_gap: minimum segment length in 100 Hz frames.
        dedup: collapse consecutive duplicate units.
        normalization: ``"corpus"`` (default): MFCCs are standardised with the mean and standard
            deviation of the fitting audio, and segment boundaries need a change above one threshold
            fitted on it, so a word is cut and quantised the same way whether it is spoken alone or
            inside a long story. ``"utterance"``: each utterance is standardised by its own statistics
            and cut at its own percentile (tokenisers saved before this option existed). Measured on
            espeak-ng speech (docs/perf-log.md, 2026-11-29): the unit bigrams of a word spoken alone
            recur in a sentence holding it 0.52 of the time with ``corpus`` and 0.24 with ``utterance``.
        feature_mean: ``(n_mfcc,)`` corpus mean of the raw MFCCs; set by :meth:`fit` (or a saved
            tokeniser), needed with ``normalization="corpus"``.
        feature_std: ``(n_mfcc,)`` corpus standard deviation, likewise.
        threshold: the corpus boundary threshold (the ``percentile``-th percentile of the fitting
            corpus's frame-to-frame changes), likewise when segmenting.
        kmeans: fitted centroids to use (``(k, D)``).
        kmeans_path: or a ``kmeans.safetensors`` file to load them from.
        device: where k-means assignment runs; not part of the identity.

    Raises:
        ConfigError: a setting out of range (``k``, ``percentile``, ``min_gap``, ``normalization``)
            or corpus statistics that do not fit the settings.
    """

    kind = "mfcc"

    def __init__(
        self,
        k: int = 100,
        frame_rate: int = 25,
        segment: bool = True,
        n_mfcc: int = 13,
        deltas: bool = False,
        percentile: float = 70.0,
        min_gap: int = 3,
        dedup: bool = True,
        normalization: str = "corpus",
        feature_mean: Sequence[float] | None = None,
        feature_std: Sequence[float] | None = None,
        threshold: float | None = None,
        kmeans: KMeans | None = None,
        kmeans_path: str | os.PathLike[str] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 1 <= k <= np.iinfo(np.uint16).max + 1:
            raise ConfigError(f"k must be in [1, 65536] so units fit uint16, got {k}")
        if not 0.0 <= percentile < 100.0:
            raise ConfigError(f"percentile must be in [0, 100), got {percentile}")
        if min_gap < 1:
            raise ConfigError(f"min_gap must be >= 1, got {min_gap}")
        self.k = int(k)
        self.frame_rate = int(frame_rate)
        self.segment = bool(segment)
        self.n_mfcc = int(n_mfcc)
        self.deltas = bool(deltas)
        self.percentile = float(percentile)
        self.min_gap = int(min_gap)
        self.dedup = bool(dedup)
        self.device = torch.device(device)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization
        self.features = MFCCFeatures(
            n_mfcc=self.n_mfcc,
            frame_rate=self.frame_rate,
            deltas=self.deltas,
            normalize=normalization == "utterance",
        )
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None
        self.threshold: float | None = None
        given = [v is not None for v in (feature_mean, feature_std)]
        if normalization == "utterance" and (any(given) or threshold is not None):
            raise ConfigError("feature_mean/feature_std/threshold belong to normalization='corpus'")
        if any(given):
            self._set_statistics(feature_mean, feature_std, threshold)
        if kmeans is not None and kmeans_path is not None:
            raise ConfigError("give either kmeans or kmeans_path, not both")
        if kmeans_path is not None:
            kmeans = KMeans.load(kmeans_path)
        self.kmeans: KMeans | None = None
        if kmeans is not None:
            self._set_kmeans(
                kmeans, source=str(kmeans_path) if kmeans_path is not None else "the given k-means"
            )

    def _set_statistics(
        self, mean: Sequence[float] | None, std: Sequence[float] | None, threshold: float | None
    ) -> None:
        """Adopt corpus statistics after checking their shape (and that a segmenter has a threshold)."""
        if mean is None or std is None:
            raise ConfigError("give both feature_mean and feature_std, or neither")
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.shape != (self.features.dim,) or std_t.shape != (self.features.dim,):
            raise ConfigError(
                f"feature_mean and feature_std need {self.features.dim} values each (n_mfcc x deltas), "
                f"got {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
            )
        if not bool((std_t > 0).all()):
            raise ConfigError("feature_std must be positive in every dimension")
        if self.segment and threshold is None:
            raise ConfigError("a segmenting tokeniser with corpus statistics needs their threshold")
        self.feature_mean, self.feature_std = mean_t, std_t
        self.threshold = None if threshold is None else float(threshold)

    def _set_kmeans(self, kmeans: KMeans, source: str) -> None:
        """Adopt fitted centroids after checking they fit these settings."""
        if kmeans.k != self.k or kmeans.dim != self.features.dim:
            raise SlammingError(
                f"k-means from {source} has k={kmeans.k}, dim={kmeans.dim} but the tokeniser expects "
                f"k={self.k}, dim={self.features.dim}; refit it or set k/n_mfcc/deltas to match"
            )
        self.kmeans = kmeans.to(self.device)

    def settings(self) -> dict[str, Any]:
        """The constructor settings that change which units come out (everything but the centroids).

        With ``normalization="utterance"`` the dictionary is what it was before the option existed,
        so tokenisers saved then keep their identity.
        """
        settings: dict[str, Any] = {
            "k": self.k,
            "frame_rate": self.frame_rate,
            "segment": self.segment,
            "n_mfcc": self.n_mfcc,
            "deltas": self.deltas,
            "percentile": self.percentile,
            "min_gap": self.min_gap,
            "dedup": self.dedup,
        }
        if self.normalization != "utterance":
            settings["normalization"] = self.normalization
            settings["feature_mean"] = None if self.feature_mean is None else self.feature_mean.tolist()
            settings["feature_std"] = None if self.feature_std is None else self.feature_std.tolist()
            settings["threshold"] = self.threshold
        return settings

    def _fitted(self) -> KMeans:
        if self.kmeans is None:
            raise SlammingError(
                "the MFCC tokeniser has no k-means centroids; call fit(...) or load a saved tokeniser"
            )
        if self.normalization == "corpus" and self.feature_mean is None:
            raise SlammingError(
                "the MFCC tokeniser (normalization='corpus') has no corpus statistics; call fit(...), "
                "load a saved tokeniser, or pass feature_mean/feature_std/threshold"
            )
        return self.kmeans

    @property
    def identity(self) -> dict[str, Any]:
        """What corpora and checkpoints record: kind, k, durations frame rate, dedup, segment, hash.

        ``settings_hash`` is the first 16 hex digits of a sha256 over the settings and the centroid
        bytes, so two fits with different data or seeds have different identities.
        """
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode("utf-8"))
        digest.update(self._fitted().centroids.cpu().numpy().astype("<f4").tobytes())
        return {
            "kind": self.kind,
            "k": self.k,
            "frame_rate": BASE_FRAME_RATE if self.segment else self.frame_rate,
            "dedup": self.dedup,
            "segment": self.segment,
            "settings_hash": digest.hexdigest()[:16],
        }

    def _frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised 100 Hz MFCC frames (by the corpus statistics, or by the utterance's own)."""
        frames = self.features.frames(wav)
        return self._standardize(frames) if self.normalization == "corpus" else frames

    def _standardize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw MFCC frames standardised by the corpus statistics."""
        assert self.feature_mean is not None and self.feature_std is not None  # _fitted() checked
        return (raw - self.feature_mean) / self.feature_std

    def _vectors(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The vectors to quantise and each one's duration (100 Hz frames or pooled frames)."""
        return self._vectors_of(self._frames(wav))

    def _vectors_of(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.segment:
            return segment_features(frames, self.percentile, self.min_gap, self.threshold)
        pooled = self.features.pool(frames)
        return pooled, torch.ones(pooled.shape[0], dtype=torch.int64)

    def fit(
        self,
        wavs: Iterable[torch.Tensor],
        seed: int = 0,
        max_vectors: int = 200_000,
        iters: int = 50,
    ) -> MFCCTokenizer:
        """Fit the k-means centroids on the features of some audio.

        The audio is streamed; a seeded reservoir sample keeps at most ``max_vectors`` feature
        vectors (segment means, or pooled frames), a uniform sample of all of them. With
        ``normalization="corpus"`` the MFCC statistics and the boundary threshold are measured on the
        same audio first (its raw MFCCs are held in memory for that: ~5 MB per hour of speech).

        Args:
            wavs: ``(N,)`` 16 kHz mono waveforms.
            seed: seeds the reservoir sample and the k-means++ initialisation.
            max_vectors: cap on the vectors k-means sees.
            iters: maximum Lloyd iterations.

        Returns:
            ``self``, fitted.

        Raises:
            SlammingError: the audio yields fewer vectors than ``k``.
        """
        rng = np.random.default_rng(seed)
        if self.normalization == "corpus":
            all_frames = self._fit_statistics(wavs)
        else:
            all_frames = (self._frames(wav) for wav in wavs)
        reservoir = np.empty((max_vectors, self.features.dim), dtype=np.float32)
        seen = 0
        for frames in all_frames:
            vectors = self._vectors_of(frames)[0].numpy()
            fill = min(max(max_vectors - seen, 0), len(vectors))
            reservoir[seen : seen + fill] = vectors[:fill]
            rest = vectors[fill:]
            if len(rest) > 0:
                # Algorithm R, vectorised: the i-th vector overall (0-based) replaces a random slot
                # with probability max_vectors / (i + 1). Later vectors win repeated slots, as they
                # would one at a time.
                index = np.arange(seen + fill, seen + len(vectors))
                slots = rng.integers(0, index + 1)
                keep = slots < max_vectors
                reservoir[slots[keep]] = rest[keep]
            seen += len(vectors)
        count = min(seen, max_vectors)
        if count < self.k:
            raise SlammingError(
                f"the fitting audio gave only {count} feature vectors, fewer than k={self.k}; "
                "give the tokeniser more audio or lower k"
            )
        fitted = KMeans.fit(
            torch.from_numpy(reservoir[:count]), self.k, iters=iters, seed=seed, device=self.device
        )
        self._set_kmeans(fitted, source="fit")
        return self

    def _fit_statistics(self, wavs: Iterable[torch.Tensor]) -> list[torch.Tensor]:
        """Measure the corpus mean, standard deviation and boundary threshold on ``wavs``; returns
        their frames normalised with them."""
        raw = [self.features.frames(wav) for wav in wavs]
        if not raw:
            raise SlammingError("the tokeniser got no audio to fit on; give it some speech")
        stacked = torch.cat(raw).double()
        mean, std = stacked.mean(dim=0), stacked.std(dim=0, unbiased=False)
        if not bool((std > 0).all()):
            raise SlammingError(
                "the fitting audio has a constant MFCC dimension (silence only?); fit on real speech"
            )
        # The threshold is measured on frames standardised like every later utterance's.
        self.feature_mean, self.feature_std = mean.float(), std.float()
        frames = [self._standardize(f) for f in raw]
        threshold = None
        if self.segment:
            distances = [frame_distances(f) for f in frames if len(f) > 1]
            if not distances:
                raise SlammingError("the fitting audio is too short to measure frame changes; give it more")
            threshold = float(np.percentile(np.concatenate(distances), self.percentile))
        self._set_statistics(self.feature_mean.tolist(), self.feature_std.tolist(), threshold)
        return frames

    def _finish(self, labels: torch.Tensor, durations: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        units = labels.cpu().numpy().astype(np.uint16)
        lengths = durations.cpu().numpy()
        if self.dedup:
            units, lengths = dedup(units, lengths)
        return units, lengths.astype(np.int32)

    def encode(self, wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise one utterance.

        Args:
            wav: ``(N,)`` 16 kHz mono waveform, at least 10 ms long.

        Returns:
            ``units`` (uint16, each < k) and ``durations`` (int32, in frames of
            ``identity["frame_rate"]``, summing to the frames covered).
        """
        kmeans = self._fitted()
        vectors, durations = self._vectors(wav)
        return self._finish(kmeans.assign(vectors), durations)

    def encode_batch(self, wavs: Sequence[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tokenise several utterances with one k-means assignment for all of them.

        Gives exactly what :meth:`encode` gives for each waveform; batching only saves the per-call
        overhead of the assignment (and a device round trip each, when it runs on a GPU).
        """
        kmeans = self._fitted()
        if len(wavs) == 0:
            return []
        pieces = [self._vectors(wav) for wav in wavs]
        labels = kmeans.assign(torch.cat([vectors for vectors, _ in pieces]))
        sizes = [len(vectors) for vectors, _ in pieces]
        return [
            self._finish(chunk, durations)
            for chunk, (_, durations) in zip(labels.split(sizes), pieces, strict=True)
        ]

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``tokenizer.json`` (settings and identity) and ``kmeans.safetensors`` into ``directory``.

        Raises:
            SlammingError: the directory already holds a tokeniser and ``overwrite`` is False.
        """
        return save_tokenizer_files(
            directory, self.kind, self.settings(), self.identity, self._fitted(), overwrite
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu") -> MFCCTokenizer:
        """Load a tokeniser written by :meth:`save` and verify its centroids match its identity.

        Raises:
            SlammingError: files missing or malformed, another tokeniser kind, or centroids that do
                not match the recorded identity.
        """
        directory = Path(directory)
        config = directory / CONFIG_FILE
        payload = read_config(directory)
        try:
            kind, settings, recorded = payload["kind"], dict(payload["settings"]), payload["identity"]
        except (KeyError, TypeError, ValueError) as err:
            raise SlammingError(
                f"{config} is not a valid tokenizer.json ({err!r}); save the tokeniser again"
            ) from err
        if kind != cls.kind:
            raise SlammingError(
                f"{config} describes a {kind!r} tokeniser, not {cls.kind!r}; load it with the matching class"
            )
        # Saved before `normalization` existed: every utterance was normalised by its own statistics.
        settings.setdefault("normalization", "utterance")
        try:
            tokenizer = cls(**settings, kmeans_path=directory / KMEANS_FILE, device=device)
        except (TypeError, ValueError) as err:
            raise SlammingError(
                f"{config} has settings this version does not know ({err}); save the tokeniser again"
            ) from err
        check_identity(recorded, tokenizer.identity, f"{directory}: recorded identity vs {KMEANS_FILE}")
        return tokenizer
