"""Audio manifests: which files to read, in which order, under which id.

A manifest is one of:

- a **directory**, scanned recursively for ``.wav``, ``.flac`` and ``.ogg`` files (suffixes matched
  case-insensitively), sorted by their relative path so the order never depends on the file system;
- a **.tsv** file whose first line is a header naming the columns ``path`` (required), ``duration``
  and ``text`` (optional, any order), e.g. ``path\\tduration\\ttext``; the ``text`` column, when
  last, may itself hold tabs;
- a **.jsonl** file with one object per line: ``{"path": ..., "duration": ...?, "text": ...?}``.

Relative paths in a TSV/JSONL manifest are resolved against the manifest's own folder. An entry's
``rel`` (the id of its audio) is its path relative to the scanned directory, or the path as written
in the manifest, in POSIX form. Durations (seconds) and texts are carried along as metadata; the
audio itself decides the real length.

Symbolic links to folders are followed, except a link back to a folder that contains it (a loop,
which would list the same files without end): that is refused.

A missing manifest, a malformed line, a bad header, a path listed twice or a symbolic link loop is
a :class:`~slamming.errors.SlammingError` naming the file (and line) and the fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from slamming.errors import SlammingError

__all__ = ["AUDIO_SUFFIXES", "ManifestEntry", "read_manifest"]

#: File suffixes (lower case) picked up when a directory is scanned.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

_TSV_COLUMNS = ("path", "duration", "text")


@dataclass(frozen=True)
class ManifestEntry:
    """One audio file named by a manifest.

    Attributes:
        path: where the file is (resolved against the manifest's folder).
        rel: its stable id: the path relative to the scanned directory or as written in the
            manifest, in POSIX form.
        duration: duration in seconds given by the manifest, or None.
        text: transcript given by the manifest, or None.
    """

    path: Path
    rel: str
    duration: float | None = None
    text: str | None = None


def _posix(path: str) -> str:
    """``path`` in POSIX form with ``./`` and duplicate separators removed."""
    return PurePath(path).as_posix()


def _folder_id(path: str) -> tuple[int, int]:
    """The (device, inode) pair naming the folder ``path`` leads to, through any symbolic links."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _scan_directory(root: Path) -> list[ManifestEntry]:
    """The audio files under ``root``, following symbolic links to folders, but never round a loop.

    ``os.walk(followlinks=True)`` alone would go round a link to an enclosing folder until paths
    grow too long, listing every file dozens of times (and with two such links, for ever); each
    folder therefore remembers the folders above it, and a link back to one of them is refused.
    """
    entries = []
    # For each folder os.walk will visit: the folders on its way down from root, itself included.
    above: dict[str, frozenset[tuple[int, int]]] = {str(root): frozenset({_folder_id(str(root))})}
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        for name in dirs:
            path = os.path.join(dirpath, name)
            try:
                folder = _folder_id(path)
            except OSError:  # vanished or unreadable: os.walk skips it too
                continue
            if folder in above[dirpath]:
                raise SlammingError(
                    f"{path} is a symbolic link loop: it leads back to {os.path.realpath(path)}, a folder that "
                    "contains it, so the scan would never end; remove the link or give a .tsv/.jsonl manifest"
                )
            above[path] = above[dirpath] | {folder}
        for name in files:
            if Path(name).suffix.lower() in AUDIO_SUFFIXES:
                path = Path(dirpath) / name
                entries.append(ManifestEntry(path=path, rel=path.relative_to(root).as_posix()))
    if not entries:
        raise SlammingError(
            f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found under {root}; check the directory "
            "or give a .tsv/.jsonl manifest"
        )
    return sorted(entries, key=lambda e: e.rel)


def _duration(value: object, where: str) -> float | None:
    """Parse an optional duration in seconds; ``where`` names the manifest line for errors."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise SlammingError(f"{where}: duration {value!r} is not a number of seconds >= 0; fix the line")
    return seconds


def _entry(folder: Path, raw_path: object, duration: object, text: object, where: str) -> ManifestEntry:
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise SlammingError(f"{where}: missing or empty audio path; every line needs a path")
    if text is not None and not isinstance(text, str):
        raise SlammingError(f"{where}: text must be a string, got {type(text).__name__}")
    raw = raw_path.strip()
    path = Path(raw) if Path(raw).is_absolute() else folder / raw
    return ManifestEntry(path=path, rel=_posix(raw), duration=_duration(duration, where), text=text)


def _read_tsv(manifest: Path) -> list[ManifestEntry]:
    lines = manifest.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise SlammingError(f"manifest {manifest} is empty; its first line must be a header such as 'path'")
    columns = lines[0].rstrip("\r").split("\t")
    unknown = [c for c in columns if c not in _TSV_COLUMNS]
    if "path" not in columns or unknown or len(set(columns)) != len(columns):
        raise SlammingError(
            f"{manifest}:1: header {columns!r} must name the columns path (required), duration and "
            "text (optional), each once, separated by tabs"
        )
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        # Only the text column may hold tabs, and only when it is the last one.
        maxsplit = len(columns) - 1 if columns[-1] == "text" else -1
        fields = line.split("\t", maxsplit)
        where = f"{manifest}:{number}"
        if len(fields) != len(columns):
            raise SlammingError(f"{where}: expected {len(columns)} tab-separated fields, got {len(fields)}")
        row = dict(zip(columns, fields, strict=True))
        entries.append(_entry(manifest.parent, row["path"], row.get("duration"), row.get("text"), where))
    return entries


def jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line of a strict jsonl file (``where`` = ``file:line``).

    Raises:
        SlammingError: a line that is not valid JSON, naming the file and line.
    """
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SlammingError(f"{where}: not valid JSON ({err.msg}); fix or remove the line") from None
            yield where, row


def _read_jsonl(manifest: Path) -> list[ManifestEntry]:
    entries = []
    for where, row in jsonl_rows(manifest):
        if not isinstance(row, dict):
            raise SlammingError(
                f'{where}: expected an object like {{"path": "a.wav"}}, got {json.dumps(row)}'
            )
        entries.append(_entry(manifest.parent, row.get("path"), row.get("duration"), row.get("text"), where))
    return entries


def read_manifest(manifest: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Read a manifest (a directory, a ``.tsv`` or a ``.jsonl`` file) into entries, in order.

    Args:
        manifest: the directory to scan or the manifest file.

    Returns:
        The entries in manifest order (sorted by relative path for a directory).

    Raises:
        SlammingError: the manifest is missing, of an unknown kind, empty, malformed, or lists a
            path twice; a directory holding a symbolic link loop.
    """
    manifest = Path(manifest)
    if manifest.is_dir():
        entries = _scan_directory(manifest)
    elif not manifest.exists():
        raise SlammingError(
            f"manifest {manifest} does not exist; give an audio directory, a .tsv or a .jsonl"
        )
    elif manifest.suffix.lower() == ".tsv":
        entries = _read_tsv(manifest)
    elif manifest.suffix.lower() == ".jsonl":
        entries = _read_jsonl(manifest)
    else:
        raise SlammingError(
            f"manifest {manifest} is neither a directory, a .tsv nor a .jsonl file; rename or convert it"
        )
    if not entries:
        raise SlammingError(f"manifest {manifest} lists no audio files; add at least one path")
    seen: set[str] = set()
    for entry in entries:
        if entry.rel in seen:
            raise SlammingError(
                f"manifest {manifest} lists {entry.rel} twice; ids must be unique, remove the duplicate"
            )
        seen.add(entry.rel)
    return entries
