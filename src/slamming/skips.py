"""One skip report for every reader that skips bad input lines instead of failing.

A reader counts each skipped line under a reason and keeps the first few as examples that name the
file and line (``"file:line: reason: detail"``), so a user can open the file at the right place.
The readers' own reports (:class:`~slamming.data.text.reader.TextReport`,
:class:`~slamming.data.preference.text.TripleReport`, :class:`~slamming.data.corpus.slamkit.ImportReport`)
subclass :class:`SkipReport` and add what they read and kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(kw_only=True)
class SkipReport:
    """Skipped lines counted by reason, with the first :attr:`max_examples` of them as examples.

    Attributes:
        skipped: Lines skipped per reason, in the order the reasons first occurred.
        examples: The first :attr:`max_examples` skips as ``"file:line: reason: detail"`` (or
            ``"file:line: reason"`` when there is no detail).
        first: Where each reason first occurred, as ``"file:line"``.
    """

    #: How many skips are kept as examples (all are counted).
    max_examples: ClassVar[int] = 10

    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    first: dict[str, str] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        """Lines skipped, all reasons together."""
        return sum(self.skipped.values())

    def skip(self, file: str | os.PathLike[str], line: int, reason: str, detail: str = "") -> None:
        """Count one skipped ``line`` (1-based) of ``file`` under ``reason``."""
        where = f"{file}:{line}"
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first.setdefault(reason, where)
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {reason}: {detail}" if detail else f"{where}: {reason}")

    def summary(self) -> str:
        """One line: ``skipped N`` and, when any, ``(n reason, ...)`` with reasons sorted by name."""
        reasons = ", ".join(f"{count:,} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"skipped {self.num_skipped:,}" + (f" ({reasons})" if reasons else "")
