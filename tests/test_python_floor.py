"""The Python floor that README, pyproject, ruff and setup state is the one the code needs (3.11)."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_pyproject_and_ruff_state_the_same_floor() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    floors = re.findall(r"Python ≥ (3\.\d+)", (REPO / "README.md").read_text())
    assert floors == ["3.11"]


def test_the_code_does_use_a_3_11_feature() -> None:
    # datetime.UTC arrived in 3.11: a floor of 3.10 would be a promise the code breaks.
    users = [
        path
        for path in (REPO / "src").rglob("*.py")
        if any(
            isinstance(node, ast.ImportFrom)
            and node.module == "datetime"
            and any(a.name == "UTC" for a in node.names)
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert users, "no 3.11-only import left: the floor could be lowered (and tested) instead"


def test_setup_refuses_an_older_python_with_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "python3.10"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Python 3.10.12"; exit 0; fi\nexit 1\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": str(fake), "VENV": str(tmp_path / "venv")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"setup: slamming needs Python >= 3.11; {fake} is Python 3.10.12. "
        "Set PYTHON=python3.11 (or newer) and rerun."
    )
    assert not (tmp_path / "venv").exists()
