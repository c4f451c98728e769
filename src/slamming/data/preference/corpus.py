"""Preference corpora: aligned (prompt, chosen, rejected) unit triples on disk.

Layout of a preference corpus directory::

    preference.json          format, number of triples, tokeniser identity, K, free-form ``info``
    prompt/  chosen/  rejected/
                             three unit corpora (:mod:`slamming.data.corpus.format`), document ``i`` of
                             each is side ``i`` of triple ``i``

Each side is an ordinary unit corpus, so it keeps the corpus format's guarantees (O(1) opening,
memory-mapped shards, sha256 checksums, texts and sources per document) and its tools
(``slamming corpus summary|verify``). ``preference.json`` binds the three: it records the sha256
of each side's ``meta.json`` (which itself holds the checksums of every data file), so a side swapped
for another corpus is detected, and :attr:`PreferenceCorpus.fingerprint` names the whole content
(the reference log-prob cache is keyed by it).

Units are stored as the tokeniser's raw ids in ``[0, K)``; the vocabulary shift (``u + 2``) and the
``<S>`` markers are added when batches are made (:mod:`slamming.data.preference.datamodule`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from slamming.atomic import StagedWriter, temporary_sibling
from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.writer import CorpusWriter
from slamming.errors import CorpusError
from slamming.speech.tokenizers import check_identity

FORMAT = "slamming-preference"
FORMAT_VERSION = 1
SIDES = ("prompt", "chosen", "rejected")
META_FILE = "preference.json"


def _meta_sha256(path: Path) -> str:
    return hashlib.sha256((path / "meta.json").read_bytes()).hexdigest()


class PreferenceCorpusWriter(StagedWriter):
    """Write a preference corpus, atomically (a hidden sibling renamed into place by :meth:`close`).

    Args:
        path: The directory to create; an existing path is never replaced.
        tokenizer: Identity of the tokeniser that made the units.
        num_units: K (unit ids lie in ``[0, K)``).
        info: JSON-serialisable facts kept in ``preference.json`` (build settings, filter counts).

    Raises:
        CorpusError: ``path`` exists, or a bad argument (see :class:`CorpusWriter`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tokenizer: dict[str, Any],
        num_units: int,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            raise CorpusError(f"{self.path} already exists; choose another path or remove it yourself")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_sibling(self.path)
        os.mkdir(self._tmp)
        self.tokenizer, self.num_units = dict(tokenizer), int(num_units)
        self.info = dict(info or {})
        try:
            self._writers = {side: CorpusWriter(self._tmp / side, tokenizer, num_units) for side in SIDES}
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._closed = False

    @property
    def num_triples(self) -> int:
        """Triples added so far."""
        return self._writers["prompt"].num_documents

    def add(
        self,
        prompt: Any,
        chosen: Any,
        rejected: Any,
        durations: tuple[Any, Any, Any] | None = None,
        texts: tuple[str | None, str | None, str | None] | None = None,
        source: Any = None,
    ) -> int:
        """Append one triple; every side is validated before anything is written.

        Args:
            prompt, chosen, rejected: 1-D unit ids in ``[0, K)``, none empty.
            durations: Optional run lengths of each side's units.
            texts: Optional transcripts of the three sides.
            source: Optional JSON-serialisable provenance, stored with each side.

        Returns:
            The triple's index.

        Raises:
            CorpusError: An empty side or an out-of-range unit id, naming the triple and the side.
        """
        index = self.num_triples
        sides = (prompt, chosen, rejected)
        for name, units in zip(SIDES, sides, strict=True):
            arr = np.asarray(units)
            if arr.size == 0:
                raise CorpusError(f"triple {index} of {self.path}: the {name} is empty; skip the triple")
            if arr.min() < 0 or arr.max() >= self.num_units:
                bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
                raise CorpusError(
                    f"triple {index} of {self.path}: the {name} has unit id {bad}, out of range "
                    f"[0, {self.num_units}) for this tokeniser"
                )
        for i, name in enumerate(SIDES):
            self._writers[name].add(
                sides[i],
                durations=None if durations is None else durations[i],
                text=None if texts is None else texts[i],
                source=source,
            )
        return index

    def _commit(self) -> None:
        """Finish the three sides, write ``preference.json`` and move the corpus into place."""
        if self.num_triples == 0:
            raise CorpusError(
                f"no triples were added to {self.path}; an empty preference corpus is not written"
            )
        for writer in self._writers.values():
            writer.close()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "num_triples": self.num_triples,
            "tokenizer": self.tokenizer,
            "num_units": self.num_units,
            "sides_meta_sha256": {side: _meta_sha256(self._tmp / side) for side in SIDES},
            "info": self.info,
        }
        (self._tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if self.path.exists():
            raise CorpusError(f"{self.path} appeared while it was being written; nothing was replaced")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written so far."""
        for writer in self._writers.values():
            writer.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True


class PreferenceCorpus:
    """A read-only view of a preference corpus (O(1) to open; sides memory-mapped on use).

    Raises:
        CorpusError: Not a preference corpus, an unknown format version, or sides that do not match
            ``preference.json`` (count, tokeniser, or a side replaced by another corpus).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise CorpusError(
                f"{self.path} is not a preference corpus (no {META_FILE}); give a folder built by "
                "SpokenPreferenceDataModule (or PreferenceCorpusWriter), or the authors' preference .jsonl"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CorpusError(f"{meta_path} is unreadable ({e}); rebuild the preference corpus") from e
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise CorpusError(
                f"{meta_path}: format {meta.get('format')!r} v{meta.get('format_version')} is not "
                f"{FORMAT} v{FORMAT_VERSION}; rebuild it with this version of slamming"
            )
        self._meta = meta
        self.sides = {side: UnitCorpus(self.path / side) for side in SIDES}
        n = int(meta["num_triples"])
        for side, corpus in self.sides.items():
            if len(corpus) != n:
                raise CorpusError(
                    f"{self.path}: the {side} side holds {len(corpus)} documents for {n} triples; rebuild it"
                )
            if _meta_sha256(corpus.path) != meta["sides_meta_sha256"][side]:
                raise CorpusError(
                    f"{self.path}: the {side} side is not the corpus this preference corpus was written with "
                    "(meta.json changed); rebuild it"
                )
            check_identity(meta["tokenizer"], corpus.tokenizer, what=f"{corpus.path} (vs {meta_path})")

    def __len__(self) -> int:
        return int(self._meta["num_triples"])

    def __repr__(self) -> str:
        return f"PreferenceCorpus({str(self.path)!r}, triples={len(self)}, K={self.num_units})"

    @property
    def tokenizer(self) -> dict[str, Any]:
        """Identity of the tokeniser that made the units."""
        return dict(self._meta["tokenizer"])

    @property
    def num_units(self) -> int:
        """K of the tokeniser."""
        return int(self._meta["num_units"])

    @property
    def info(self) -> dict[str, Any]:
        """The build facts recorded by the writer."""
        return dict(self._meta.get("info", {}))

    @property
    def fingerprint(self) -> str:
        """A sha256 naming the content: the three sides' metadata, which hold their files' checksums."""
        digest = hashlib.sha256()
        for side in SIDES:
            digest.update(self._meta["sides_meta_sha256"][side].encode())
        return digest.hexdigest()

    def triple(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw unit ids (``[0, K)``) of the prompt, chosen and rejected sides of triple ``i``."""
        return tuple(self.sides[side].document(i) for side in SIDES)  # type: ignore[return-value]

    def texts(self, i: int) -> tuple[str | None, str | None, str | None]:
        """Transcripts of the three sides of triple ``i`` (None where none was stored)."""
        return tuple(self.sides[side].text(i) for side in SIDES)  # type: ignore[return-value]

    def source(self, i: int) -> Any:
        """Provenance of triple ``i``."""
        return self.sides["prompt"].source(i)

    def lengths(self) -> np.ndarray:
        """``(N, 3)`` int64: units of each side of each triple."""
        return np.stack([np.asarray(self.sides[side].lengths, dtype=np.int64) for side in SIDES], axis=1)

    def verify(self) -> None:
        """Recompute every side's checksums (one read of the data)."""
        for corpus in self.sides.values():
            corpus.verify()
