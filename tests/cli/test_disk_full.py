"""A full disk is one line naming the file, exit status 2, and no temporary file or folder left.

Where the machine allows it (unprivileged user namespaces), ``slamming export`` runs on a real
40 KiB tmpfs that fills while the weights are written. Everywhere, the disk "fills" inside real
commands (``corpus import-tokens``, ``export``, ``fit``'s end-of-fit export) at the last Python
write call, :meth:`pathlib.Path.write_text`: the file is created and half written, then the write
raises ``OSError(ENOSPC)`` as the kernel's would (without a file name, as ``write`` gives none).
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors import SafetensorError

from slamming.cli import main
from slamming.cli.disk import disk_full_message
from slamming.models.checkpoint import read_checkpoint
from tests.cli.user_mistake_helpers import refused, temporaries, tiny_run
from tests.conftest import fit_config

FIX = "free space on that disk or choose another output folder"


def fill_disk_at(
    monkeypatch: pytest.MonkeyPatch, full: Callable[[Path], bool], code: int = errno.ENOSPC
) -> None:
    """Make ``Path.write_text`` of the files ``full`` picks write half their text, then fail with ``code``."""
    real = pathlib.Path.write_text

    def write_text(self: Path, data: str, encoding: str | None = None, errors: str | None = None,
                   newline: str | None = None) -> int:  # fmt: skip
        if not full(self):
            return real(self, data, encoding, errors, newline)
        with open(self, "w", encoding=encoding, errors=errors, newline=newline) as f:
            f.write(data[: len(data) // 2])
            f.flush()
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, unit_corpora: dict) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run"), unit_corpora)


def test_a_corpus_import_on_a_full_disk(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens.jsonl"
    main(["corpus", "export-tokens", str(unit_corpora["val"]), str(tokens)])
    dst = tmp_path / "units"
    fill_disk_at(monkeypatch, lambda path: path.name == "meta.json")
    line = refused(capsys, ["corpus", "import-tokens", str(tokens), str(dst), "--num-units", "20"])
    assert line == f"slamming: error: no space left on device writing {dst / 'meta.json'}: {FIX}"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["tokens.jsonl"]
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize(
    ("code", "what"),
    [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")],
    ids=["ENOSPC", "EDQUOT"],
)
def test_an_export_on_a_full_disk_keeps_the_earlier_one(
    tmp_path: Path,
    run: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    what: str,
) -> None:
    out = tmp_path / "model"
    main(["export", str(run / "checkpoints" / "last.ckpt"), str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    fill_disk_at(monkeypatch, lambda path: "generation_config.json" in path.name, code)
    line = refused(capsys, ["export", str(run / "checkpoints" / "last.ckpt"), str(out), "--overwrite"])
    assert line == f"slamming: error: {what} writing {out / 'generation_config.json'}: {FIX}"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert temporaries(tmp_path) == []


def test_fit_on_a_full_disk_at_its_export(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk_at(monkeypatch, lambda path: path.name == "README.md" or "README.md.tmp-" in path.name)
    config = fit_config(tmp_path, unit_corpora, trainer={"max_steps": 2})
    line = refused(capsys, ["fit", "--config", str(config)])
    version = tmp_path / "runs" / "t" / "version_0"
    assert (
        line
        == f"slamming: error: no space left on device writing {version / 'hf_model' / 'README.md'}: {FIX}"
    )
    assert not (version / "hf_model").exists()
    assert temporaries(tmp_path) == []
    assert read_checkpoint(version / "checkpoints" / "last.ckpt")["global_step"] == 2


def _user_namespaces() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _user_namespaces(), reason="no unprivileged user namespaces to mount a tmpfs in")
def test_an_export_onto_a_really_full_tmpfs(tmp_path: Path, run: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    # Inside a user namespace: mount a 40 KiB tmpfs, export a ~90 KB model onto it, list what is left.
    script = (
        'mount -t tmpfs -o size=40k tmpfs "$1" || exit 99; '
        '"$2" -c "from slamming.cli import main; main()" export "$3" "$1/out"; '
        'echo "exit=$?"; ls -A "$1"'
    )
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            script,
            "sh",
            str(mount),
            sys.executable,
            str(run / "checkpoints" / "last.ckpt"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("slamming: error:")]
    assert errors == [
        f"slamming: error: no space left on device writing {mount / 'out' / 'model.safetensors'}: {FIX}"
    ]
    left = done.stdout.split("exit=")[1].split()
    assert left[0] == "2"
    assert [name for name in left[1:] if not name.endswith(".lock")] == []


def _save_file(filename: str) -> None:
    """Raise as safetensors' ``save_file`` does when the disk fills (its Rust side names no file)."""
    raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(errno.ENOSPC)} (os error 28)")


def test_the_message_recognises_the_shapes_of_a_full_disk(tmp_path: Path) -> None:
    try:
        _save_file(str(tmp_path / ".m.tmp-1-2-0a1b2c3d" / "model.safetensors"))
    except SafetensorError as err:
        assert (
            disk_full_message(err)
            == f"no space left on device writing {tmp_path / 'm' / 'model.safetensors'}: {FIX}"
        )
    try:
        try:
            open(tmp_path / "missing" / "x.bin", "wb")  # noqa: SIM115 - fails
        except OSError as err:
            raise RuntimeError("could not save") from err
    except RuntimeError as wrapped:
        assert disk_full_message(wrapped) is None  # ENOENT: not a full disk, the traceback stays
    wrapped = RuntimeError("could not save")
    wrapped.__cause__ = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(tmp_path / "x.bin"))
    assert disk_full_message(wrapped) == f"disk quota exceeded writing {tmp_path / 'x.bin'}: {FIX}"
