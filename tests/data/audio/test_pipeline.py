"""The fairseq2 audio pipeline: every item once, bad files recorded, shards, skips, resume, Lightning."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch

from slamming.data.audio.decode import AudioFileDecoder
from slamming.data.audio.pipeline import AudioManifestDataModule, segment_bounds
from slamming.errors import SlammingError

SR = 16000


def _tone(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    data = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate) + 0.01 * rng.standard_normal(n)
    return np.stack([data * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of good, bad and short files plus the expected 16 kHz length of every item."""
    root = tmp_path_factory.mktemp("audio")
    (root / "sub").mkdir()
    good = {  # rel -> (seconds, rate, channels, format)
        "a_mono16k.wav": (1.0, 16000, 1, "WAV"),
        "b_stereo44k.flac": (2.0, 44100, 2, "FLAC"),
        "c_mono8k.wav": (1.5, 8000, 1, "WAV"),
        "sub/d_stereo16k.wav": (0.5, 16000, 2, "WAV"),
        "sub/e_mono22k.ogg": (0.75, 22050, 1, "OGG"),
    }
    expected: dict[str, int] = {}
    for i, (rel, (seconds, rate, channels, fmt)) in enumerate(good.items()):
        sf.write(root / rel, _tone(seconds, rate, channels, i), rate, format=fmt)
        frames = sf.info(root / rel).frames
        expected[rel] = -(-frames * SR // rate)
    rng = np.random.default_rng(7)
    sf.write(root / "long.flac", (0.01 * rng.standard_normal(70 * SR)).astype(np.float32), SR)
    expected.update({"long.flac#0": 30 * SR, "long.flac#1": 30 * SR, "long.flac#2": 10 * SR})
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (root / "empty.flac").write_bytes(b"")
    sf.write(root / "tiny.wav", _tone(0.05, SR, 1, 9), SR)
    (root / "notes.txt").write_text("not audio, not scanned")
    return {"root": root, "expected": expected}


def _items(batches: Any) -> list[tuple[str, int, int, torch.Tensor, str]]:
    out = []
    for batch in batches:
        assert set(batch) == {"waveforms", "ids", "orders", "segments", "sources"}
        columns = [batch[k] for k in ("waveforms", "ids", "orders", "segments", "sources")]
        for wav, i, o, s, src in zip(*columns, strict=True):
            out.append((i, o, s, wav, src))
    return out


def test_segment_bounds_rule() -> None:
    assert segment_bounds(70 * SR, 30 * SR, 1600) == [(0, 480000), (480000, 960000), (960000, 1120000)]
    assert segment_bounds(60 * SR + 800, 30 * SR, 1600) == [(0, 480000), (480000, 960800)]
    assert segment_bounds(30 * SR, 30 * SR, 1600) == [(0, 480000)]
    assert segment_bounds(30 * SR + 10, 30 * SR, 1600) == [(0, 480010)]
    assert segment_bounds(10**7, None, 1600) == [(0, 10**7)]


def test_every_item_once_with_lengths_orders_and_bad_files(audio_dir: dict[str, Any]) -> None:
    root, expected = audio_dir["root"], audio_dir["expected"]
    dm = AudioManifestDataModule(str(root), batch_size=3, num_parallel_calls=2, prefetch=2)
    loader = dm.predict_dataloader()
    items = _items(loader)
    assert Counter(i for i, *_ in items) == Counter(list(expected))  # every good item exactly once
    for item_id, _order, segment, wav, source in items:
        assert wav.dtype == torch.float32 and wav.dim() == 1 and wav.numel() == expected[item_id]
        rel = item_id.split("#")[0]
        assert source == str(root / rel)
        assert segment == (int(item_id.split("#")[1]) if "#" in item_id else 0)
    rels = sorted(["a_mono16k.wav", "b_stereo44k.flac", "c_mono8k.wav", "sub/d_stereo16k.wav",
                   "sub/e_mono22k.ogg", "long.flac", "corrupt.wav", "empty.flac", "tiny.wav"])  # fmt: skip
    assert {i: o for i, o, *_ in items} == {i: rels.index(i.split("#")[0]) for i in expected}
    # A mono 16 kHz WAV comes through sample for sample.
    wav = next(w for i, _, _, w, _ in items if i == "a_mono16k.wav")
    assert torch.equal(wav, torch.from_numpy(sf.read(root / "a_mono16k.wav", dtype="float32")[0]))
    bad = dict(dm.bad_files)
    assert list(bad) == [str(root / "corrupt.wav"), str(root / "empty.flac")]
    assert "cannot decode audio" in bad[str(root / "corrupt.wav")]
    assert "is empty (0 bytes)" in bad[str(root / "empty.flac")]
    assert dm.short_files == [str(root / "tiny.wav")]
    # A second pass over the same loader (the reset wrapper) yields the same items in the same order.
    again = _items(loader)
    assert [i for i, *_ in again] == [i for i, *_ in items]
    summary = dm.summary()
    assert "6 files, 8 items (3 of them segments)" in summary
    hours = sum(expected.values()) / SR / 3600
    assert f"{hours:.4f} hours" in summary
    assert "1 files shorter than 0.1 s" in summary and "bad files: 2" in summary
    assert f"  {root / 'corrupt.wav'}: " in summary and f"  {root / 'empty.flac'}: " in summary


def test_two_ranks_are_disjoint_and_cover_everything(audio_dir: dict[str, Any]) -> None:
    root, expected = audio_dir["root"], audio_dir["expected"]
    shards = []
    bad: list[str] = []
    for rank in range(2):
        dm = AudioManifestDataModule(str(root), batch_size=2, rank=rank, world_size=2)
        shards.append([i for i, *_ in _items(dm.predict_dataloader())])
        bad += [p for p, _ in dm.bad_files]
        assert dm.summary().startswith(f"audio {root} (rank {rank} of 2)")
    assert shards[0] and shards[1]
    assert not set(shards[0]) & set(shards[1])
    assert Counter(shards[0] + shards[1]) == Counter(list(expected))
    assert sorted(bad) == [str(root / "corrupt.wav"), str(root / "empty.flac")]
    # All segments of a cut file stay on one rank.
    assert sum("long.flac#0" in s and "long.flac#2" in s for s in shards) == 1


def test_tsv_and_jsonl_manifests_with_relative_paths(audio_dir: dict[str, Any], tmp_path: Path) -> None:
    root, expected = audio_dir["root"], audio_dir["expected"]
    rel = Path("..") / root.name
    names = ["c_mono8k.wav", "long.flac", "empty.flac"]
    (tmp_path / "lists").mkdir()
    tsv = tmp_path / "lists" / "m.tsv"
    tsv.write_text("path\ttext\n" + "".join(f"../{rel / n}\tsay {n}\n" for n in names))
    jsonl = tmp_path / "lists" / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"path": f"../{rel / n}", "duration": 1.0}) + "\n" for n in names))
    prefix = (Path("..") / rel).as_posix()
    want = {f"{prefix}/c_mono8k.wav": 0, **{f"{prefix}/long.flac#{k}": 1 for k in range(3)}}
    for manifest in (tsv, jsonl):
        dm = AudioManifestDataModule(str(manifest), batch_size=4)
        items = _items(dm.predict_dataloader())
        assert {i: o for i, o, *_ in items} == want
        assert [w.numel() for *_, w, _ in items] == [expected[i.split("/")[-1]] for i, *_ in items]
        assert [p for p, _ in dm.bad_files] == [str(tsv.parent / f"../{rel}/empty.flac")]


def test_skip_ids_are_not_decoded(audio_dir: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    root, expected = audio_dir["root"], audio_dir["expected"]
    decoded: list[str] = []
    real = AudioFileDecoder.__call__

    def counting(self: AudioFileDecoder, path: str) -> torch.Tensor:
        decoded.append(Path(path).relative_to(root).as_posix())
        return real(self, path)

    monkeypatch.setattr(AudioFileDecoder, "__call__", counting)
    done = {"a_mono16k.wav", "long.flac#0", "long.flac#1", "long.flac#2", "not/in/manifest.wav"}
    dm = AudioManifestDataModule(str(root), skip_ids=done)
    ids = [i for i, *_ in _items(dm.predict_dataloader())]
    assert Counter(ids) == Counter(set(expected) - done)
    assert "a_mono16k.wav" not in decoded and "long.flac" not in decoded
    assert dm.skipped_ids == sorted(done - {"not/in/manifest.wav"})
    # One segment done: the file is decoded again, only the missing segments come out.
    dm = AudioManifestDataModule(str(root), skip_ids=["long.flac#1"])
    ids = [i for i, *_ in _items(dm.predict_dataloader())]
    assert Counter(ids) == Counter(set(expected) - {"long.flac#1"})


def test_state_dict_resumes_exactly(audio_dir: dict[str, Any]) -> None:
    root = audio_dir["root"]
    args = {"manifest": str(root), "batch_size": 2, "num_parallel_calls": 2, "prefetch": 2}
    full = _items(AudioManifestDataModule(**args).predict_dataloader())
    first = AudioManifestDataModule(**args)
    it = iter(first.predict_dataloader())
    head = _items([next(it), next(it)])
    state = first.state_dict()
    assert set(state) == {"pipeline"} and "position" in state["pipeline"]
    second = AudioManifestDataModule(**args)
    second.load_state_dict(state)
    loader = second.predict_dataloader()
    rest = _items(loader)
    assert [i for i, *_ in head + rest] == [i for i, *_ in full]
    assert all(torch.equal(a[3], b[3]) for a, b in zip(head + rest, full, strict=True))
    # After the resumed pass, the next pass starts from the beginning again.
    assert [i for i, *_ in _items(loader)] == [i for i, *_ in full]


def test_max_batch_seconds_buckets_by_length(audio_dir: dict[str, Any]) -> None:
    root, expected = audio_dir["root"], audio_dir["expected"]
    dm = AudioManifestDataModule(str(root), max_batch_seconds=40.0)
    batches = list(dm.predict_dataloader())
    assert Counter(i for b in batches for i in b["ids"]) == Counter(list(expected))
    assert all(sum(w.numel() for w in b["waveforms"]) <= 40 * SR for b in batches)
    with pytest.raises(SlammingError, match="max_batch_seconds"):
        AudioManifestDataModule(str(root), max_batch_seconds=20.0)


class _Ids(pl.LightningModule):
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        return list(batch["ids"])


def test_lightning_predict_yields_every_item_once_per_call(audio_dir: dict[str, Any]) -> None:
    expected = audio_dir["expected"]
    dm = AudioManifestDataModule(str(audio_dir["root"]), batch_size=3)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    for _ in range(2):  # the same (cached) loader twice: the reset wrapper restarts the pipeline
        out = trainer.predict(_Ids(), datamodule=dm)
        assert Counter(i for ids in out for i in ids) == Counter(list(expected))
    assert len(dm.bad_files) == 2


def test_native_decoding_hands_out_the_soundfile_samples(audio_dir: dict[str, Any]) -> None:
    """fairseq2's AudioDecoder (WAV/FLAC) and soundfile give the same items, bit for bit, and bad files."""
    root = audio_dir["root"]
    native = AudioManifestDataModule(str(root), batch_size=3)
    plain = AudioManifestDataModule(str(root), batch_size=3, native_decoding=False)
    a, b = _items(native.predict_dataloader()), _items(plain.predict_dataloader())
    assert [x[:3] for x in a] == [x[:3] for x in b] and len(a) == len(audio_dir["expected"])
    assert all(torch.equal(x[3], y[3]) for x, y in zip(a, b, strict=True))
    assert native.bad_files == plain.bad_files and len(native.bad_files) == 2
