"""What the user-mistake tests share: running ``slamming`` to its one-line refusal, and a real run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slamming.cli import main
from tests.conftest import fit_config

#: The names writers give their temporaries (slamming.atomic, the corpus writers, atomic_build).
TEMPORARY_MARKS = (".tmp-", ".old-", ".partial")


def refused(capsys: pytest.CaptureFixture, argv: list[str], alone: bool = False) -> str:
    """Run ``slamming argv``; assert exit status 2, one ``slamming: error:`` line and no traceback.

    Args:
        capsys: pytest's capture of the command's output.
        argv: The command line.
        alone: Also assert the error line is all the command printed (a tool; ``fit`` logs first).

    Returns:
        The error line.
    """
    capsys.readouterr()  # what earlier steps printed is not this command's
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("slamming: error:")]
    assert len(lines) == 1 and lines[0] == err.splitlines()[-1], err
    if alone:
        assert err.splitlines() == lines and captured.out == "", captured
    return lines[0]


def temporaries(root: Path) -> list[str]:
    """Every file or folder under ``root`` (hidden ones included) named like a writer's temporary."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if any(mark in name for mark in TEMPORARY_MARKS):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def tiny_run(root: Path, unit_corpora: dict[str, Path], steps: int = 2) -> Path:
    """A real ``slamming fit`` of the tiny model on the test corpora; returns its run folder.

    The folder holds ``checkpoints/last.ckpt`` and the end-of-fit export ``hf_model`` (which has no
    ``tokenizer/``: the test corpora were made by no saved tokeniser).
    """
    main(["fit", "--config", str(fit_config(root, unit_corpora, trainer={"max_steps": steps}))])
    return root / "runs" / "t" / "version_0"
