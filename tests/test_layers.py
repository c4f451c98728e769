"""The floor plan holds: imports run one way (import-linter), and the house rules of check_layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
sys.path.insert(0, str(REPO / "scripts"))

import check_layout  # noqa: E402


def _lint_imports(src: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the package under ``src`` with the contract of ``config``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache"],
        cwd=src.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_package(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "slamming", src / "slamming", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_the_floors_hold_on_this_tree() -> None:
    done = _lint_imports(REPO / "src", REPO / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path: Path) -> None:
    src = _copy_package(tmp_path)
    audio = src / "slamming" / "speech" / "audio.py"
    # The speech floor reaching up to the tasks floor: what the contract exists to stop.
    audio.write_text(audio.read_text() + "\nfrom slamming.tasks import losses  # noqa: E402,F401\n")
    done = _lint_imports(src, REPO / "pyproject.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 kept, 1 broken" in done.stdout
    assert "slamming.speech.audio -> slamming.tasks.losses" in done.stdout


def test_a_module_outside_every_floor_breaks_the_contract(tmp_path: Path) -> None:
    src = _copy_package(tmp_path)
    (src / "slamming" / "utils.py").write_text('"""A module no floor owns."""\n')
    done = _lint_imports(src, REPO / "pyproject.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "slamming.utils" in done.stdout


def test_house_rules_hold_on_this_tree() -> None:
    assert check_layout.check(REPO / "src") == []


def test_house_rules_catch_private_imports_long_modules_and_loose_data_files(tmp_path: Path) -> None:
    src = _copy_package(tmp_path)
    package = src / "slamming"
    (package / "eval" / "likelihood.py").write_text(
        (package / "eval" / "likelihood.py").read_text() + "\nfrom slamming.vocab import _hidden  # noqa\n"
    )
    (package / "data" / "loose.py").write_text('"""Not in a subpackage."""\n')
    (package / "models" / "long.py").write_text("x = 1\n" * (check_layout.MAX_LINES + 1))
    problems = check_layout.check(src)
    assert len(problems) == 3, problems
    assert (
        "eval/likelihood.py" in problems[0] and "imports private _hidden from slamming.vocab" in problems[0]
    )
    assert problems[1].endswith(
        f"long.py: {check_layout.MAX_LINES + 1} lines (at most 450); split it by concept"
    )
    assert "data/loose.py: data/ holds subpackages only" in problems[2]
