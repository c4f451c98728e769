"""A checkpoint whose pickle would run code is refused in one line everywhere a user hands one over.

The hostile file is a real slamming checkpoint with one extra hyperparameter whose unpickling calls
``open(marker, "w")`` — what ``os.system`` would do in an attacker's file, made visible. ``slamming
export``, ``slamming test``, DPO's ``init_from`` and ``fit --ckpt_path`` (resume) each exit 2 with
one line naming the file and ``--trust-checkpoint``, and the marker never appears; with the opt-in
the file is unpickled (and the marker appears: that is what trusting a file means).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from slamming.cli import main
from slamming.models.checkpoint import TRUST_ENV
from tests.conftest import fit_config


class Plant:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, unit_corpora: dict) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    main(["fit", "--config", str(fit_config(root, unit_corpora, trainer={"max_steps": 2}))])
    good = root / "runs" / "t" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    marker = root / "PWNED"
    checkpoint["hyper_parameters"]["note"] = Plant(marker)
    evil = root / "evil.ckpt"
    torch.save(checkpoint, evil)
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"root": root, "good": good, "evil": evil, "marker": marker, "truncated": truncated}


def _one_pair(root: Path) -> Path:
    """A StoryCloze folder with one pair of short real wav files (the benchmark reads, nothing more)."""
    folder = root / "tSC"
    folder.mkdir()
    for side in ("correct", "incorrect"):
        sf.write(folder / f"story_{side}.wav", np.zeros(1600, dtype=np.float32), 16000)
    return folder


def _refused(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("slamming: error:")]
    assert len(lines) == 1
    return lines[0]


def test_export_test_dpo_and_resume_refuse_it_and_nothing_runs(
    hostile: dict[str, Path], tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    evil, marker = str(hostile["evil"]), hostile["marker"]
    commands = {
        "export": ["export", evil, str(tmp_path / "out")],
        "test": [
            "test",
            "--config",
            "configs/eval.yaml",
            "--trainer.accelerator",
            "cpu",
            "--data.init_args.benchmarks",
            json.dumps([{"kind": "storycloze", "path": str(_one_pair(tmp_path))}]),
            "--model.init_args.model",
            evil,
        ],
        "dpo": ["fit", "--config", "configs/tiny/dpo.yaml", "--model.init_args.init_from", evil],
        "resume": ["fit", "--config", str(fit_config(tmp_path, unit_corpora)), "--ckpt_path", evil],
    }
    for name, argv in commands.items():
        line = _refused(capsys, argv)
        assert evil in line and "io.open" in line and "--trust-checkpoint" in line, (name, line)
        assert not marker.exists(), name
    assert not (tmp_path / "out").exists()


def test_a_truncated_checkpoint_is_one_line(hostile: dict[str, Path], tmp_path: Path, capsys) -> None:
    line = _refused(capsys, ["export", str(hostile["truncated"]), str(tmp_path / "out")])
    assert "not a readable checkpoint" in line and "truncated" in line


def test_the_opt_in_unpickles_it(
    hostile: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRUST_ENV, "0")  # main() sets it to 1; monkeypatch removes it after the test
    main(["export", "--trust-checkpoint", str(hostile["evil"]), str(tmp_path / "out")])
    assert hostile["marker"].exists() and (tmp_path / "out" / "config.json").is_file()
