"""Preference corpora: aligned triples written atomically, read back, bad triples and tampering refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slamming.data.preference.corpus import PreferenceCorpus, PreferenceCorpusWriter
from slamming.errors import CorpusError
from tests.conftest import TEST_IDENTITY, markov_documents, write_corpus

K = TEST_IDENTITY["k"]


def _write(path: Path, n: int = 3) -> Path:
    with PreferenceCorpusWriter(path, TEST_IDENTITY, K, info={"source": "test"}) as writer:
        for i in range(n):
            writer.add(
                [1, 2, i],
                [3] * (i + 1),
                [4, 5],
                durations=([1, 1, 2], [1] * (i + 1), [3, 1]),
                texts=(f"p{i}", f"c{i}", f"r{i}"),
                source=f"t{i}|en-us",
            )
    return path


def test_round_trip(tmp_path: Path) -> None:
    corpus = PreferenceCorpus(_write(tmp_path / "prefs"))
    assert len(corpus) == 3 and corpus.num_units == K and corpus.tokenizer == TEST_IDENTITY
    prompt, chosen, rejected = corpus.triple(2)
    assert prompt.tolist() == [1, 2, 2] and chosen.tolist() == [3, 3, 3] and rejected.tolist() == [4, 5]
    assert corpus.texts(1) == ("p1", "c1", "r1") and corpus.source(1) == "t1|en-us"
    assert corpus.lengths().tolist() == [[3, 1, 2], [3, 2, 2], [3, 3, 2]]
    assert corpus.info == {"source": "test"}
    corpus.verify()
    assert corpus.fingerprint == PreferenceCorpus(tmp_path / "prefs").fingerprint
    assert corpus.fingerprint != PreferenceCorpus(_write(tmp_path / "other", n=2)).fingerprint


@pytest.mark.parametrize(
    ("triple", "message"),
    [
        (([1], [], [2]), "triple 1 of .*: the chosen is empty"),
        (([], [1], [2]), "the prompt is empty"),
        (([1], [2], [K]), f"the rejected has unit id {K}, out of range"),
        (([-1], [2], [3]), "the prompt has unit id -1"),
    ],
)
def test_bad_triples_are_refused_and_nothing_is_written(tmp_path: Path, triple: tuple, message: str) -> None:
    with (
        pytest.raises(CorpusError, match=message),
        PreferenceCorpusWriter(tmp_path / "p", TEST_IDENTITY, K) as w,
    ):
        w.add([1, 2], [3], [4])
        w.add(*triple)
    assert list(tmp_path.iterdir()) == []  # aborted: no partial corpus, no hidden leftovers


def test_existing_path_and_empty_corpus_are_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    with pytest.raises(CorpusError, match="already exists"):
        PreferenceCorpusWriter(tmp_path / "mine", TEST_IDENTITY, K)
    with pytest.raises(CorpusError, match="no triples were added"):
        PreferenceCorpusWriter(tmp_path / "empty", TEST_IDENTITY, K).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_replaced_side_or_a_plain_corpus_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "prefs")
    with pytest.raises(CorpusError, match="not a preference corpus"):
        PreferenceCorpus(write_corpus(tmp_path / "plain", markov_documents(3, seed=0)))
    shutil.rmtree(path / "chosen")
    write_corpus(path / "chosen", [np.array([1, 2, 3])] * 3)
    with pytest.raises(CorpusError, match="the chosen side is not the corpus"):
        PreferenceCorpus(path)
    meta = json.loads((path / "preference.json").read_text())
    meta["format_version"] = 99
    (path / "preference.json").write_text(json.dumps(meta))
    with pytest.raises(CorpusError, match="rebuild it with this version"):
        PreferenceCorpus(path)
