"""Benchmark units tokenised once per tokeniser: a cache from waveform to units.

Scoring a benchmark twice (the pretrained model, then the aligned one), or two benchmarks that share
audio (the embedded topic and spoken cloze share their positive stories), tokenises the same
waveforms again each time; with a neural tokeniser on a CPU that is most of an evaluation pass.
:class:`UnitsCache` remembers, per tokeniser identity, the units of every waveform it has seen,
keyed by a digest of the samples, so the units come from the tokeniser the first time only. A caller
that knows its audio by file gives its own keys instead (a benchmark's loader names each file by a
digest of its bytes, :func:`~slamming.speech.audio.audio_key`), and then need not decode a file whose
key the cache holds (:meth:`UnitsCache.keys`).

On disk a cache is one ``.npz`` per tokeniser (``<kind>-<settings hash>.npz``) with three arrays:
the waveforms' digests, their units end to end, and where each one's units end. It is read with
``allow_pickle=False`` and written atomically; a file that cannot be read is ignored and rewritten
(one logged line), never trusted in part.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slamming.atomic import atomic_path

__all__ = ["UnitsCache", "waveform_digest"]

log = logging.getLogger(__name__)


def waveform_digest(wav: torch.Tensor) -> str:
    """A 32-hex-digit digest of a waveform's float32 samples."""
    data = wav.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class UnitsCache:
    """Units of waveforms already tokenised by one tokeniser, kept in memory and in ``directory``.

    Args:
        directory: the cache folder (created when first saved); None keeps the cache in memory only.
        identity: the tokeniser's identity; its ``kind`` and ``settings_hash`` name the file, so a
            different tokeniser never reads another's units.
    """

    def __init__(self, directory: str | os.PathLike[str] | None, identity: dict[str, Any]) -> None:
        name = f"{identity.get('kind', 'unknown')}-{identity.get('settings_hash', 'unhashed')}.npz"
        self.path = None if directory is None else Path(directory) / name
        self._units: dict[str, np.ndarray] = {}
        self._added = 0
        #: Waveforms served from the cache and tokenised, since the cache was made.
        self.hits = self.misses = 0
        if self.path is not None and self.path.is_file():
            self._read(self.path)

    def _read(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                digests, units, ends = data["digests"], data["units"], data["ends"]
            starts = np.concatenate([[0], ends[:-1]])
            if len(digests) != len(ends) or (len(ends) and int(ends[-1]) != len(units)):
                raise ValueError("the arrays do not agree in length")
            self._units = {str(d): units[s:e] for d, s, e in zip(digests, starts, ends, strict=True)}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("ignoring the unit cache %s (%s); it will be written anew", path, err)
            self._units = {}

    def __len__(self) -> int:
        return len(self._units)

    def keys(self) -> frozenset[str]:
        """The keys whose units the cache holds."""
        return frozenset(self._units)

    def encode(
        self,
        wavs: Sequence[torch.Tensor | None],
        encode_batch: Callable[[Sequence[torch.Tensor]], list],
        keys: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """The units of each waveform: from the cache, else from ``encode_batch`` (one call for all
        the missing ones, each distinct waveform once), which are then remembered.

        ``keys``: the waveforms' own keys (None: :func:`waveform_digest` of each); a waveform whose
        key the cache holds may then be None.
        """
        if keys is None:
            digests = [waveform_digest(wav) for wav in wavs]  # type: ignore[arg-type]
        elif len(keys) != len(wavs):
            raise ValueError(f"{len(keys)} keys for {len(wavs)} waveforms")
        else:
            digests = list(keys)
        missing = {d: i for i, d in enumerate(digests) if d not in self._units}
        if any(wavs[i] is None for i in missing.values()):
            raise ValueError("a waveform left undecoded has no units in the cache")
        if missing:
            encoded = encode_batch([wavs[i] for i in missing.values()])
            for digest, (units, _) in zip(missing, encoded, strict=True):
                self._units[digest] = np.asarray(units, dtype=np.uint16)
            self._added += len(missing)
        self.misses += len(missing)
        self.hits += len(digests) - len(missing)
        return [self._units[d] for d in digests]

    def save(self) -> bool:
        """Write the cache when it learnt something since it was read; returns whether it wrote."""
        if self.path is None or not self._added:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        digests = list(self._units)
        arrays = [self._units[d] for d in digests]
        ends = np.cumsum([len(a) for a in arrays], dtype=np.int64)
        units = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)
        with atomic_path(self.path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, digests=np.asarray(digests, dtype="U32"), units=units, ends=ends)
        self._added = 0
        return True
