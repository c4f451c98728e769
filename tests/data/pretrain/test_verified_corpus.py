"""Corpus checksums verified once per node and only when the files changed (issue 12, item 8a).

Whether a ``setup`` hashed the files is shown from outside: a data file's bytes are changed with its
size kept and its mtime set back (``os.utime``), which only a hash can see. A setup that accepts that
file did not hash it; once the mtime moves, the next setup hashes and fails with the corpus error.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import slamming.data.corpus.verified as verified
from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.verified import RECORD_NAME, cache_record_path, verify_if_changed
from slamming.data.preference.corpus import SIDES, PreferenceCorpusWriter
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.errors import CorpusError
from tests.conftest import TEST_IDENTITY, markov_documents, write_corpus

TOKENS = "tokens-00000.bin"
SCRIPT = Path(__file__).with_name("verified_ddp_script.py")


def _rewrite_in_place(path: Path) -> os.stat_result:
    """Change the first unit of ``path``, keeping its size and mtime; the stat before the change."""
    before = path.stat()
    units = np.fromfile(path, dtype="<u2")
    units[0] = (int(units[0]) + 1) % TEST_IDENTITY["k"]
    with open(path, "r+b") as f:
        f.write(units.tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    return before


def _move_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def _setup_units(corpus: Path) -> None:
    UnitDataModule(train=str(corpus), context_length=16, batch_size=2, pin_memory=False).setup("fit")


def test_second_setup_of_an_unchanged_corpus_does_not_hash_it(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", markov_documents(40, seed=5))
    files = sorted(os.listdir(corpus))
    _setup_units(corpus)
    # The record: the state of meta.json and of every checksummed file, and nothing temporary left.
    assert sorted(os.listdir(corpus)) == sorted([*files, RECORD_NAME])
    record = json.loads((corpus / RECORD_NAME).read_text())
    names = ["meta.json", *UnitCorpus(corpus).meta["sha256"]]
    assert record["corpus"] == str(corpus.resolve())
    assert record["files"] == {
        name: [(st := (corpus / name).stat()).st_size, st.st_mtime_ns, st.st_ino] for name in names
    }

    before = _rewrite_in_place(corpus / TOKENS)
    _setup_units(corpus)  # size and mtime as verified: not hashed, so the changed unit goes unseen
    assert verify_if_changed(UnitCorpus(corpus)) is False

    _move_mtime(corpus / TOKENS)  # now the state differs: hashed, and the change is found
    with pytest.raises(CorpusError, match=f"file {TOKENS} fails its checksum"):
        _setup_units(corpus)
    # A failure is never recorded: the next setup hashes again and fails again.
    with pytest.raises(CorpusError, match=f"file {TOKENS} fails its checksum"):
        _setup_units(corpus)
    assert json.loads((corpus / RECORD_NAME).read_text()) == record
    assert sorted(os.listdir(corpus)) == sorted([*files, RECORD_NAME])

    # The original bytes back (a new mtime): verified, and the new state recorded.
    units = np.fromfile(corpus / TOKENS, dtype="<u2")
    units[0] = (int(units[0]) - 1) % TEST_IDENTITY["k"]
    units.tofile(corpus / TOKENS)
    assert verify_if_changed(UnitCorpus(corpus)) is True
    assert verify_if_changed(UnitCorpus(corpus)) is False
    assert json.loads((corpus / RECORD_NAME).read_text())["files"][TOKENS][1] != before.st_mtime_ns


def test_verify_checksums_false_neither_hashes_nor_records(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", markov_documents(20, seed=6))
    _rewrite_in_place(corpus / TOKENS)
    UnitDataModule(train=str(corpus), context_length=16, verify_checksums=False).setup("fit")
    assert not (corpus / RECORD_NAME).exists()
    with pytest.raises(CorpusError, match="fails its checksum"):
        _setup_units(corpus)


def test_preference_corpus_sides_are_verified_only_when_changed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "prefs"
    with PreferenceCorpusWriter(path, tokenizer=TEST_IDENTITY, num_units=TEST_IDENTITY["k"]) as writer:
        for _ in range(9):
            writer.add(*(rng.integers(0, TEST_IDENTITY["k"], size=int(rng.integers(2, 9))) for _ in range(3)))

    def setup() -> None:
        PreferenceDataModule(train=str(path), context_length=16, batch_size=3, pin_memory=False).setup("fit")

    setup()
    assert all((path / side / RECORD_NAME).is_file() for side in SIDES)
    _rewrite_in_place(path / "chosen" / TOKENS)
    setup()  # unchanged state: not hashed
    _move_mtime(path / "chosen" / TOKENS)
    with pytest.raises(CorpusError, match=f"chosen: file {TOKENS} fails its checksum"):
        setup()


def test_a_read_only_corpus_folder_records_in_the_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus", markov_documents(20, seed=7))
    files = sorted(os.listdir(corpus))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if os.geteuid() == 0:
        # root writes into a read-only folder: the refusal cannot happen for real, so it is injected.
        write = verified.write_text_atomic

        def refuse_in_corpus(path: Any, text: str) -> None:
            if Path(path).parent == corpus:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            write(path, text)

        monkeypatch.setattr(verified, "write_text_atomic", refuse_in_corpus)
    else:
        corpus.chmod(0o555)
    try:
        assert verify_if_changed(UnitCorpus(corpus)) is True
        assert verify_if_changed(UnitCorpus(corpus)) is False
    finally:
        corpus.chmod(0o755)
    assert sorted(os.listdir(corpus)) == files  # nothing written, nothing temporary left
    record = cache_record_path(corpus)
    assert record.parent == tmp_path / "cache" / "slamming" / "verified"
    assert json.loads(record.read_text())["corpus"] == str(corpus.resolve())
    assert os.listdir(record.parent) == [record.name]
    # Another corpus at another path does not take that record for its own.
    other = write_corpus(tmp_path / "other", markov_documents(20, seed=7))
    assert cache_record_path(other) != record


def test_a_copy_keeping_sizes_and_mtimes_is_verified_again(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", markov_documents(20, seed=8))
    assert verify_if_changed(UnitCorpus(corpus)) is True
    copy = Path(shutil.copytree(corpus, tmp_path / "copy", copy_function=shutil.copy2))  # like cp -a
    assert (copy / RECORD_NAME).is_file()
    _rewrite_in_place(copy / TOKENS)  # a copy error that kept the size
    with pytest.raises(CorpusError, match="fails its checksum"):
        verify_if_changed(UnitCorpus(copy))  # new inodes: not the verified files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_under_ddp_local_rank_0_hashes_and_every_rank_raises_a_failure(tmp_path: Path) -> None:
    good = write_corpus(tmp_path / "good", markov_documents(20, seed=9))
    bad = write_corpus(tmp_path / "bad", markov_documents(20, seed=10))
    verify_if_changed(UnitCorpus(bad))
    _rewrite_in_place(bad / TOKENS)
    _move_mtime(bad / TOKENS)
    g, b = str(good), str(bad)
    phases = [
        [[g, 0], [g, 1]],  # one node of two ranks: local rank 0 hashes, rank 1 waits
        [[g, 0], [g, 1]],  # unchanged since: nobody hashes
        [[b, 0], [b, 1]],  # a corrupt corpus: both ranks raise the same error
        [[g, 0], [b, 0]],  # two nodes of one rank: node 1's corrupt copy fails node 0 too
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[3] / "src"), env.get("PYTHONPATH", "")]
    )
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                str(rank),
                str(port),
                str(tmp_path / f"rank{rank}.json"),
                json.dumps(phases),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for proc in procs:
        # A rank left waiting in a collective would hang: the timeout turns that into a failure.
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert rank0[:2] == [{"hashed": 1}, {"hashed": 0}]
    assert rank1[:2] == [{"hashed": 0}, {"hashed": 0}]
    message = f"corpus {bad}: file {TOKENS} fails its checksum"
    for phase in (2, 3):
        assert rank0[phase]["error"] == rank1[phase]["error"] == "CorpusError"
        assert rank0[phase]["message"] == rank1[phase]["message"]
        assert rank0[phase]["message"].startswith(message)
