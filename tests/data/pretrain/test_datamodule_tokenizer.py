"""``UnitDataModule(tokenizer_dir=...)``: the tokeniser folder that made the corpora, checked and exposed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.errors import SlammingError
from tests.conftest import TEST_IDENTITY


def _folder(path: Path, identity: dict) -> Path:
    path.mkdir(parents=True)
    (path / "tokenizer.json").write_text(json.dumps({"kind": "mfcc", "identity": identity}))
    return path


def test_a_matching_tokenizer_folder_is_exposed(tmp_path: Path, unit_corpora: dict) -> None:
    folder = _folder(tmp_path / "tok", TEST_IDENTITY)
    dm = UnitDataModule(
        train=str(unit_corpora["train"]), context_length=16, batch_size=2, tokenizer_dir=str(folder)
    )
    dm.setup("fit")
    assert dm.tokenizer_dir == folder
    assert UnitDataModule(train=str(unit_corpora["train"])).tokenizer_dir is None


def test_a_tokenizer_folder_of_other_units_is_refused(tmp_path: Path, unit_corpora: dict) -> None:
    folder = _folder(tmp_path / "other", {**TEST_IDENTITY, "k": TEST_IDENTITY["k"] + 1})
    dm = UnitDataModule(
        train=str(unit_corpora["train"]), context_length=16, batch_size=2, tokenizer_dir=str(folder)
    )
    with pytest.raises(SlammingError, match="data.tokenizer_dir"):
        dm.setup("fit")
    missing = UnitDataModule(train=str(unit_corpora["train"]), tokenizer_dir=str(tmp_path / "nope"))
    with pytest.raises(SlammingError, match="no tokeniser at"):
        missing.setup("fit")
