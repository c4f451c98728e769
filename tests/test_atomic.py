"""Atomic writes: a file or a built folder appears whole at its name, or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slamming.atomic import atomic_build, atomic_path, temporary_sibling, write_text_atomic
from slamming.errors import SlammingError


def test_atomic_path_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.bin.tmp-")
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not replaced before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_path_on_error_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_text_atomic_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "m.json"
    write_text_atomic(target, "{}\n")
    write_text_atomic(target, "é\n")
    assert target.read_bytes() == "é\n".encode()
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]


def test_temporary_siblings_are_hidden_and_unique(tmp_path: Path) -> None:
    a, b = temporary_sibling(tmp_path / "c"), temporary_sibling(tmp_path / "c")
    assert a != b and a.parent == b.parent == tmp_path and a.name.startswith(".c.tmp-")


def test_atomic_build_writes_done_last_and_renames(tmp_path: Path) -> None:
    out = tmp_path / "build"
    stale = tmp_path / "build.partial"
    stale.mkdir()
    (stale / "junk").write_text("x")
    with atomic_build(out) as (partial, done):
        assert partial == stale and not (partial / "junk").exists()
        (partial / "data.txt").write_text("d")
        done["n"] = 1
    assert not stale.exists()
    assert (out / "done.json").read_text(encoding="utf-8") == '{\n  "n": 1\n}\n'
    assert (out / "data.txt").read_text() == "d"


def test_atomic_build_without_newline_and_replacing_an_unfinished_folder(tmp_path: Path) -> None:
    out = tmp_path / "build"
    out.mkdir()
    (out / "train").mkdir()  # an unfinished build: no done.json
    with atomic_build(out, replace_unfinished=True, done_newline=False) as (partial, done):
        (partial / "val").mkdir()
        done.update(a=[1])
    assert sorted(p.name for p in out.iterdir()) == ["done.json", "val"]
    assert (out / "done.json").read_text(encoding="utf-8") == '{\n  "a": [\n    1\n  ]\n}'


def test_atomic_build_on_error_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "build"
    with pytest.raises(ValueError, match="bad"), atomic_build(out) as (partial, done):
        (partial / "half").write_text("x")
        done["n"] = 1
        raise ValueError("bad")
    assert list(tmp_path.iterdir()) == []
    with atomic_build(out) as (_, done):
        done["n"] = 2
    assert json.loads((out / "done.json").read_text()) == {"n": 2}


def _hold_build_lock(target: str, held: Any, release: Any) -> None:
    from slamming.locks import build_lock

    with build_lock(target):
        held.set()
        release.wait(30)


def test_build_lock_makes_a_second_process_wait_and_times_out_with_one_line(tmp_path: Path) -> None:
    import multiprocessing as mp

    from slamming.locks import build_lock, lock_path

    target = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_build_lock, args=(str(target), held, release))
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(SlammingError, match=r"cache is being built by another process .*wait for it"):
            with build_lock(target, timeout=0.3):
                pass
        release.set()
        holder.join(30)
        with build_lock(target, timeout=10) as path:
            assert path == lock_path(target) == tmp_path / ".cache.lock"
            with build_lock(target, timeout=0.1):  # re-entrant within the process
                pass
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0


def test_build_once_builds_a_missing_cache_once_and_then_reuses_it(tmp_path: Path) -> None:
    from slamming.locks import build_once, lock_path

    target, built = tmp_path / "cache.txt", []

    def find() -> str | None:
        return target.read_text() if target.exists() else None

    def build() -> str:
        built.append(lock_path(target).exists())  # the build runs under the lock
        target.write_text("built")
        return "made"

    assert build_once(target, find, build) == "made" and built == [True]
    assert build_once(target, find, build) == "built" and built == [True]  # found: not built again
    assert not lock_path(target).exists()


def test_read_done_returns_the_summary_none_or_one_line(tmp_path: Path) -> None:
    from slamming.atomic import read_done

    assert read_done(tmp_path / "absent") is None
    with atomic_build(tmp_path / "built") as (_partial, done):
        done["key"] = "abc"
    assert read_done(tmp_path / "built") == {"key": "abc"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "done.json").write_text("[1, 2]")
    with pytest.raises(SlammingError, match=r"done.json is not a JSON object; remove .*bad to rebuild"):
        read_done(tmp_path / "bad")
    (tmp_path / "bad" / "done.json").write_text("{")
    with pytest.raises(SlammingError, match=r"done.json is not valid JSON .*; remove .*bad to rebuild"):
        read_done(tmp_path / "bad")
