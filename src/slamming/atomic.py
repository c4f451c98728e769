"""Atomic writes: a file or a data folder appears whole at its name, or not at all.

- :func:`atomic_path`: yields a hidden temporary path beside a file; the caller (or a library's
  ``save``) writes it, and on a clean exit it is renamed over the file with :func:`os.replace`. On an
  error the temporary file is removed and the file is left as it was.
- :func:`write_text_atomic`: the same for a text.
- :func:`atomic_build`: builds a data folder in ``<out_dir>.partial`` with ``done.json`` written
  last, under :func:`~slamming.locks.build_lock`, and renames it into place when complete.
- :func:`atomic_folder`: writes a folder (a model export) in a hidden temporary sibling and, when
  complete, puts it in place of the folder of that name (an earlier export of ours).
- :func:`remove_stale_temporaries`: removes the hidden temporaries beside a path that processes no
  longer running here left behind (their pid is in the name), restoring a folder a crash had moved
  aside.
- :func:`check_replaceable`: the one rule for an existing target — refused unless the user asked
  to overwrite, and even then replaced only when it is one of ours (it holds our marker file).
- :class:`StagedWriter`: the base of writers that stream into a hidden folder and commit it on
  ``close()`` (a clean ``with`` exit) or discard it on ``abort()`` (an exception).

The inter-process lock that cache builders (and :func:`atomic_build`) hold is in :mod:`slamming.locks`.

Nothing is fsynced (no writer of the package ever did): the rename makes a write atomic against
crashes of the process, not against a power cut.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from slamming.errors import SlammingError
from slamming.locks import build_lock

#: ``.NAME.KIND-PID-THREAD-RANDOM``, the names :func:`temporary_sibling` gives.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-\d+-[0-9a-f]{8}")


def temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """A hidden, unique name beside ``path``: ``.NAME.tmp-PID-THREAD-RANDOM`` (safe to delete).

    Args:
        path: the file or folder the temporary stands for.
        kind: ``"tmp"`` for something being written, ``"old"`` for a folder moved aside while a new
            one takes its name (:func:`atomic_folder`).
    """
    if kind not in ("tmp", "old"):
        raise ValueError(f"kind must be 'tmp' or 'old', got {kind!r}")
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 probes without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``path`` that processes no longer running left behind.

    These are the hidden siblings named by :func:`temporary_sibling` (``.NAME.tmp-PID-…`` and
    ``.NAME.old-PID-…``) whose PID is not a running process here. A killed process leaves them; a
    running one (this one included) may still be writing, so its temporaries are kept. When ``path``
    itself is missing, the newest stale ``.old-`` folder (an earlier version a crash moved aside
    just before the new one took its name) is renamed back to ``path`` first, so nothing is lost.
    Call it while holding :func:`build_lock` of ``path``, so no other builder renames meanwhile.

    Args:
        path: the file or folder whose temporaries to look for (its parent may not exist).

    Returns:
        The temporaries removed (a restored folder is not listed).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale: list[tuple[str, Path]] = []
    for entry in path.parent.iterdir():
        found = _TEMPORARY.fullmatch(entry.name)
        if found and found["name"] == path.name and not process_alive(int(found["pid"])):
            stale.append((found["kind"], entry))
    olds = sorted((p for kind, p in stale if kind == "old"), key=lambda p: p.lstat().st_mtime_ns)
    if olds and not (path.exists() or path.is_symlink()):
        os.rename(olds.pop(), path)
    removed = [p for kind, p in stale if kind == "tmp"] + olds
    for entry in removed:
        _remove(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The parent folder must exist. On an exception the temporary file (if written) is removed, the
    exception propagates and ``path`` is untouched; a killed process leaves only the hidden sibling.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_build(
    out_dir: Path, *, replace_unfinished: bool = False, done_newline: bool = True
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield ``(partial folder, done)``; fill ``done`` with the summary to write as ``done.json``.

    The whole build holds :func:`build_lock` of ``out_dir``, so two processes never write the same
    partial folder. Everything is written into the sibling ``<out_dir>.partial``; one that exists
    when the lock is taken was left by a dead process and is removed first. On a clean exit
    ``done.json`` is written into it (``json.dumps(done, indent=2)``) and the folder is renamed to
    ``out_dir``; on an exception the partial folder is removed and the exception propagates, so a
    folder with ``done.json`` is always whole.

    A builder takes :func:`build_lock` itself around "is it built already? else build" (the lock is
    re-entrant), so that a second process waits and then reuses the finished folder instead of
    reaching this function.

    Args:
        out_dir: the folder to build.
        replace_unfinished: remove an existing ``out_dir`` before the rename (callers that know a
            folder without ``done.json`` there is an unfinished build of theirs); otherwise the
            rename fails on a non-empty ``out_dir``.
        done_newline: end ``done.json`` with a newline (the synthetic corpora's never had one).

    Raises:
        SlammingError: ``out_dir`` holds a finished build (``done.json``): it is never replaced.
    """
    partial = out_dir.with_name(out_dir.name + ".partial")
    with build_lock(out_dir):
        if (out_dir / "done.json").is_file():  # the caller did not look under the lock
            raise SlammingError(
                f"{out_dir} already holds a finished build (done.json), perhaps made by another process "
                "meanwhile; use it, or remove it to rebuild"
            )
        if partial.exists():  # under the lock: left by a process that died while building
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        done: dict[str, Any] = {}
        try:
            yield partial, done
            text = json.dumps(done, indent=2) + ("\n" if done_newline else "")
            (partial / "done.json").write_text(text, encoding="utf-8")
            if replace_unfinished and out_dir.exists():
                shutil.rmtree(out_dir)
            partial.rename(out_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


@contextlib.contextmanager
def atomic_folder(
    out_dir: str | os.PathLike[str],
    *,
    marker: str,
    kind: str,
    carry: Callable[[Path], Iterable[str]] = lambda folder: (),
    error: type[SlammingError] = SlammingError,
) -> Iterator[Path]:
    """Yield a hidden temporary folder that takes the place of ``out_dir`` when the block succeeds.

    The folder is written as ``.NAME.tmp-PID-…`` beside ``out_dir`` (a glob for ``NAME`` never
    matches it) and renamed to ``out_dir`` when the block ends cleanly; an existing ``out_dir`` is
    moved aside first and removed after the rename. On an exception the temporary folder is removed
    and ``out_dir`` is left as it was. Everything happens under :func:`build_lock` of ``out_dir``, which
    also lets :func:`remove_stale_temporaries` clear what killed writers left.

    An existing ``out_dir`` is replaced only when it is ours: it holds ``marker``, or is empty, or
    holds nothing but what ``carry`` names. Whatever ``carry`` names in it (files or folders of the
    user that the new folder keeps) is copied into the temporary folder before the block runs.

    Args:
        out_dir: the folder to write; a symbolic link is followed (its target is replaced).
        marker: the file inside a folder of ours (``config.json`` of a model folder).
        kind: what a folder of ours is, for the message (``"a model folder"``).
        carry: names in the existing ``out_dir`` to keep in the new one.
        error: the :class:`SlammingError` subclass to raise.

    Yields:
        The temporary folder to fill (it exists and holds the carried entries).

    Raises:
        SlammingError: (of type ``error``) ``out_dir`` exists and is not ours; it is left untouched.
    """
    out = Path(out_dir)
    if out.is_symlink():
        out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out):
        remove_stale_temporaries(out)
        kept = _replaceable_entries(out, marker, kind, carry, error)
        tmp = temporary_sibling(out)
        os.mkdir(tmp)
        try:
            for name in kept:
                source = out / name
                if source.is_dir():
                    shutil.copytree(source, tmp / name, symlinks=True)
                else:
                    shutil.copy2(source, tmp / name, follow_symlinks=False)
            yield tmp
            _put_in_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _replaceable_entries(
    out: Path,
    marker: str,
    kind: str,
    carry: Callable[[Path], Iterable[str]],
    error: type[SlammingError],
) -> list[str]:
    """What of ``out`` to carry into its replacement; raises when ``out`` is not ours to replace."""
    if not out.exists():
        return []
    kept = sorted(name for name in carry(out) if (out / name).exists()) if out.is_dir() else []
    if out.is_dir() and ((out / marker).is_file() or {p.name for p in out.iterdir()} <= set(kept)):
        return kept
    raise error(
        f"{out} exists but is not {kind} (no {marker}); it is not replaced: remove it yourself or "
        "choose another folder"
    )


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an existing ``out`` is moved aside, then removed."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = temporary_sibling(out, "old")
    os.rename(out, old)  # from here until the next rename a crash leaves it to remove_stale_temporaries
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    _remove(old)


def read_done(out_dir: Path) -> dict[str, Any] | None:
    """The ``done.json`` summary of a folder :func:`atomic_build` finished, or None when it has none.

    Raises:
        SlammingError: ``done.json`` is not a JSON object (one line: remove the folder to rebuild).
    """
    done = out_dir / "done.json"
    if not done.is_file():
        return None
    try:
        summary = json.loads(done.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SlammingError(f"{done} is not valid JSON ({err}); remove {out_dir} to rebuild") from err
    if not isinstance(summary, dict):
        raise SlammingError(f"{done} is not a JSON object; remove {out_dir} to rebuild")
    return summary


def check_replaceable(
    path: str | os.PathLike[str],
    overwrite: bool,
    *,
    marker: str,
    kind: str,
    error: type[SlammingError] = SlammingError,
    empty_dir_ok: bool = False,
) -> None:
    """Refuse to replace an existing ``path`` unless asked, and anything not ours even then.

    Args:
        path: the file or folder about to be written.
        overwrite: the user asked to replace an existing one (``--overwrite`` / ``overwrite=True``).
        marker: the file inside a folder of ours (``meta.json`` of a corpus, ``config.json`` of a
            model folder); a folder without it is never deleted.
        kind: what a folder of ours is, for the message (``"a slamming corpus"``).
        error: the :class:`SlammingError` subclass to raise.
        empty_dir_ok: an existing empty folder counts as free (nothing to lose).

    Raises:
        SlammingError: (of type ``error``) one line naming ``path`` and the fix.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if empty_dir_ok and path.is_dir() and not any(path.iterdir()):
        return
    if not overwrite:
        raise error(
            f"{path} already exists; pass overwrite=True (--overwrite on the command line) to replace it, "
            "or choose another path"
        )
    if not (path.is_dir() and (path / marker).is_file()):
        raise error(
            f"{path} exists but is not {kind} (no {marker}); even with overwrite=True (--overwrite) it is "
            "not replaced: remove it yourself or choose another path"
        )


class StagedWriter(abc.ABC):
    """A writer whose output appears on :meth:`close` and vanishes on :meth:`abort`.

    Subclasses stage everything in a hidden place, set ``path`` (the final name) and ``_closed =
    False``, and implement :meth:`_commit` (finish and move the result to ``path``) and
    :meth:`abort`. Used as a context manager, a clean exit closes (commits) and an exception aborts
    (discards), so an interrupted build never leaves a half-written result under the final name.
    """

    path: Path
    _closed: bool

    def close(self) -> Path:
        """Commit once (a second call does nothing); a failed commit discards everything and re-raises.

        Returns:
            :attr:`path`.
        """
        if self._closed:
            return self.path
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    @abc.abstractmethod
    def _commit(self) -> None:
        """Finish writing and move the result to :attr:`path`."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written so far; the final path is left as it was."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
