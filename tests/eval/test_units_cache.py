"""UnitsCache: each distinct waveform tokenised once per tokeniser, kept across runs on disk."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from slamming.eval.units_cache import UnitsCache, waveform_digest

IDENTITY = {"kind": "phone", "k": 10, "settings_hash": "abc123"}


class Counting:
    """A tokeniser stand-in that records which waveforms it was asked to encode (units = rounded
    first samples), so the test sees exactly what the cache spared it."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def encode_batch(self, wavs):
        self.seen.append(len(wavs))
        return [(np.round(w[:3].numpy() * 10).astype(np.uint16) % 10, np.ones(3)) for w in wavs]


def _wavs(n: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1600, generator=generator) for _ in range(n)]


def test_each_distinct_waveform_is_tokenised_once_and_kept_on_disk(tmp_path) -> None:
    wavs = _wavs(4)
    tokenizer = Counting()
    cache = UnitsCache(tmp_path, IDENTITY)
    first = cache.encode([wavs[0], wavs[1], wavs[0].clone()], tokenizer.encode_batch)
    assert tokenizer.seen == [2] and (cache.hits, cache.misses) == (1, 2)  # the clone is the same audio
    assert np.array_equal(first[0], first[2])
    again = cache.encode(wavs, tokenizer.encode_batch)
    assert tokenizer.seen == [2, 2] and [list(u) for u in again[:2]] == [list(u) for u in first[:2]]
    assert cache.save() and cache.path == tmp_path / "phone-abc123.npz"
    assert not cache.save()  # nothing new since

    reopened, fresh = UnitsCache(tmp_path, IDENTITY), Counting()
    assert len(reopened) == 4
    units = reopened.encode(wavs, fresh.encode_batch)
    assert fresh.seen == [] and [list(u) for u in units] == [list(u) for u in again]
    other = UnitsCache(tmp_path, {**IDENTITY, "settings_hash": "def456"})
    assert len(other) == 0  # another tokeniser never reads these units


def test_with_its_own_keys_a_caller_need_not_decode_what_the_cache_holds(tmp_path) -> None:
    wavs, tokenizer = _wavs(3), Counting()
    cache = UnitsCache(tmp_path, IDENTITY)
    first = cache.encode(wavs[:2], tokenizer.encode_batch, keys=["k0", "k1"])
    assert tokenizer.seen == [2] and cache.keys() == {"k0", "k1"}
    assert cache.save()
    reopened = UnitsCache(tmp_path, IDENTITY)
    assert reopened.keys() == {"k0", "k1"}
    units = reopened.encode([None, wavs[2], None], tokenizer.encode_batch, keys=["k1", "k2", "k0"])
    assert tokenizer.seen == [2, 1]  # only the new key was tokenised
    assert [list(u) for u in (units[2], units[0])] == [list(u) for u in first]
    with pytest.raises(ValueError, match="no units in the cache"):
        reopened.encode([None], tokenizer.encode_batch, keys=["unknown"])
    with pytest.raises(ValueError, match="2 keys for 1 waveforms"):
        reopened.encode([wavs[0]], tokenizer.encode_batch, keys=["a", "b"])


def test_an_unreadable_cache_file_is_ignored_and_written_anew(tmp_path, caplog) -> None:
    path = tmp_path / "phone-abc123.npz"
    path.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        cache = UnitsCache(tmp_path, IDENTITY)
    assert len(cache) == 0 and "ignoring the unit cache" in caplog.text
    cache.encode(_wavs(2), Counting().encode_batch)
    assert cache.save() and len(UnitsCache(tmp_path, IDENTITY)) == 2


def test_memory_only_cache_and_digest() -> None:
    cache = UnitsCache(None, IDENTITY)
    cache.encode(_wavs(1), Counting().encode_batch)
    assert not cache.save() and cache.path is None
    a, b = _wavs(2)
    assert waveform_digest(a) == waveform_digest(a.clone()) != waveform_digest(b)
    assert len(waveform_digest(a)) == 32
