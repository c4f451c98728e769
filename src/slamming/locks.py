"""The inter-process lock a cache builder holds, so two processes never build the same cache at once.

:func:`build_lock` wraps the ``filelock`` package's OS lock (``fcntl.flock``): a second process building
the same cache waits, then finds it built and reuses it; inside the lock a leftover temporary can
only be a dead process's. Its hidden lock file ``.NAME.lock`` is removed by the last release.
:func:`build_once` is the pattern every builder follows: reuse a finished cache, else build it
under the lock, looking once more after the wait.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import filelock

from slamming.errors import SlammingError

#: Seconds between the "waiting for another process" lines while a build lock is held elsewhere.
LOCK_REPORT_SECONDS = 30.0

T = TypeVar("T")


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: the hidden, empty sibling ``.NAME.lock``."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


class _LockFileReplaced(Exception):
    """The lock file was removed (and perhaps made anew) by its holder before this process locked it."""


@functools.cache
def _still_the_lock_file(path: str) -> Callable[[int], None]:
    """The ``on_acquired`` check of ``path``'s lock: the descriptor locked is the file at ``path``.

    One function per path, so that the singleton ``FileLock`` of a path always gets the same one.
    """

    def check(fd: int) -> None:
        try:
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                return
        except FileNotFoundError:
            pass
        raise _LockFileReplaced(path)

    return check


@contextlib.contextmanager
def build_lock(target: str | os.PathLike[str], *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the inter-process lock of ``target`` (a cache folder or file) while building it.

    Every builder of the same cache takes this lock before it looks for a finished cache, so only
    one process builds and the others wait and then reuse the result; inside the lock a leftover
    ``.partial`` or temporary file can only be from a dead process and is safe to remove. The lock is
    an OS lock (``fcntl.flock`` via ``filelock``): a process killed with -9 releases it. Re-entrant
    within a process (per thread).

    The lock file, the hidden sibling ``.NAME.lock``, is removed by the last release, so a cache
    folder keeps no litter. That is safe because a process that locks a file checks that it is still
    the file at that path: a waiter that was blocked on a file its holder has since removed lets go
    and locks the file now there (or creates it). A process killed with -9 leaves the empty file; the
    next holder removes it.

    Args:
        target: the folder or file being built (its parent is created).
        timeout: seconds to wait before a :class:`SlammingError`; ``None`` waits for ever, printing a
            line every :data:`LOCK_REPORT_SECONDS` while another process holds it.

    Yields:
        The lock file's path.

    Raises:
        SlammingError: the wait passed ``timeout``, or the file system refused the lock.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path), is_singleton=True, on_acquired=_still_the_lock_file(str(path)))
    waited = 0.0
    while True:
        step = (
            LOCK_REPORT_SECONDS if timeout is None else min(LOCK_REPORT_SECONDS, max(timeout - waited, 0.0))
        )
        try:
            lock.acquire(timeout=step)
            break
        except _LockFileReplaced:
            continue  # the holder removed the file we waited on: lock the one there now
        except filelock.Timeout:
            waited += step
            if timeout is not None and waited >= timeout:
                raise SlammingError(
                    f"{target} is being built by another process (lock {path} held for {waited:.1f} s): "
                    "wait for it to finish, or stop it"
                ) from None
            print(f"waiting for another process building {target} ({waited:.0f} s)", flush=True)
        except OSError as err:
            raise SlammingError(
                f"cannot lock {path} ({err.strerror or err}): the cache folder must be writable and on a "
                "file system with file locks; choose another cache folder"
            ) from err
    try:
        yield path
    finally:
        if lock.lock_counter == 1:  # the last release: nobody else may use the file while we hold it
            path.unlink(missing_ok=True)
        lock.release()


def build_once(target: str | os.PathLike[str], find: Callable[[], T | None], build: Callable[[], T]) -> T:
    """The finished cache at ``target`` (``find``), or ``build()`` under its :func:`build_lock`.

    ``find`` runs first without the lock (a finished cache needs none, nor a lock file in a
    read-only folder), then again under the lock: a process that waited for another's build
    reuses it instead of building it a second time.

    Args:
        target: the cache folder or file.
        find: returns the finished cache, or None when there is none.
        build: builds the cache (called at most once, under the lock) and returns it.
    """
    found = find()
    if found is not None:
        return found
    with build_lock(target):
        found = find()
        return found if found is not None else build()
