"""scripts/setup.sh: `--runtime` (make demo) installs requirements/lock.txt alone, no option (make
test, make setup) adds requirements/dev.txt; the venv's stamp says which set it holds, and a dev set
serves a runtime request. Checked with a stand-in Python that passes the version check and fails to
make a venv, so a run that would install shows it without installing anything."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _hash(*names: str) -> str:
    return hashlib.sha256(b"".join((REPO / n).read_bytes() for n in names)).hexdigest()[:16]


def _setup(tmp_path: Path, stamp: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\n[ "$1" = "-c" ] && exit 0\nexit 1\n')  # passes the version check only
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    if stamp is not None:
        (venv / ".slamming-installed").write_text(stamp + "\n")
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), *args],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": str(fake), "VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )


RUNTIME = "runtime " + _hash("pyproject.toml", "requirements/lock.txt")
DEV = "dev " + _hash("pyproject.toml", "requirements/lock.txt", "requirements/dev.txt")


@pytest.mark.parametrize(
    ("stamp", "args", "installs"),
    [
        (DEV, ["--runtime"], False),  # a dev set serves the demo
        (DEV, [], False),
        (RUNTIME, ["--runtime"], False),
        (RUNTIME, [], True),  # the tests need dev.txt on top
        (None, ["--runtime"], True),
        ("dev 0000000000000000", [], True),  # the pins changed since
    ],
)
def test_the_stamp_decides_whether_setup_installs(tmp_path: Path, stamp, args, installs) -> None:
    done = _setup(tmp_path, stamp, *args)
    if installs:
        assert done.returncode != 0 and "setup: creating" in done.stdout  # the stand-in cannot make one
    else:
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_an_unknown_option_is_one_line(tmp_path: Path) -> None:
    done = _setup(tmp_path, None, "--lean")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        "setup: unknown option --lean; use no option (everything, for tests) or --runtime (what slamming runs on)"
    )
