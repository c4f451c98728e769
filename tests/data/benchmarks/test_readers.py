"""Pair benchmark readers: pairs come from metadata in every published layout; wrong layouts fail clearly (D3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from slamming.data.benchmarks.datamodule import PairBenchmarkDataModule
from slamming.data.benchmarks.readers import load_benchmarks
from slamming.errors import AudioError, SlammingError
from slamming.speech.audio import audio_key, write_wav

LEXICAL_HEADER = "id,filename,voice,frequency,word,phones,length,correct"
SYNTACTIC_HEADER = "filename,id,voice,type,subtype,transcription,correct"


def tone(path: Path, hz: float, seconds: float = 0.2, sample_rate: int = 16000) -> Path:
    """A real sine-wave WAV file."""
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return write_wav(path, 0.3 * torch.sin(2 * math.pi * hz * t), sample_rate)


def zerospeech_lexical(root: Path) -> Path:
    """lexical/dev with ids 1 (two voices), 2 (one voice, oov), and one unpaired row; shuffled rows."""
    folder = root / "lexical" / "dev"
    rows = [
        ("1", "nw1a", "bob", "", "brike", "b r aI k", "5", "0"),
        ("2", "w2a.wav", "bob", "oov", "zyther", "z aI D @", "6", "1"),
        ("1", "w1b", "alice", "12", "bike", "b aI k", "4", "1"),
        ("1", "w1a", "bob", "12", "bike", "b aI k", "4", "1"),
        ("2", "nw2a", "bob", "", "zythek", "z aI T E k", "6", "0"),
        ("1", "nw1b.wav", "alice", "", "brike", "b r aI k", "5", "0"),
        ("3", "w3a", "bob", "40", "lonely", "l oU n l i", "6", "1"),  # no non-word: skipped
    ]
    for i, row in enumerate(rows):
        tone(folder / f"{row[1].removesuffix('.wav')}.wav", 200 + 50 * i)
    (folder / "gold.csv").write_text("\n".join([LEXICAL_HEADER, *(",".join(r) for r in rows)]) + "\n")
    return folder


def test_zerospeech_lexical_pairs_by_id_and_voice(tmp_path: Path) -> None:
    folder = zerospeech_lexical(tmp_path)
    (bench,) = load_benchmarks({"kind": "zerospeech-lexical", "path": str(tmp_path)})
    assert bench.name == "sWUGGY" and bench.zerospeech and bench.path == folder
    got = {(p.id, p.voice, p.positive.name, p.negative.name, p.group) for p in bench.pairs}
    assert got == {
        ("1", "bob", "w1a.wav", "nw1a.wav", "in-vocabulary"),
        ("1", "alice", "w1b.wav", "nw1b.wav", "in-vocabulary"),
        ("2", "bob", "w2a.wav", "nw2a.wav", "oov"),
    }
    assert bench.skipped == {"rows without the other side of their pair": 1}
    # The split folder itself works too.
    (same,) = load_benchmarks({"kind": "zerospeech-lexical", "path": str(folder), "name": "w"})
    assert same.name == "w" and same.pairs == bench.pairs


def test_zerospeech_syntactic_groups_by_type(tmp_path: Path) -> None:
    folder = tmp_path / "syntactic" / "test"
    rows = [
        ("s1", "7", "v1", "anaphor_agreement", "x", "the boy saw himself", "1"),
        ("s2", "7", "v1", "anaphor_agreement", "x", "the boy saw herself", "0"),
        ("s3", "8", "v1", "island_effects", "y", "what did he see", "0"),
        ("s4", "8", "v1", "island_effects", "y", "what he did see", "1"),
    ]
    for i, row in enumerate(rows):
        tone(folder / f"{row[0]}.wav", 300 + 40 * i)
    (folder / "gold.csv").write_text("\n".join([SYNTACTIC_HEADER, *(",".join(r) for r in rows)]) + "\n")
    (bench,) = load_benchmarks({"kind": "zerospeech-syntactic", "path": str(tmp_path), "split": "test"})
    assert bench.name == "sBLIMP"
    assert [(p.positive.stem, p.negative.stem, p.group) for p in bench.pairs] == [
        ("s1", "s2", "anaphor_agreement"),
        ("s4", "s3", "island_effects"),
    ]


def test_zerospeech_errors_name_the_layout_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match=r"no lexical/dev/gold.csv; expected the ZeroSpeech 2021 layout"):
        load_benchmarks({"kind": "zerospeech-lexical", "path": str(tmp_path)})
    folder = zerospeech_lexical(tmp_path)
    (folder / "nw1b.wav").unlink()
    with pytest.raises(SlammingError, match=r"gold.csv line 7 names .*nw1b.wav, which does not exist"):
        load_benchmarks({"kind": "zerospeech-lexical", "path": str(tmp_path)})
    (folder / "gold.csv").write_text("id,filename,correct\n1,w1a,1\n")
    with pytest.raises(SlammingError, match="lacks the column.s. voice, frequency"):
        load_benchmarks({"kind": "zerospeech-lexical", "path": str(tmp_path)})
    (folder / "gold.csv").write_text(f"{LEXICAL_HEADER}\n1,w1a,bob,1,bike,b,4,yes\n")
    with pytest.raises(SlammingError, match="line 2: correct must be 0 or 1, got 'yes'"):
        load_benchmarks({"kind": "zerospeech-lexical", "path": str(tmp_path)})


def test_storycloze_pairs_by_base_name(tmp_path: Path) -> None:
    for base in ("12", "3", "part/7"):
        tone(tmp_path / f"{base}_correct.wav", 300)
        tone(tmp_path / f"{base}_incorrect.wav", 400)
    tone(tmp_path / "3_mutual.wav", 500)  # the cross-modal layout's third file: ignored
    tone(tmp_path / "9_correct.wav", 600)  # no _incorrect: skipped and counted
    (bench,) = load_benchmarks({"kind": "storycloze", "path": str(tmp_path), "name": "sSC"})
    assert bench.kind == "storycloze" and not bench.zerospeech
    assert {(p.id, p.positive.name, p.negative.name) for p in bench.pairs} == {
        ("12", "12_correct.wav", "12_incorrect.wav"),
        ("3", "3_correct.wav", "3_incorrect.wav"),
        ("part/7", "7_correct.wav", "7_incorrect.wav"),
    }
    assert bench.skipped == {"files without their pair": 1}


def test_salmon_one_benchmark_per_part(tmp_path: Path) -> None:
    for part, n in (("speaker_consistency", 3), ("bg_alignment", 2)):
        for i in range(n):
            tone(tmp_path / part / f"sample_{i}_1.wav", 500)
            tone(tmp_path / part / f"sample_{i}_0.wav", 300)
    tone(tmp_path / "bg_alignment" / "sample_9_0.wav", 300)  # one option only
    benches = load_benchmarks({"kind": "salmon", "path": str(tmp_path)})
    assert [b.name for b in benches] == ["SALMon/bg_alignment", "SALMon/speaker_consistency"]
    assert [len(b.pairs) for b in benches] == [2, 3] and benches[0].skipped == {
        "samples without both options": 1
    }
    pair = benches[1].pairs[2]
    assert (pair.id, pair.positive.name, pair.negative.name) == ("2", "sample_2_0.wav", "sample_2_1.wav")
    (only,) = load_benchmarks({"kind": "salmon", "path": str(tmp_path), "parts": ["speaker_consistency"]})
    assert only.name == "SALMon/speaker_consistency"
    with pytest.raises(SlammingError, match="no SALMon part rir_consistency; it has bg_alignment, speaker_"):
        load_benchmarks({"kind": "salmon", "path": str(tmp_path), "parts": "rir_consistency"})
    with pytest.raises(
        SlammingError, match=r"expected the SALMon layout <root>/<part>/sample_\{i\}_\{0\|1\}.wav"
    ):
        load_benchmarks({"kind": "salmon", "path": str(tmp_path / "speaker_consistency")})


def test_manifests_jsonl_and_csv(tmp_path: Path) -> None:
    tone(tmp_path / "a" / "p.wav", 300)
    tone(tmp_path / "a" / "n.wav", 400)
    absolute = tone(tmp_path / "elsewhere.wav", 500)
    lines = [
        {"positive": "a/p.wav", "negative": "a/n.wav", "id": "x", "voice": "v", "group": "g"},
        {"positive": str(absolute), "negative": "a/p.wav"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    (bench,) = load_benchmarks({"kind": "manifest", "path": str(tmp_path / "m.jsonl")})
    assert bench.name == "m"
    assert [(p.positive, p.negative, p.id, p.voice, p.group) for p in bench.pairs] == [
        (tmp_path / "a/p.wav", tmp_path / "a/n.wav", "x", "v", "g"),
        (absolute, tmp_path / "a/p.wav", "2", "", ""),
    ]
    (tmp_path / "m.csv").write_text("positive,negative,id\na/p.wav,a/n.wav,q\n")
    (csv_bench,) = load_benchmarks({"kind": "manifest", "path": str(tmp_path / "m.csv")})
    assert [(p.positive, p.id) for p in csv_bench.pairs] == [(tmp_path / "a/p.wav", "q")]
    (tmp_path / "bad.jsonl").write_text('{"positive": "a/p.wav", "negative": "a/n.wav"}\n{oops\n')
    with pytest.raises(SlammingError, match="bad.jsonl line 2 is not valid JSON"):
        load_benchmarks({"kind": "manifest", "path": str(tmp_path / "bad.jsonl")})
    (tmp_path / "bad.jsonl").write_text('{"positive": "a/p.wav", "negative": "a/gone.wav"}\n')
    with pytest.raises(SlammingError, match="bad.jsonl line 1 names .*gone.wav, which does not exist"):
        load_benchmarks({"kind": "manifest", "path": str(tmp_path / "bad.jsonl")})
    (tmp_path / "bad.jsonl").write_text('{"positive": "a/p.wav"}\n')
    with pytest.raises(SlammingError, match="line 1 lacks positive or negative"):
        load_benchmarks({"kind": "manifest", "path": str(tmp_path / "bad.jsonl")})


def test_a_manifest_prefix_is_read_and_served(tmp_path: Path) -> None:
    tone(tmp_path / "p.wav", 300)
    tone(tmp_path / "n.wav", 400)
    tone(tmp_path / "pre.wav", 500, seconds=0.4)
    rows = [
        {"positive": "p.wav", "negative": "n.wav", "prefix": "pre.wav"},
        {"positive": "n.wav", "negative": "p.wav"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    (bench,) = load_benchmarks({"kind": "manifest", "path": str(tmp_path / "m.jsonl")})
    assert [p.prefix for p in bench.pairs] == [tmp_path / "pre.wav", None]
    dm = PairBenchmarkDataModule([{"kind": "manifest", "path": str(tmp_path / "m.jsonl")}], batch_size=2)
    (batch,) = list(dm.test_dataloader()[0])
    assert batch["prefix"][0].shape[-1] == 6400 and batch["prefix"][1] is None
    assert [w.shape[-1] for w in batch["positive"]] == [3200, 3200]
    # every side comes with the key of its file's bytes; the same file, the same key
    keys = batch["keys"]
    assert keys["positive"] == keys["negative"][::-1] and keys["prefix"][1] is None
    assert keys["positive"][0] == audio_key((tmp_path / "p.wav").read_bytes(), 16000)
    assert len({keys["positive"][0], keys["negative"][0], keys["prefix"][0]}) == 3
    # audio the module already knows is read but not decoded: its side is None, its key still given
    dm.known_audio = frozenset([keys["positive"][0], keys["prefix"][0]])
    (again,) = list(dm.test_dataloader()[0])
    assert again["keys"] == keys
    assert again["positive"][0] is None and again["negative"][1] is None and again["prefix"][0] is None
    assert torch.equal(again["negative"][0], batch["negative"][0])
    assert torch.equal(again["positive"][1], batch["positive"][1])
    (tmp_path / "bad.jsonl").write_text('{"positive": "p.wav", "negative": "n.wav", "prefix": "gone.wav"}\n')
    with pytest.raises(SlammingError, match="bad.jsonl line 1 names .*gone.wav, which does not exist"):
        load_benchmarks({"kind": "manifest", "path": str(tmp_path / "bad.jsonl")})


def test_bad_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match="kind 'zerospeech'; a benchmark is"):
        load_benchmarks({"kind": "zerospeech", "path": str(tmp_path)})
    with pytest.raises(SlammingError, match="unknown key.s. splt"):
        load_benchmarks({"kind": "storycloze", "path": str(tmp_path), "splt": "dev"})
    with pytest.raises(SlammingError, match="no story pairs found; expected a folder of <base>_correct.wav"):
        load_benchmarks({"kind": "storycloze", "path": str(tmp_path)})


def test_data_module_reads_resampled_audio_per_benchmark(tmp_path: Path) -> None:
    tone(tmp_path / "s" / "1_correct.wav", 300, seconds=0.5, sample_rate=22050)
    tone(tmp_path / "s" / "1_incorrect.wav", 300, seconds=0.25)
    tone(tmp_path / "s" / "2_correct.wav", 300)
    tone(tmp_path / "s" / "2_incorrect.wav", 300)
    spec = {"kind": "storycloze", "path": str(tmp_path / "s")}
    dm = PairBenchmarkDataModule([spec, {**spec, "name": "again"}], batch_size=2, max_pairs=1)
    assert dm.num_units is None and [b.name for b in dm.benchmarks] == ["s", "again"]
    loaders = dm.test_dataloader()
    assert len(loaders) == 2
    (batch,) = list(loaders[0])
    assert batch["index"].tolist() == [0]
    assert batch["positive"][0].shape == (8000,) and batch["negative"][0].shape == (4000,)
    with pytest.raises(SlammingError, match="more than one benchmark named s; give each a name"):
        PairBenchmarkDataModule([spec, spec])
    (tmp_path / "s" / "2_correct.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="2_correct.wav"):
        list(PairBenchmarkDataModule([spec]).test_dataloader()[0])
