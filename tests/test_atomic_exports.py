"""Exports appear whole or not at all: a hidden temporary folder, renamed into place when complete."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from slamming.atomic import remove_stale_temporaries, temporary_sibling
from slamming.errors import SlammingError
from slamming.models import unit_lm
from slamming.models.card import CARD_MARK
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE

K = TEST_IDENTITY["k"]


def tiny_model(seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    return UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)


def exited_pid() -> int:
    """The id of a process that has exited (and been reaped), as a killed exporter's would be."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_half_written_export_is_never_at_the_name_a_glob_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = tmp_path / "version_0" / "hf_model"
    export_hf(tiny_model(0), hf, TEST_IDENTITY, training={"steps": 1})
    old = files(hf)
    seen: list[tuple[list[Path], list[str], dict[str, bytes]]] = []
    real_card = unit_lm.write_model_card

    def look_then_write(folder: Path, shown_as: Path | None = None) -> Path | None:
        # The weights are written by now: what would `slamming test runs/x/version_*/hf_model` find?
        seen.append((sorted(tmp_path.glob("version_*/hf_model")), sorted(os.listdir(hf.parent)), files(hf)))
        return real_card(folder, shown_as)

    monkeypatch.setattr(unit_lm, "write_model_card", look_then_write)
    export_hf(tiny_model(1), hf, TEST_IDENTITY, training={"steps": 2})
    [(matches, beside, during)] = seen
    assert matches == [hf] and during == old  # only the earlier, whole export is at the name
    assert len(beside) == 3 and "hf_model" in beside and ".hf_model.lock" in beside
    (tmp,) = (name for name in beside if name.startswith(".hf_model.tmp-"))
    assert tmp.startswith(f".hf_model.tmp-{os.getpid()}-")  # hidden, and named by its writer's pid
    # Done: the new export alone, with its card naming the final folder; nothing temporary beside it.
    assert sorted(os.listdir(hf.parent)) == ["hf_model"]
    assert (
        "\n- Steps: 2\n" in (hf / "README.md").read_text() and ".tmp-" not in (hf / "README.md").read_text()
    )
    loaded = AutoModelForCausalLM.from_pretrained(hf)
    assert torch.equal(loaded.model.embed_tokens.weight, tiny_model(1).model.embed_tokens.weight)


def test_a_failed_export_leaves_the_earlier_one_whole_and_nothing_temporary(tmp_path: Path) -> None:
    hf = tmp_path / "hf_model"
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    export_hf(tiny_model(0), hf, TEST_IDENTITY, tokenizer_dir=tokenizer)
    old = files(hf)
    assert "tokenizer/tokenizer.json" in old and "model.safetensors" in old
    # A real fault part way: the weights are written, then copying the tokeniser meets a broken link.
    (tokenizer / "kmeans.safetensors").symlink_to(tmp_path / "gone.safetensors")
    with pytest.raises(OSError, match=r"tok/kmeans\.safetensors.*No such file or directory"):
        export_hf(tiny_model(1), hf, TEST_IDENTITY, tokenizer_dir=tokenizer)
    assert files(hf) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_model", "tok"]


def test_leftovers_of_a_killed_export_are_cleared_and_a_moved_aside_export_restored(tmp_path: Path) -> None:
    hf = tmp_path / "hf_model"
    dead = exited_pid()
    # Killed between its two renames: the earlier export (with the user's own card) was moved aside
    # and the new one, half written, never took the name.
    export_hf(tiny_model(0), tmp_path / "earlier", TEST_IDENTITY)
    (tmp_path / "earlier" / "README.md").write_text("# my notes on this model\n")
    moved_aside = tmp_path / f".hf_model.old-{dead}-1-0badf00d"
    (tmp_path / "earlier").rename(moved_aside)
    half = tmp_path / f".hf_model.tmp-{dead}-1-deadbeef"
    half.mkdir()
    (half / "config.json").write_text("{")
    # A temporary of a running process (this one) may still be written: it is kept.
    running = temporary_sibling(hf)
    running.mkdir()

    assert remove_stale_temporaries(hf) == [half]
    assert hf.is_dir() and (hf / "README.md").read_text() == "# my notes on this model\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "hf_model"]
    running.rmdir()

    # The next export replaces it and keeps the user's card; the same cleaning runs inside it.
    half.mkdir()
    export_hf(tiny_model(1), hf, TEST_IDENTITY)
    assert (hf / "README.md").read_text() == "# my notes on this model\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_model"]
    loaded = AutoModelForCausalLM.from_pretrained(hf)
    assert torch.equal(loaded.model.embed_tokens.weight, tiny_model(1).model.embed_tokens.weight)


def test_an_export_never_replaces_what_is_not_a_model_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SlammingError) as caught:
        export_hf(tiny_model(0), mine, TEST_IDENTITY)
    assert str(caught.value) == (
        f"{mine} exists but is not a model folder (no config.json); it is not replaced: remove it yourself "
        "or choose another folder"
    )
    assert files(mine) == {"notes.txt": b"keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # A folder holding only the user's card is exported into, the card kept; ours is rewritten.
    card_only = tmp_path / "card"
    card_only.mkdir()
    (card_only / "README.md").write_text("# mine\n")
    with caplog.at_level(logging.WARNING):
        export_hf(tiny_model(0), card_only, TEST_IDENTITY)
    assert (card_only / "README.md").read_text() == "# mine\n"
    assert f"{card_only / 'README.md'} was not written by slamming: kept as it is" in caplog.text
    (card_only / "README.md").unlink()
    export_hf(tiny_model(0), card_only, TEST_IDENTITY)
    assert CARD_MARK in (card_only / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card", "mine"]
