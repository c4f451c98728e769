"""Tests of the on-disk unit corpus (slamming.data.corpus.format)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slamming.data.corpus import format as corpus_module
from slamming.data.corpus.format import FORMAT_VERSION, UnitCorpus, summarize
from slamming.data.corpus.writer import CorpusWriter
from slamming.errors import CorpusError

TOKENIZER = {"kind": "mfcc", "k": 50, "frame_rate": 25, "dedup": True, "settings_hash": "5eed"}


def _units_and_durations(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        length = int(rng.integers(1, 40))
        docs.append((rng.integers(0, 50, size=length), rng.integers(1, 9, size=length)))
    return docs


def _words(i: int) -> list[tuple[str, float, float]] | None:
    """Word timings of test document ``i``: none for every fourth, else i + 1 words of 0.25 s."""
    if i % 4 == 1:
        return None
    return [(f"wörd{n}", 0.3 * n, 0.3 * n + 0.25) for n in range(i + 1)]


def _write(path: Path, docs: list[tuple[np.ndarray, np.ndarray]], **kwargs: object) -> Path:
    with CorpusWriter(path, TOKENIZER, num_units=50, **kwargs) as writer:  # type: ignore[arg-type]
        for i, (units, durations) in enumerate(docs):
            text = f"story {i}" if i % 2 == 0 else None
            source = f"audio/{i}.wav" if i % 3 else None
            index = writer.add(units, durations=durations, text=text, source=source, words=_words(i))
            assert index == i
    return path


def test_round_trip_of_units_durations_text_sources_and_words(tmp_path: Path) -> None:
    docs = _units_and_durations(25)
    corpus = UnitCorpus(_write(tmp_path / "c", docs))
    assert len(corpus) == 25
    assert corpus.num_tokens == sum(len(u) for u, _ in docs)
    np.testing.assert_array_equal(corpus.lengths, [len(u) for u, _ in docs])
    assert corpus.lengths.dtype == np.int64
    for i, (units, durations) in enumerate(docs):
        doc = corpus.document(i)
        assert doc.dtype == np.uint16
        np.testing.assert_array_equal(doc, units)
        np.testing.assert_array_equal(corpus.durations(i), durations)
        assert corpus.text(i) == (f"story {i}" if i % 2 == 0 else None)
        assert corpus.source(i) == (f"audio/{i}.wav" if i % 3 else None)
        assert corpus.words(i) == _words(i)
    assert corpus.words(2) == [("wörd0", 0.0, 0.25), ("wörd1", 0.3, 0.55), ("wörd2", 0.6, 0.85)]
    assert corpus.words(1) is None and corpus.words(-1) == _words(24)
    np.testing.assert_array_equal(corpus[-1], docs[-1][0])
    # Views are read-only: a training loop cannot corrupt the corpus in place.
    with pytest.raises(ValueError, match="read-only"):
        corpus.document(0)[0] = 1
    with pytest.raises(IndexError, match="document 25 is out of range"):
        corpus.document(25)
    frames = sum(int(d.sum()) for _, d in docs)
    assert corpus.hours == pytest.approx(frames / 25 / 3600)


def test_meta_json_records_identity_counts_and_checksums(tmp_path: Path) -> None:
    docs = _units_and_durations(5)
    corpus = UnitCorpus(_write(tmp_path / "c", docs))
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 1
    assert meta["tokenizer"] == TOKENIZER == corpus.tokenizer
    assert (meta["num_units"], meta["num_documents"]) == (50, 5)
    assert meta["num_tokens"] == sum(len(u) for u, _ in docs)
    assert (meta["has_durations"], meta["has_text"], meta["has_sources"], meta["has_words"]) == (True,) * 4
    assert meta["shards"] == [
        {
            "tokens": "tokens-00000.bin",
            "durations": "durations-00000.bin",
            "first_document": 0,
            "first_token": 0,
            "num_documents": 5,
            "num_tokens": meta["num_tokens"],
        }
    ]
    names = {"tokens-00000.bin", "durations-00000.bin", "offsets.npy", "text.jsonl", "sources.jsonl"}
    names.add("words.jsonl")
    assert set(meta["sha256"]) == names
    assert all(len(digest) == 64 for digest in meta["sha256"].values())
    assert meta["created"].endswith("+00:00")
    offsets = np.load(tmp_path / "c" / "offsets.npy")
    assert offsets.dtype == np.int64 and offsets[0] == 0 and offsets[-1] == meta["num_tokens"]
    corpus.verify()


def test_documents_never_cross_shards(tmp_path: Path) -> None:
    docs = _units_and_durations(40, seed=1)
    corpus = UnitCorpus(_write(tmp_path / "c", docs, shard_tokens=64))
    shards = corpus.meta["shards"]
    assert len(shards) > 5
    offsets = np.load(tmp_path / "c" / "offsets.npy")
    for shard in shards:
        size = (tmp_path / "c" / shard["tokens"]).stat().st_size
        assert size == 2 * shard["num_tokens"]
        first, count = shard["first_document"], shard["num_documents"]
        # The shard holds exactly its documents, which start and end inside it.
        assert offsets[first] == shard["first_token"]
        assert offsets[first + count] - offsets[first] == shard["num_tokens"]
        assert shard["num_tokens"] <= 64
    assert sum(s["num_documents"] for s in shards) == 40
    for i, (units, durations) in enumerate(docs):
        np.testing.assert_array_equal(corpus.document(i), units)
        np.testing.assert_array_equal(corpus.durations(i), durations)


def test_a_document_longer_than_a_shard_gets_its_own(tmp_path: Path) -> None:
    with CorpusWriter(tmp_path / "c", TOKENIZER, 50, shard_tokens=10) as writer:
        writer.add([1, 2, 3])
        writer.add(np.arange(25) % 50)
        writer.add([4])
    corpus = UnitCorpus(tmp_path / "c")
    assert [s["num_tokens"] for s in corpus.meta["shards"]] == [3, 25, 1]
    np.testing.assert_array_equal(corpus.document(1), np.arange(25))
    # Without durations, text, sources or words the optional files are left out.
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "meta.json",
        "offsets.npy",
        "tokens-00000.bin",
        "tokens-00001.bin",
        "tokens-00002.bin",
    ]
    assert corpus.durations(0) is None and corpus.text(0) is None and corpus.source(0) is None
    assert corpus.words(0) is None and corpus.meta["has_words"] is False
    assert corpus.hours is None


def test_a_corpus_written_before_words_existed_still_opens(tmp_path: Path) -> None:
    docs = _units_and_durations(3)
    target = _write(tmp_path / "c", docs)
    # What an older writer made: no words.jsonl, and no has_words in meta.json.
    meta = json.loads((target / "meta.json").read_text())
    del meta["has_words"], meta["sha256"]["words.jsonl"]
    (target / "meta.json").write_text(json.dumps(meta))
    (target / "words.jsonl").unlink()
    corpus = UnitCorpus(target)
    corpus.verify()
    assert [corpus.words(i) for i in range(3)] == [None, None, None]
    assert corpus.text(0) == "story 0"
    np.testing.assert_array_equal(corpus.document(2), docs[2][0])
    assert summarize(target).splitlines()[7] == "  extras     durations, text, sources"


def test_words_are_stored_as_given_including_empty_lists_and_integer_times(tmp_path: Path) -> None:
    with CorpusWriter(tmp_path / "c", TOKENIZER, 50) as writer:
        writer.add([1], words=[])
        writer.add([2], words=[["a", 0, 1], ("b", 1, 1.5)])
    corpus = UnitCorpus(tmp_path / "c")
    assert corpus.words(0) == [] and corpus.words(1) == [("a", 0.0, 1.0), ("b", 1.0, 1.5)]
    lines = (tmp_path / "c" / "words.jsonl").read_text().splitlines()
    assert lines == ["[]", '[["a", 0.0, 1.0], ["b", 1.0, 1.5]]']


def test_exception_inside_the_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with CorpusWriter(tmp_path / "c", TOKENIZER, 50) as writer:
            writer.add([1, 2, 3], text="a")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # An empty corpus is refused at close, and also leaves nothing.
    with pytest.raises(CorpusError, match="no documents were added"):
        with CorpusWriter(tmp_path / "c", TOKENIZER, 50):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_no_corpus(tmp_path: Path) -> None:
    # SIGKILL runs no cleanup at all: only the atomic rename protects the target path.
    code = (
        "import os, signal, sys\n"
        "from slamming.data.corpus.writer import CorpusWriter\n"
        "w = CorpusWriter(sys.argv[1], {'k': 50}, 50)\n"
        "for i in range(100):\n"
        "    w.add([i % 50] * 100)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    src = Path(corpus_module.__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (tmp_path / "c").exists()
    # What remains is a hidden temporary sibling, which never passes for a corpus.
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".c.tmp-")
    with pytest.raises(CorpusError, match="has no meta.json"):
        UnitCorpus(leftover)


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    target = _write(tmp_path / "c", _units_and_durations(3))
    before = (target / "meta.json").read_text()
    with pytest.raises(CorpusError, match=r"c already exists; pass overwrite=True"):
        CorpusWriter(target, TOKENIZER, 50)
    assert (target / "meta.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]

    with CorpusWriter(target, TOKENIZER, 50, overwrite=True) as writer:
        writer.add([7, 7])
    replaced = UnitCorpus(target)
    assert len(replaced) == 1 and replaced.document(0).tolist() == [7, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp or old copy left


def test_a_path_that_is_not_a_corpus_is_never_replaced(tmp_path: Path) -> None:
    user_file = tmp_path / "notes.txt"
    user_file.write_text("mine")
    user_dir = tmp_path / "photos"
    user_dir.mkdir()
    for path in (user_file, user_dir):
        with pytest.raises(CorpusError, match="not a slamming corpus .*not replaced"):
            CorpusWriter(path, TOKENIZER, 50, overwrite=True)
    assert user_file.read_text() == "mine" and user_dir.is_dir()


def test_bad_documents_are_refused_with_their_index(tmp_path: Path) -> None:
    with CorpusWriter(tmp_path / "c", TOKENIZER, 50) as writer:
        writer.add([1, 2], durations=[1, 1])
        with pytest.raises(
            CorpusError, match=r"document 1 \(x.wav\) of .*: unit id 50 is out of range \[0, 50\)"
        ):
            writer.add([3, 50, 4], durations=[1, 1, 1], source="x.wav")
        with pytest.raises(CorpusError, match=r"document 1 of .*: unit id -2 is out of range"):
            writer.add(np.array([-2, 3]), durations=[1, 1])
        with pytest.raises(CorpusError, match="document 1 of .* is empty"):
            writer.add([], durations=[])
        with pytest.raises(CorpusError, match="units of document 1 .* must be a 1-D sequence of integers"):
            writer.add([1.5, 2.0], durations=[1, 1])
        with pytest.raises(CorpusError, match="2 durations for 3 units"):
            writer.add([1, 2, 3], durations=[1, 1])
        with pytest.raises(CorpusError, match=r"durations are run lengths in \[1, 2\*\*31\), got 0..4"):
            writer.add([1, 2], durations=[0, 4])
        with pytest.raises(CorpusError, match="earlier documents have them"):
            writer.add([1, 2])
        with pytest.raises(CorpusError, match="text must be a str or None, got int"):
            writer.add([1], durations=[1], text=3)  # type: ignore[arg-type]
        with pytest.raises(CorpusError, match="source is not JSON-serialisable"):
            writer.add([1], durations=[1], source={1, 2})
        with pytest.raises(CorpusError, match="words must be a list of .*, got str"):
            writer.add([1], durations=[1], words="hello")
        bad_words = {
            "0 <= start <= end": [("a", 0.0, 0.5), ("b", 0.9, 0.4)],
            "'a', -0.1": [("a", -0.1, 0.5)],
            "nan": [("a", 0.0, float("nan"))],
            r"\('a', 0.1\)": [("a", 0.1)],
            r"\(3, 0.0, 0.1\)": [(3, 0.0, 0.1)],
            "True": [("a", True, 2.0)],
        }
        for shown, words in bad_words.items():
            with pytest.raises(CorpusError, match=rf"document 1 of .*: word \d is .*{shown}"):
                writer.add([1], durations=[1], words=words)
        # Refused documents changed nothing: the next good one is document 1.
        assert writer.add([5], durations=[2]) == 1
    corpus = UnitCorpus(tmp_path / "c")
    assert len(corpus) == 2 and corpus.num_tokens == 3
    assert corpus.document(1).tolist() == [5]


def test_bad_writer_arguments(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="num_units must be an integer in"):
        CorpusWriter(tmp_path / "a", TOKENIZER, 70000)
    with pytest.raises(CorpusError, match="tokenizer k=50 but num_units=60"):
        CorpusWriter(tmp_path / "a", TOKENIZER, 60)
    with pytest.raises(CorpusError, match="tokenizer identity of .* is not JSON-serialisable"):
        CorpusWriter(tmp_path / "a", {"kind": object()}, 50)
    with pytest.raises(CorpusError, match="tokenizer must be the tokeniser's identity dict, not a list"):
        CorpusWriter(tmp_path / "a", [("k", 50)], 50)  # type: ignore[arg-type]
    with pytest.raises(CorpusError, match="shard_tokens must be >= 1, got 0"):
        CorpusWriter(tmp_path / "a", TOKENIZER, 50, shard_tokens=0)
    assert list(tmp_path.iterdir()) == []


def test_missing_or_malformed_corpus_gives_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"corpus .*nowhere does not exist; build one with"):
        UnitCorpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="has no meta.json, so it is not a finished corpus; build one"):
        UnitCorpus(tmp_path / "empty")
    target = _write(tmp_path / "c", _units_and_durations(3))
    meta = json.loads((target / "meta.json").read_text())
    (target / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CorpusError, match="format_version 99, but this slamming reads version 1"):
        UnitCorpus(target)
    (target / "meta.json").write_text("{not json")
    with pytest.raises(CorpusError, match="meta.json is not valid JSON"):
        UnitCorpus(target)
    with pytest.raises(CorpusError, match="meta.json is a file, not a corpus directory"):
        UnitCorpus(target / "meta.json")


def test_opening_is_lazy_and_verify_catches_corruption(tmp_path: Path) -> None:
    target = _write(tmp_path / "c", _units_and_durations(30, seed=2), shard_tokens=100)
    good = UnitCorpus(target)
    good.verify()
    # Truncate the last token shard: opening never reads tokens, so it still succeeds ...
    last = target / good.meta["shards"][-1]["tokens"]
    last.write_bytes(last.read_bytes()[:-2])
    corpus = UnitCorpus(target)
    assert len(corpus) == 30
    np.testing.assert_array_equal(corpus.document(0), good.document(0))  # first shard still readable
    # ... reading the damaged shard and verify() both name the file.
    with pytest.raises(CorpusError, match=rf"file {last.name} has \d+ bytes, expected \d+"):
        corpus.document(29)
    with pytest.raises(
        CorpusError, match=rf"file {last.name} fails its checksum \(expected [0-9a-f]{{64}}, got"
    ):
        corpus.verify()


def test_verify_catches_a_flipped_byte_and_a_missing_file(tmp_path: Path) -> None:
    target = _write(tmp_path / "c", _units_and_durations(4))
    original = (target / "durations-00000.bin").read_bytes()
    flipped = bytearray(original)
    flipped[0] ^= 1
    (target / "durations-00000.bin").write_bytes(bytes(flipped))
    with pytest.raises(CorpusError, match="durations-00000.bin fails its checksum.*rebuild it"):
        UnitCorpus(target).verify()
    (target / "durations-00000.bin").write_bytes(original)
    UnitCorpus(target).verify()
    (target / "text.jsonl").unlink()
    with pytest.raises(CorpusError, match="text.jsonl is missing"):
        UnitCorpus(target).verify()
    target = _write(tmp_path / "d", _units_and_durations(4))
    lines = (target / "words.jsonl").read_text().splitlines()
    (target / "words.jsonl").write_text("\n".join([lines[0].replace("0.25", "0.26"), *lines[1:]]) + "\n")
    with pytest.raises(CorpusError, match="words.jsonl fails its checksum"):
        UnitCorpus(target).verify()


def test_pickling_keeps_only_the_path(tmp_path: Path) -> None:
    docs = [(np.full(10_000, 7), np.ones(10_000, dtype=np.int64))]
    corpus = UnitCorpus(_write(tmp_path / "c", docs))
    assert corpus.document(0)[0] == 7  # maps opened before pickling
    blob = pickle.dumps(corpus)
    assert len(blob) < 1000  # the 20 kB of tokens are not copied
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.document(0), corpus.document(0))


def test_summarize(tmp_path: Path) -> None:
    docs = _units_and_durations(6)
    target = _write(tmp_path / "c", docs, shard_tokens=50)
    lines = summarize(target).splitlines()
    tokens = sum(len(u) for u, _ in docs)
    assert lines[0].startswith(f"corpus {target} (format 1, created ")
    assert lines[1] == "  documents  6"
    assert lines[2].startswith(f"  tokens     {tokens:,} (per document: mean {tokens / 6:.1f}, min ")
    assert lines[3] == f"  hours      {sum(int(d.sum()) for _, d in docs) / 25 / 3600:,.3f}"
    assert lines[4] == "  tokenizer  kind=mfcc k=50 frame_rate=25 dedup=True settings_hash=5eed"
    assert lines[5] == "  units      50"
    assert lines[6].startswith(f"  shards     {len(UnitCorpus(target).meta['shards'])}: tokens-00000.bin (")
    assert lines[7] == "  extras     durations, text, sources, words"
    size = sum(p.stat().st_size for p in target.iterdir())
    assert lines[8].startswith(f"  on disk    {size:,} bytes")
