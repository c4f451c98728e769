"""``meta.json`` integrity: its checksum, the recorded largest unit id and safe file names (issue 12).

A wrong ``meta.json`` used to surface as an embedding ``IndexError`` (or a CUDA assert) in the middle
of a fit, and its file names were joined to the corpus folder as given. Each bad input here gives
exit status 2 and one line naming the corpus's ``meta.json``, and leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import slamming.cli.lightning  # noqa: F401  (imported at collection: see tests/cli/conftest.py)
from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.meta import CHECKSUMMED, META_CHECKSUM, meta_checksum
from slamming.errors import CorpusError
from tests.cli.user_mistake_helpers import refused
from tests.conftest import TEST_IDENTITY, fit_config, markov_documents, write_corpus

K = TEST_IDENTITY["k"]
DOCS = [np.array([3, 1, 4]), np.array([1, 5, 9, 2, 6]), np.array([5, 3])]


def _tree(root: Path) -> list[str]:
    """Every path under ``root`` (hidden ones too), to show that nothing was left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _edit(corpus: Path, change: Callable[[dict[str, Any]], None], checksum: str = "recompute") -> None:
    """Apply ``change`` to ``meta.json``; then recompute its checksum, keep the stale one or drop it.

    ``recompute`` makes a meta.json that is consistent with its checksum (what a careless tool or a
    hostile file would hold), ``keep`` one edited by hand, ``legacy`` one written before the checksum
    and ``max_unit_id`` existed.
    """
    path = corpus / "meta.json"
    meta = json.loads(path.read_text())
    change(meta)
    if checksum == "recompute":
        meta[META_CHECKSUM] = meta_checksum(meta)
    elif checksum == "legacy":
        meta.pop(META_CHECKSUM)
        meta.pop("max_unit_id", None)
    path.write_text(json.dumps(meta, indent=2) + "\n")


def test_the_writer_records_the_largest_unit_id_and_a_checksum_of_what_readers_trust(tmp_path: Path) -> None:
    target = write_corpus(tmp_path / "c", DOCS)
    meta = json.loads((target / "meta.json").read_text())
    assert meta["max_unit_id"] == 9 and meta["num_units"] == K
    assert meta[META_CHECKSUM] == meta_checksum(meta)
    assert set(CHECKSUMMED) <= set(meta)
    assert UnitCorpus(target).max_unit_id == 9
    # Every covered field changes the checksum, and so does deleting one.
    for key in CHECKSUMMED:
        assert meta_checksum({**meta, key: "edited"}) != meta[META_CHECKSUM], key
        assert meta_checksum({k: v for k, v in meta.items() if k != key}) != meta[META_CHECKSUM], key


def _set_num_units(n: int) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        meta["num_units"] = n
        meta["tokenizer"]["k"] = n

    return change


def _set_tokens_name(name: str) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        meta["shards"][0]["tokens"] = name

    return change


def _add_checksum_entry(name: str) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        meta["sha256"][name] = "0" * 64

    return change


def _more_tokens(meta: dict[str, Any]) -> None:
    meta["num_tokens"] += 1


# (what was done to meta.json, how its checksum was left, the words the error line holds)
BAD_META = {
    "num_units edited by hand": (_set_num_units(5), "keep", "meta.json fails its checksum"),
    "num_units below the largest id": (
        _set_num_units(5),
        "recompute",
        "meta.json records max unit id 9 but num_units=5: unit ids must lie in [0, 5)",
    ),
    "num_units 0": (_set_num_units(0), "recompute", "meta.json records num_units=0; K must be an integer"),
    "num_units negative": (_set_num_units(-3), "legacy", "meta.json records num_units=-3"),
    "num_units and tokeniser k disagree": (
        lambda meta: meta.update(num_units=12),
        "legacy",
        "meta.json records num_units=12 but its tokeniser has k=20",
    ),
    "absolute shard name": (_set_tokens_name("/etc/passwd"), "recompute", "names the file '/etc/passwd'"),
    "'..' shard name": (_set_tokens_name("../outside.bin"), "recompute", "names the file '../outside.bin'"),
    "'..' shard name, legacy": (
        _set_tokens_name("../outside.bin"),
        "legacy",
        "names the file '../outside.bin'",
    ),
    "'..' in the checksum table": (_add_checksum_entry("../outside.bin"), "recompute", "sha256 table names"),
    "counts that disagree": (
        _more_tokens,
        "recompute",
        "shards hold 3 documents and 10 tokens, but it records",
    ),
}


@pytest.mark.parametrize("case", list(BAD_META))
@pytest.mark.parametrize("action", ["summary", "verify"])
def test_a_corrupt_or_hostile_meta_json_is_one_line_and_exit_2(
    case: str, action: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    change, checksum, words = BAD_META[case]
    target = write_corpus(tmp_path / "c", DOCS)
    # What a '..' name would reach: it must never be read (nor written).
    (tmp_path / "outside.bin").write_bytes(np.zeros(10, dtype="<u2").tobytes())
    _edit(target, change, checksum)
    before = _tree(tmp_path)
    line = refused(capsys, ["corpus", action, str(target)], alone=True)
    assert f"corpus {target}: meta.json" in line and words in line, line
    if "name" in case or "'..'" in case:
        assert "absolute paths, '..' and subfolders are refused" in line
    assert _tree(tmp_path) == before  # nothing temporary left, nothing written
    with pytest.raises(CorpusError, match="meta.json"):
        UnitCorpus(target)


def test_a_corpus_written_before_the_checksum_still_opens_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    docs = markov_documents(12, seed=3)
    target = write_corpus(tmp_path / "c", docs)
    _edit(target, lambda meta: None, checksum="legacy")
    meta = json.loads((target / "meta.json").read_text())
    assert META_CHECKSUM not in meta and "max_unit_id" not in meta
    corpus = UnitCorpus(target)  # accepted as legacy: nothing to check the fields against
    assert corpus.max_unit_id is None and len(corpus) == 12
    assert [corpus.document(i).tolist() for i in range(12)] == [d.tolist() for d in docs]
    corpus.verify()  # reads every token: the ids lie below num_units
    main(["corpus", "verify", str(target)])
    assert capsys.readouterr().out == f"{target}: all checksums match\n"


def test_verify_checks_the_unit_ids_of_a_legacy_corpus_against_num_units(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = write_corpus(tmp_path / "c", DOCS)
    # A legacy meta.json that claims K=8 (tokeniser too): consistent, so opening cannot tell ...
    _edit(target, _set_num_units(8), checksum="legacy")
    assert UnitCorpus(target).num_units == 8
    before = _tree(tmp_path)
    # ... but verify reads unit 9 in the tokens.
    line = refused(capsys, ["corpus", "verify", str(target)], alone=True)
    assert f"corpus {target}: file tokens-00000.bin holds unit id 9, outside [0, 8) of num_units" in line
    assert _tree(tmp_path) == before


def test_verify_compares_the_tokens_with_the_recorded_largest_id(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = write_corpus(tmp_path / "c", DOCS)
    _edit(target, lambda meta: meta.update(max_unit_id=7))
    assert UnitCorpus(target).max_unit_id == 7
    line = refused(capsys, ["corpus", "verify", str(target)], alone=True)
    assert "the token files' largest unit id is 9, but meta.json records 7" in line


@pytest.mark.parametrize("checksum", ["recompute", "legacy"])
def test_fit_on_a_corpus_with_too_few_units_stops_before_training_in_one_line(
    checksum: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The model's K comes from the corpus: a K below the corpus's ids used to crash in the embedding."""
    train = write_corpus(tmp_path / "train", markov_documents(40, seed=0))
    val = write_corpus(tmp_path / "val", markov_documents(8, seed=1))
    for corpus in (train, val):
        _edit(corpus, _set_num_units(10), checksum=checksum)
    config = fit_config(tmp_path, {"train": train, "val": val})
    line = refused(capsys, ["fit", "--config", str(config)])
    if checksum == "recompute":  # refused on open, when the data module is made
        assert f"corpus {train}: meta.json records max unit id 19 but num_units=10" in line
    else:  # a legacy corpus: refused by the checksum pass before the first step
        assert f"corpus {train}: file tokens-00000.bin holds unit id 19, outside [0, 10)" in line
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before any step
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or ".partial" in p.name]
