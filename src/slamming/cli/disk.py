"""A full disk told apart from a bug: the one line ``slamming`` prints when a write runs out of space.

A write that fails for want of space (``ENOSPC``) or quota (``EDQUOT``) reaches the command in
several shapes: an :class:`OSError` with that errno (Python's own files), an error of another type
whose message quotes the system's text for it (safetensors reports ``… No space left on device (os
error 28)``), or either of them as the cause of a wrapper. :func:`disk_full_message` recognises
them all and names the file being written: the error's ``filename`` when the failing call knew it
(``open``), otherwise the innermost file open for writing in the traceback (a ``write`` call does
not know its file's name), looking also one attribute deep into the object whose method failed
(a wrapper holding its file), and last a ``filename`` argument (safetensors' ``save_file``). A
writer's temporary name in that path is shown as the name it stands for (:func:`shown_path`).

The writers have already removed their temporaries by then (:mod:`slamming.atomic`): the message
only has to say which disk is full and what to do.
"""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["disk_full_message", "shown_path"]

#: The errors of a full disk, and how the message names each.
FULL: dict[int, str] = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _full_errno(err: BaseException) -> int | None:
    """ENOSPC or EDQUOT when ``err`` reports one (by errno, or by the system's text for it)."""
    if isinstance(err, OSError) and err.errno in FULL:
        return err.errno
    text = str(err)
    for code in FULL:
        if os.strerror(code) in text:
            return code
    return None


#: A writer's temporary name for NAME: ``.NAME.tmp-PID-…`` (:func:`slamming.atomic.temporary_sibling`)
#: or ``NAME.partial`` (:func:`slamming.atomic.atomic_build`).
_TEMPORARY = (
    re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-[0-9a-f]+(?:-[0-9a-f]+)*"),
    re.compile(r"(?P<name>.+)\.partial"),
)

#: How many of the innermost frames are searched: the write that failed is within a few calls of
#: where the error was raised; outer frames hold files that have nothing to do with it (a logger's).
_NEAR = 4


def _frames(tb: TracebackType | None) -> list[dict[str, Any]]:
    """The local variables of the :data:`_NEAR` innermost frames of a traceback, innermost first."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_locals)
        tb = tb.tb_next
    return frames[::-1][:_NEAR]


def _written_file(value: Any) -> str | None:
    """The path of ``value`` when it is a file object open (or last opened) for writing."""
    if not isinstance(value, io.IOBase):
        return None
    name, mode = getattr(value, "name", None), getattr(value, "mode", "")
    if not isinstance(name, (str, os.PathLike)) or not isinstance(mode, str):
        return None
    path = os.fspath(name)
    # Not a stream such as <stderr>: a file on a disk.
    return path if any(c in mode for c in "wax+") and not path.startswith("<") else None


def _path_in_frames(tb: TracebackType | None) -> str | None:
    """The file the innermost frames of ``tb`` were writing, or None when none can be told."""
    frames = _frames(tb)
    for frame in frames:
        values = list(frame.values())
        owner = frame.get("self")
        if owner is not None and hasattr(owner, "__dict__"):
            values += list(vars(owner).values())
        for value in values:
            found = _written_file(value)
            if found:
                return found
    for frame in frames:
        name = frame.get("filename")
        if isinstance(name, (str, os.PathLike)):
            return os.fspath(name)
    return None


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` as the user knows it: each writer's temporary name replaced by the name it stands for.

    ``out/.model.tmp-12-34-0a1b2c3d/config.json`` is shown as ``out/model/config.json``: the file
    the command was making, on the disk that is full.
    """
    parts = []
    for part in Path(path).parts:
        # A temporary of a temporary (a folder staged inside a staged folder) is peeled twice.
        while (name := _standing_for(part)) is not None:
            part = name
        parts.append(part)
    return str(Path(*parts)) if parts else os.fspath(path)


def _standing_for(part: str) -> str | None:
    """The name a writer's temporary ``part`` stands for, or None when ``part`` is no temporary."""
    for pattern in _TEMPORARY:
        found = pattern.fullmatch(part)
        if found:
            return found["name"]
    return None


def disk_full_message(err: BaseException) -> str | None:
    """The one line for a write that failed on a full disk or quota, or None for any other error.

    Args:
        err: The exception that ended a command.

    Returns:
        ``no space left on device writing PATH: free space on that disk or choose another output
        folder`` (``disk quota exceeded`` for EDQUOT; without ``writing PATH`` when no file can be
        told), or None when nothing in ``err``'s chain is a full disk.
    """
    for current in _chain(err):
        code = _full_errno(current)
        if code is None:
            continue
        path = getattr(current, "filename", None) if isinstance(current, OSError) else None
        path = path or _path_in_frames(current.__traceback__)
        where = f" writing {shown_path(path)}" if path else f" ({' '.join(str(current).split())})"
        return f"{FULL[code]}{where}: free space on that disk or choose another output folder"
    return None
