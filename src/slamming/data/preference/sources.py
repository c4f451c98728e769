"""Sources of preference triples: preference corpora and the authors' preference jsonl.

A *source* holds (prompt, chosen, rejected) triples of raw unit ids in ``[0, K)``: a preference
corpus directory (:class:`~slamming.data.preference.corpus.PreferenceCorpus`) or the authors'
preference jsonl (:class:`JsonlPreferences`, each line ``{"prompt": {"units": [...], "duration":
[...]}, "chosen": {...}, "rejected": {...}}``, reference/slam-recipe.md §2.3), read into memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from slamming.data.preference.corpus import SIDES, PreferenceCorpus
from slamming.errors import CorpusError, SlammingError

#: Line numbers quoted per skip reason in the jsonl summary (the count is always complete).
_MAX_QUOTED_LINES = 10


class PreferenceSource(Protocol):
    """What the data module needs of a source of triples."""

    tokenizer: dict[str, Any] | None
    num_units: int
    fingerprint: str

    def __len__(self) -> int: ...

    def triple(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def lengths(self) -> np.ndarray: ...

    def verify(self) -> None: ...


class JsonlPreferences:
    """The authors' preference jsonl, read into memory.

    Each line holds ``"prompt"``, ``"chosen"`` and ``"rejected"``, each ``{"units": [...], ...}``
    (other keys, e.g. ``"duration"`` or texts, are ignored). Malformed lines and triples with an empty
    side are skipped and counted (:attr:`summary`); an out-of-range unit id is an error, because it
    means the file and ``num_units`` disagree about the tokeniser.

    Args:
        path: The ``.jsonl`` file.
        num_units: K of the tokeniser that made the units (the file does not record it).
        tokenizer: The identity of the tokeniser that made the units, when the user names it (the
            file does not record it); None leaves it unknown, and then only K can be checked.

    Raises:
        CorpusError: An unreadable file, a unit id outside ``[0, K)``, or no usable triple.
    """

    def __init__(self, path: str | Path, num_units: int, tokenizer: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.num_units = int(num_units)
        self.tokenizer: dict[str, Any] | None = None if tokenizer is None else dict(tokenizer)
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise CorpusError(f"{self.path} is unreadable ({e.strerror}); check the path") from e
        self.fingerprint = hashlib.sha256(raw + f"|K={self.num_units}".encode()).hexdigest()
        self._sides: list[list[np.ndarray]] = [[], [], []]
        skipped: dict[str, list[int]] = {"empty side": [], "malformed": []}
        lines = 0
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            lines += 1
            sides = self._parse(line)
            if sides is None:
                skipped["malformed"].append(number)
            elif any(len(s) == 0 for s in sides):
                skipped["empty side"].append(number)
            else:
                for name, units in zip(SIDES, sides, strict=True):
                    if units.min() < 0 or units.max() >= self.num_units:
                        bad = int(units.min()) if units.min() < 0 else int(units.max())
                        raise CorpusError(
                            f"{self.path} line {number}: the {name} has unit id {bad}, outside "
                            f"[0, {self.num_units}) of data.num_units={self.num_units}; set "
                            "data.num_units to the K of the tokeniser that made the file, or remove the line"
                        )
                for store, units in zip(self._sides, sides, strict=True):
                    store.append(units)
        self.summary = f"{self.path.name}: {lines} lines, {len(self)} triples" + _skip_note(skipped)
        if len(self) == 0:
            raise CorpusError(
                f"{self.summary}: no usable triple; each line needs non-empty "
                '"prompt", "chosen" and "rejected", each {"units": [...]}'
            )

    @staticmethod
    def _parse(line: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The three unit arrays of one line, or None if the line is not a well-formed triple."""
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not isinstance(row, dict):
            return None
        out = []
        for name in SIDES:
            side = row.get(name)
            units = side.get("units") if isinstance(side, dict) else None
            # bool is an int subclass, and a float unit id means the wrong field was written.
            if not isinstance(units, list) or not all(type(u) is int for u in units):
                return None
            out.append(np.asarray(units, dtype=np.int64))
        return out[0], out[1], out[2]

    def __len__(self) -> int:
        return len(self._sides[0])

    def __repr__(self) -> str:
        return f"JsonlPreferences({str(self.path)!r}, triples={len(self)}, K={self.num_units})"

    def triple(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw unit ids (``[0, K)``) of the prompt, chosen and rejected sides of triple ``i``."""
        return self._sides[0][i], self._sides[1][i], self._sides[2][i]

    def lengths(self) -> np.ndarray:
        """``(N, 3)`` int64: units of each side of each triple."""
        return np.asarray([[len(s) for s in side] for side in self._sides], dtype=np.int64).reshape(3, -1).T

    def verify(self) -> None:
        """Nothing to do: the whole file was read and checked when it was opened."""


def _skip_note(skipped: dict[str, list[int]]) -> str:
    parts = []
    for reason, numbers in skipped.items():
        if numbers:
            quoted = ", ".join(str(n) for n in numbers[:_MAX_QUOTED_LINES])
            more = ", …" if len(numbers) > _MAX_QUOTED_LINES else ""
            parts.append(f"{len(numbers)} {reason}: line{'s' if len(numbers) > 1 else ''} {quoted}{more}")
    total = sum(len(n) for n in skipped.values())
    return f", skipped {total} ({'; '.join(parts)})" if parts else ""


def existing_source(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise CorpusError(
            f"{p} does not exist; give a preference corpus directory or an authors' .jsonl file"
        )
    return p


def open_source(
    path: str | Path, num_units: int | None, tokenizer: dict[str, Any] | None = None
) -> PreferenceSource:
    """Open a preference corpus directory or an authors' ``.jsonl`` file.

    Args:
        path: The corpus directory or ``.jsonl`` file.
        num_units: K; needed for a ``.jsonl`` file.
        tokenizer: The identity of the tokeniser that made a ``.jsonl`` file's units, if known (a
            corpus records its own).

    Raises:
        SlammingError: A ``.jsonl`` file without ``num_units``.
        CorpusError: A missing path, or a source that is not valid.
    """
    p = existing_source(path)
    if p.suffix == ".jsonl":
        if num_units is None:
            raise SlammingError(
                f"data.num_units: give K for the units of {p.name} (500 for the authors' HuBERT-25 tokeniser)"
            )
        return JsonlPreferences(p, num_units, tokenizer)
    return PreferenceCorpus(p)
