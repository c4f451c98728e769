"""The on-disk unit corpus: memory-mapped uint16 token shards, int64 offsets and a ``meta.json``.

Layout of a corpus directory (format version 1)::

    tokens-00000.bin     raw units 0..K-1 as little-endian uint16; a document never crosses a shard
    durations-00000.bin  optional run length of each token, little-endian int32, aligned with tokens
    offsets.npy          int64, D + 1 global token offsets: document i is tokens[offsets[i]:offsets[i+1]]
    text.jsonl           optional, one JSON string (or null) per document
    sources.jsonl        optional, one JSON value (or null) per document, e.g. the audio file name
    words.jsonl          optional, one JSON list of [word, start_s, end_s] (or null) per document:
                         when each word is spoken, in seconds of the document's audio
    meta.json            format_version, created, tokenizer identity, num_units, max_unit_id,
                         num_documents, num_tokens, hours, has_durations/has_text/has_sources/has_words,
                         shards, sha256 per file, meta_sha256

The optional files are written only when some document has a value; a corpus without one (or
written before ``words.jsonl`` existed, with no ``has_words`` in its meta) simply has none.

``meta.json`` is checked when a corpus is opened (:mod:`slamming.data.corpus.meta`: its checksum,
the largest unit id against ``num_units``, counts and file names), so a wrong or damaged one gives
one line naming it instead of an embedding ``IndexError`` (or a CUDA assert) later. A corpus
written before the checksum existed still opens; :meth:`UnitCorpus.verify`, which reads every
token, checks that its unit ids lie below ``num_units``.

This is how nanoGPT, Megatron and OLMo store tokens: opening costs one small JSON read and a few
memory maps whatever the corpus size, and a document is a slice of a map. :class:`CorpusWriter`
streams documents into a hidden sibling directory and renames it into place only when complete,
so an exception or a kill never leaves a half-written corpus at the target path.
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any

import numpy as np

from slamming.data.corpus.meta import MAX_UNITS as MAX_UNITS  # re-exported: part of the format
from slamming.data.corpus.meta import check_meta, corrupt
from slamming.errors import CorpusError
from slamming.hashing import sha256_file

FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 27  # 256 MiB of uint16 per shard
TOKEN_DTYPE = np.dtype("<u2")
DURATION_DTYPE = np.dtype("<i4")
HOW_TO_BUILD = "build one with slamming.data.corpus.writer.CorpusWriter or slamming.data.corpus.slamkit"
_REQUIRED_META = ("tokenizer", "num_units", "num_documents", "num_tokens", "shards", "sha256")


def frames_to_hours(frames: int | None, tokenizer: dict[str, Any]) -> float | None:
    """Hours of audio: durations count frames of the tokeniser's ``frame_rate`` (Hz)."""
    rate = tokenizer.get("frame_rate")
    if frames is None or isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
        return None
    return frames / rate / 3600.0


def _read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a corpus, or one clear CorpusError line saying what is wrong and what to do."""
    if not path.is_dir():
        what = "is a file, not a corpus directory" if path.exists() else "does not exist"
        raise CorpusError(f"corpus {path} {what}; {HOW_TO_BUILD}")
    if not (path / "meta.json").is_file():
        raise CorpusError(f"corpus {path} has no meta.json, so it is not a finished corpus; {HOW_TO_BUILD}")
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise corrupt(path, f"meta.json is not valid JSON ({e})") from e
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CorpusError(
            f"corpus {path} has format_version {version!r}, but this slamming reads version "
            f"{FORMAT_VERSION}; rebuild it with this slamming, or use the slamming that wrote it"
        )
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing or not meta["shards"]:
        raise corrupt(path, f"meta.json lacks {', '.join(missing) or 'shards'}")
    check_meta(path, meta)
    return meta


class UnitCorpus:
    """A read-only view of a corpus directory.

    Opening reads ``meta.json`` and the header of ``offsets.npy`` only; shards are memory-mapped on
    first use, so opening is O(1) in the corpus size. Documents are read-only views into the maps.
    Pickling keeps only the path, so a DataLoader worker reopens the maps instead of copying them.

    Args:
        path: The corpus directory.

    Raises:
        CorpusError: The directory, ``meta.json`` or ``offsets.npy`` is missing or malformed, the
            format version is unknown, ``meta.json`` fails its checksum, records a largest unit id
            not below ``num_units`` or a file name outside the folder (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._meta = _read_meta(self.path)
        try:
            self._offsets = np.load(self.path / "offsets.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise corrupt(self.path, f"offsets.npy is missing or unreadable ({e})") from e
        if self._offsets.shape != (len(self) + 1,):
            raise corrupt(self.path, f"offsets.npy has shape {self._offsets.shape} for {len(self)} documents")
        ends = (int(self._offsets[0]), int(self._offsets[-1]))
        if ends != (0, self.num_tokens):
            raise corrupt(
                self.path,
                f"offsets.npy spans tokens {ends[0]}..{ends[1]}, but meta.json records {self.num_tokens}",
            )
        shards = self._meta["shards"]
        self._first_document = np.array([s["first_document"] for s in shards], dtype=np.int64)
        self._maps: dict[str, list[np.ndarray | None]] = {
            k: [None] * len(shards) for k in ("tokens", "durations")
        }
        self._line_ends: dict[str, np.ndarray] = {}
        self._lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._meta["num_documents"])

    def __repr__(self) -> str:
        return f"UnitCorpus({str(self.path)!r}, documents={len(self)}, tokens={self.num_tokens})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of ``meta.json``."""
        return json.loads(json.dumps(self._meta))

    @property
    def tokenizer(self) -> dict[str, Any]:
        """The identity of the tokeniser that made the units."""
        return dict(self._meta["tokenizer"])

    @property
    def num_units(self) -> int:
        """K: unit ids lie in ``[0, K)``."""
        return int(self._meta["num_units"])

    @property
    def max_unit_id(self) -> int | None:
        """The largest unit id the writer wrote (``< num_units``); None for a legacy corpus."""
        top = self._meta.get("max_unit_id")
        return None if top is None else int(top)

    @property
    def num_tokens(self) -> int:
        """Tokens in all documents."""
        return int(self._meta["num_tokens"])

    @property
    def hours(self) -> float | None:
        """Hours of audio, or None without durations or a known frame rate."""
        return self._meta.get("hours")

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document, int64 (from the offsets, on first use)."""
        if self._lengths is None:
            self._lengths = np.diff(self._offsets).astype(np.int64)
        return self._lengths

    def _index(self, i: int) -> int:
        i, n = operator.index(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"document {i} is out of range for corpus {self.path} of {n} documents")
        return i % n

    def _map(self, kind: str, s: int) -> np.ndarray:
        """The memory map of shard ``s``'s ``kind`` file (``tokens``/``durations``), size-checked."""
        shard, maps = self._meta["shards"][s], self._maps[kind]
        if maps[s] is None:
            dtype = TOKEN_DTYPE if kind == "tokens" else DURATION_DTYPE
            file, expected = self.path / shard[kind], shard["num_tokens"] * dtype.itemsize
            size = file.stat().st_size if file.is_file() else None
            if size != expected:
                raise corrupt(self.path, f"file {shard[kind]} has {size} bytes, expected {expected}")
            if expected == 0:  # np.memmap refuses an empty file
                maps[s] = np.zeros(0, dtype=dtype)
            else:
                maps[s] = np.memmap(file, dtype=dtype, mode="r", shape=(shard["num_tokens"],))
        return maps[s]  # type: ignore[return-value]

    def _slice(self, kind: str, i: int) -> np.ndarray:
        i = self._index(i)
        s = int(np.searchsorted(self._first_document, i, side="right")) - 1
        shard, data = self._meta["shards"][s], self._map(kind, s)
        start = int(self._offsets[i]) - shard["first_token"]
        stop = int(self._offsets[i + 1]) - shard["first_token"]
        return np.asarray(data[start:stop])  # drops the memmap subclass, keeps the view (no copy)

    def document(self, i: int) -> np.ndarray:
        """Units of document ``i``: a read-only uint16 view."""
        return self._slice("tokens", i)

    __getitem__ = document

    def durations(self, i: int) -> np.ndarray | None:
        """Run lengths of document ``i`` (a read-only int32 view), or None without durations."""
        return self._slice("durations", i) if self._meta.get("has_durations") else None

    def _line(self, name: str, i: int) -> Any:
        i = self._index(i)
        if name not in self._line_ends:
            # One vectorised pass finds every line end; later reads seek straight to their line.
            ends = np.flatnonzero(np.memmap(self.path / name, dtype=np.uint8, mode="r") == ord("\n"))
            if len(ends) != len(self):
                raise corrupt(self.path, f"{name} has {len(ends)} lines for {len(self)} documents")
            self._line_ends[name] = ends
        ends = self._line_ends[name]
        start = 0 if i == 0 else int(ends[i - 1]) + 1
        with open(self.path / name, "rb") as f:
            f.seek(start)
            return json.loads(f.read(int(ends[i]) - start))

    def text(self, i: int) -> str | None:
        """Transcript of document ``i``, or None."""
        return self._line("text.jsonl", i) if self._meta.get("has_text") else None

    def source(self, i: int) -> Any:
        """Provenance of document ``i`` (e.g. its audio file name), or None."""
        return self._line("sources.jsonl", i) if self._meta.get("has_sources") else None

    def words(self, i: int) -> list[tuple[str, float, float]] | None:
        """Word timings of document ``i``: ``(word, start_s, end_s)`` per word, or None."""
        if not self._meta.get("has_words"):
            return None
        rows = self._line("words.jsonl", i)
        return None if rows is None else [(str(w), float(start), float(end)) for w, start, end in rows]

    def verify(self) -> None:
        """Recompute the sha256 of every file and compare it with ``meta.json``; check the unit ids.

        The largest unit id in the token shards must be the ``max_unit_id`` that ``meta.json``
        records and lie below ``num_units``; a legacy corpus, which records none, is checked
        against ``num_units`` only.

        Raises:
            CorpusError: A file is missing or fails its checksum, or a unit id is out of range.
        """
        for name, expected in self._meta["sha256"].items():
            if not (self.path / name).is_file():
                raise corrupt(self.path, f"file {name} is missing")
            got = sha256_file(self.path / name)
            if got != expected:
                raise CorpusError(
                    f"corpus {self.path}: file {name} fails its checksum (expected {expected}, got {got}); "
                    "the corpus is corrupt — rebuild it"
                )
        top, where = -1, ""
        for s, shard in enumerate(self._meta["shards"]):
            tokens = self._map("tokens", s)
            if tokens.size and int(tokens.max()) > top:
                top, where = int(tokens.max()), shard["tokens"]
        if top >= self.num_units:
            raise corrupt(
                self.path, f"file {where} holds unit id {top}, outside [0, {self.num_units}) of num_units"
            )
        if self.max_unit_id is not None and top != self.max_unit_id:
            raise corrupt(
                self.path,
                f"the token files' largest unit id is {top}, but meta.json records {self.max_unit_id}",
            )


def summarize(path: str | os.PathLike[str]) -> str:
    """A multi-line human summary of a corpus: counts, hours, tokeniser, shards and size on disk.

    Args:
        path: The corpus directory.

    Returns:
        The summary, one fact per line, without a trailing newline.
    """
    corpus = UnitCorpus(path)
    meta, lengths, tok = corpus.meta, corpus.lengths, corpus.tokenizer
    first = ("kind", "k", "layer", "frame_rate", "dedup", "segment", "settings_hash")
    identity = " ".join(
        f"{k}={tok[k]}" for k in [*(k for k in first if k in tok), *sorted(set(tok) - set(first))]
    )
    hours = "unknown (no durations or no frame rate)" if corpus.hours is None else f"{corpus.hours:,.3f}"
    shards = meta["shards"]
    shown = ", ".join(f"{s['tokens']} ({s['num_tokens']:,} tokens)" for s in shards[:3])
    extras = (
        ", ".join(name for name in ("durations", "text", "sources", "words") if meta.get(f"has_{name}"))
        or "none"
    )
    size = sum(f.stat().st_size for f in corpus.path.iterdir() if f.is_file())
    return "\n".join(
        [
            f"corpus {corpus.path} (format {meta['format_version']}, created {meta.get('created', '?')})",
            f"  documents  {len(corpus):,}",
            f"  tokens     {corpus.num_tokens:,} (per document: mean {lengths.mean():.1f}, "
            f"min {lengths.min():,}, max {lengths.max():,})",
            f"  hours      {hours}",
            f"  tokenizer  {identity or '(no identity)'}",
            f"  units      {corpus.num_units:,}",
            f"  shards     {len(shards)}: {shown}{', ...' if len(shards) > 3 else ''}",
            f"  extras     {extras}",
            f"  on disk    {size:,} bytes ({size / 2**20:,.1f} MiB)",
        ]
    )
