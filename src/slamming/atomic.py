"""Atomic writes: a file or a data folder appears whole at its name, or not at all.

- :func:`atomic_path`: yields a hidden temporary path beside a file; the caller (or a library's
  ``save``) writes it, and on a clean exit it is renamed over the file with :func:`os.replace`. On an
  error the temporary file is removed and the file is left as it was.
- :func:`write_text_atomic`: the same for a text.
- :func:`atomic_build`: builds a data folder in ``<out_dir>.partial`` with ``done.json`` written
  last, and renames it into place when complete.
- :func:`check_replaceable`: the one rule for an existing target — refused unless the user asked
  to overwrite, and even then replaced only when it is one of ours (it holds our marker file).
- :class:`StagedWriter`: the base of writers that stream into a hidden folder and commit it on
  ``close()`` (a clean ``with`` exit) or discard it on ``abort()`` (an exception).
- :func:`build_lock`: an inter-process lock (the ``filelock`` package) held while a cache is built,
  so a second process building the same cache waits, then finds it built and reuses it.

Nothing is fsynced (no writer of the package ever did): the rename makes a write atomic against
crashes of the process, not against a power cut.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import filelock

from slamming.errors import SlammingError

#: Seconds between the "waiting for another process" lines while a build lock is held elsewhere.
LOCK_REPORT_SECONDS = 30.0


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique name beside ``path``: ``.NAME.tmp-PID-THREAD-RANDOM`` (safe to delete)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}")


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


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: the hidden, empty sibling ``.NAME.lock``."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def build_lock(target: str | os.PathLike[str], *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the inter-process lock of ``target`` (a cache folder or file) while building it.

    Every builder of the same cache takes this lock before it looks for a finished cache, so only
    one process builds and the others wait and then reuse the result; inside the lock a leftover
    ``.partial`` or temporary file can only be from a dead process and is safe to remove. The lock is
    an OS lock (``fcntl.flock`` via ``filelock``): a process killed with -9 releases it. The empty,
    hidden lock file stays (removing it would race with a waiter). Re-entrant within a process.

    Args:
        target: the folder or file being built (its parent is created).
        timeout: seconds to wait before a :class:`SlammingError`; ``None`` waits for ever, printing a
            line every :data:`LOCK_REPORT_SECONDS` while another process holds it.

    Yields:
        The lock file's path.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path), is_singleton=True)
    waited = 0.0
    while True:
        step = (
            LOCK_REPORT_SECONDS if timeout is None else min(LOCK_REPORT_SECONDS, max(timeout - waited, 0.0))
        )
        try:
            lock.acquire(timeout=step)
            break
        except filelock.Timeout:
            waited += step
            if timeout is not None and waited >= timeout:
                raise SlammingError(
                    f"{target} is being built by another process (lock {path} held for {waited:.1f} s): "
                    "wait for it to finish, or stop it"
                ) from None
            print(f"waiting for another process building {target} ({waited:.0f} s)", flush=True)
    try:
        yield path
    finally:
        lock.release()


@contextlib.contextmanager
def atomic_build(
    out_dir: Path, *, replace_unfinished: bool = False, done_newline: bool = True
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield ``(partial folder, done)``; fill ``done`` with the summary to write as ``done.json``.

    Everything is written into the sibling ``<out_dir>.partial`` (a stale one, left by an
    interrupted build of ours, is removed first). On a clean exit ``done.json`` is written into it
    (``json.dumps(done, indent=2)``) and the folder is renamed to ``out_dir``; on an exception the
    partial folder is removed and the exception propagates, so a folder with ``done.json`` is
    always whole.

    Args:
        out_dir: the folder to build.
        replace_unfinished: remove an existing ``out_dir`` before the rename (callers that know a
            folder without ``done.json`` there is an unfinished build of theirs); otherwise the
            rename fails on a non-empty ``out_dir``.
        done_newline: end ``done.json`` with a newline (the synthetic corpora's never had one).
    """
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():  # left by an interrupted build of ours
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
