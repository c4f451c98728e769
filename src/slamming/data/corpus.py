"""The on-disk unit corpus: memory-mapped uint16 token shards, int64 offsets and a ``meta.json``.

Layout of a corpus directory (format version 1)::

    tokens-00000.bin     raw units 0..K-1 as little-endian uint16; a document never crosses a shard
    durations-00000.bin  optional run length of each token, little-endian int32, aligned with tokens
    offsets.npy          int64, D + 1 global token offsets: document i is tokens[offsets[i]:offsets[i+1]]
    text.jsonl           optional, one JSON string (or null) per document
    sources.jsonl        optional, one JSON value (or null) per document, e.g. the audio file name
    meta.json            format_version, created, tokenizer identity, num_units, num_documents,
                         num_tokens, hours, has_durations/has_text/has_sources, shards, sha256 per file

This is how nanoGPT, Megatron and OLMo store tokens: opening costs one small JSON read and a few
memory maps whatever the corpus size, and a document is a slice of a map. :class:`CorpusWriter`
streams documents into a hidden sibling directory and renames it into place only when complete,
so an exception or a kill never leaves a half-written corpus at the target path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import secrets
import shutil
from array import array
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from slamming.errors import CorpusError

FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 27  # 256 MiB of uint16 per shard
TOKEN_DTYPE = np.dtype("<u2")
DURATION_DTYPE = np.dtype("<i4")
MAX_UNITS = 1 << 16  # what uint16 can hold
HOW_TO_BUILD = "build one with slamming.data.corpus.CorpusWriter or slamming.data.corpus_import"
_REQUIRED_META = ("tokenizer", "num_units", "num_documents", "num_tokens", "shards", "sha256")


class _HashingFile:
    """A buffered binary file that hashes what it writes, so checksums need no second read."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self._file = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()
        self._sha = hashlib.sha256()

    def write(self, data: bytes | np.ndarray) -> None:
        self._file.write(data)
        self._sha.update(data)

    def close(self) -> str:
        """Close the file; return its sha256 hex digest."""
        self._file.close()
        return self._sha.hexdigest()


def _corrupt(path: Path, what: str) -> CorpusError:
    return CorpusError(f"corpus {path}: {what}; the corpus is corrupt or incomplete — rebuild it")


def _as_int_array(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as e:  # ragged or non-numeric input
        raise CorpusError(f"{what} must be a 1-D sequence of integers: {e}") from e
    if arr.ndim == 1 and arr.size == 0:
        return arr.astype(np.int64)  # np.asarray([]) is float64; emptiness is the caller's to judge
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise CorpusError(f"{what} must be a 1-D sequence of integers, got {arr.dtype} of shape {arr.shape}")
    return arr


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _hours(frames: int | None, tokenizer: dict[str, Any]) -> float | None:
    """Hours of audio: durations count frames of the tokeniser's ``frame_rate`` (Hz)."""
    rate = tokenizer.get("frame_rate")
    if frames is None or isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
        return None
    return frames / rate / 3600.0


def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an existing corpus, and that only when asked."""
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise CorpusError(f"{path} already exists; pass overwrite=True to replace it, or choose another path")
    if not (path.is_dir() and (path / "meta.json").is_file()):
        raise CorpusError(
            f"{path} exists but is not a slamming corpus (no meta.json); even with overwrite=True it is "
            "not replaced: remove it yourself or choose another path"
        )


class CorpusWriter:
    """Stream documents into a new corpus directory, atomically.

    Everything is written into a hidden sibling directory that is renamed to ``path`` by
    :meth:`close`; on an exception (``with`` block or :meth:`abort`) it is removed. Each document is
    validated before anything is written, so a refused :meth:`add` leaves the writer unchanged.
    Empty documents are refused, not skipped, which keeps document indices aligned with the
    caller's inputs. A corpus with no documents is never written: :meth:`close` raises instead.
    A killed process leaves only the hidden ``.NAME.tmp-PID-…`` sibling, safe to delete.

    Args:
        path: The corpus directory to create.
        tokenizer: The tokeniser identity (a JSON-serialisable dict). Its ``frame_rate``, the rate
            durations are counted in, turns them into hours. If it has ``k``, that must equal
            ``num_units``.
        num_units: K; unit ids lie in ``[0, K)``, ``1 <= K <= 65536``.
        overwrite: Replace ``path`` if it holds a corpus. A path that is not a corpus is never replaced.
        shard_tokens: A document that would push a shard past this many tokens starts a new shard
            (a longer document gets a shard of its own).

    Raises:
        CorpusError: A bad argument, or ``path`` exists and may not be replaced.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tokenizer: dict[str, Any],
        num_units: int,
        overwrite: bool = False,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
    ) -> None:
        self.path = Path(path)
        if isinstance(num_units, bool) or not isinstance(num_units, int) or not 1 <= num_units <= MAX_UNITS:
            raise CorpusError(f"num_units must be an integer in [1, {MAX_UNITS}], got {num_units!r}")
        if not isinstance(tokenizer, dict):
            raise CorpusError(
                f"tokenizer must be the tokeniser's identity dict, not a {type(tokenizer).__name__}"
            )
        try:
            json.dumps(tokenizer)
        except (TypeError, ValueError) as e:
            raise CorpusError(f"tokenizer identity of {self.path} is not JSON-serialisable: {e}") from e
        if tokenizer.get("k", num_units) != num_units:
            raise CorpusError(f"tokenizer k={tokenizer['k']} but num_units={num_units}; they must agree")
        if shard_tokens < 1:
            raise CorpusError(f"shard_tokens must be >= 1, got {shard_tokens}")
        _check_target(self.path, overwrite)
        self.tokenizer, self.num_units, self.overwrite = dict(tokenizer), num_units, overwrite
        self.shard_tokens = int(shard_tokens)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A sibling on the same file system, so the final rename is atomic; os.mkdir (unlike
        # tempfile.mkdtemp, which makes 0700 directories) keeps the user's umask permissions.
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        os.mkdir(self._tmp)
        self._offsets = array("q", [0])  # grows in place: no quadratic re-concatenation
        self._shards: list[dict[str, Any]] = []
        self._sha256: dict[str, str] = {}
        self._tokens: _HashingFile | None = None
        self._durations: _HashingFile | None = None
        self._has_durations: bool | None = None  # decided by the first document
        self._frames = 0
        self._text = _HashingFile(self._tmp / "text.jsonl")
        self._sources = _HashingFile(self._tmp / "sources.jsonl")
        self._num_text = self._num_sources = 0
        self._closed = False

    @property
    def num_documents(self) -> int:
        """Documents added so far."""
        return len(self._offsets) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens added so far."""
        return self._offsets[-1]

    def add(self, units: Any, durations: Any = None, text: str | None = None, source: Any = None) -> int:
        """Append one document.

        Args:
            units: 1-D integer unit ids in ``[0, num_units)``.
            durations: Optional run length (frames, each ``>= 1``) of each unit. Give durations for
                every document or for none.
            text: Optional transcript.
            source: Optional JSON-serialisable provenance, e.g. the audio file name.

        Returns:
            The new document's index.

        Raises:
            CorpusError: Naming the document, for an empty document, an out-of-range unit id, bad
                durations, or text/source that cannot be stored. Nothing is written then.
        """
        if self._closed:
            raise CorpusError(f"the writer of {self.path} is closed; open a new CorpusWriter")
        index = self.num_documents
        where = f"document {index}" + (f" ({source})" if isinstance(source, str) else "") + f" of {self.path}"
        arr = _as_int_array(units, f"units of {where}")
        if arr.size == 0:
            raise CorpusError(f"{where} is empty; a corpus holds no empty documents, so skip it before add()")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.num_units:
            bad = lo if lo < 0 else hi
            raise CorpusError(
                f"{where}: unit id {bad} is out of range [0, {self.num_units}) for this tokeniser"
            )
        dur = None if durations is None else _as_int_array(durations, f"durations of {where}")
        if dur is not None and dur.shape != arr.shape:
            raise CorpusError(f"{where}: {dur.size} durations for {arr.size} units; give one per unit")
        if dur is not None and (int(dur.min()) < 1 or int(dur.max()) > np.iinfo(DURATION_DTYPE).max):
            raise CorpusError(
                f"{where}: durations are run lengths in [1, 2**31), got {dur.min()}..{dur.max()}"
            )
        if self._has_durations is not None and (dur is not None) != self._has_durations:
            earlier = "earlier documents have none" if dur is not None else "earlier documents have them"
            raise CorpusError(f"{where}: durations given or not, but {earlier}; give them for all or none")
        if text is not None and not isinstance(text, str):
            raise CorpusError(f"{where}: text must be a str or None, got {type(text).__name__}")
        try:
            source_line = json.dumps(source, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise CorpusError(f"{where}: source is not JSON-serialisable: {e}") from e

        # Validated: from here on the document is written whole.
        self._has_durations = dur is not None
        shard = self._shards[-1] if self._shards else None
        if shard is None or shard["num_tokens"] + arr.size > self.shard_tokens:
            shard = self._new_shard()
        assert self._tokens is not None
        self._tokens.write(np.ascontiguousarray(arr, dtype=TOKEN_DTYPE))
        if dur is not None and self._durations is not None:
            self._durations.write(np.ascontiguousarray(dur, dtype=DURATION_DTYPE))
            self._frames += int(dur.sum(dtype=np.int64))
        self._text.write((json.dumps(text, ensure_ascii=False) + "\n").encode("utf-8"))
        self._sources.write((source_line + "\n").encode("utf-8"))
        self._num_text += text is not None
        self._num_sources += source is not None
        shard["num_tokens"] += int(arr.size)
        shard["num_documents"] += 1
        self._offsets.append(self._offsets[-1] + int(arr.size))
        return index

    def _new_shard(self) -> dict[str, Any]:
        self._finish_shard()
        i = len(self._shards)
        shard = {
            "tokens": f"tokens-{i:05d}.bin",
            "durations": f"durations-{i:05d}.bin" if self._has_durations else None,
            "first_document": self.num_documents,
            "first_token": self.num_tokens,
            "num_documents": 0,
            "num_tokens": 0,
        }
        self._shards.append(shard)
        self._tokens = _HashingFile(self._tmp / shard["tokens"])
        if shard["durations"]:
            self._durations = _HashingFile(self._tmp / shard["durations"])
        return shard

    def _finish_shard(self) -> None:
        for file in (self._tokens, self._durations):
            if file is not None:
                self._sha256[file.name] = file.close()
        self._tokens = self._durations = None

    def close(self) -> Path:
        """Finish the corpus and rename it to :attr:`path`; a second call does nothing.

        Returns:
            The corpus path.

        Raises:
            CorpusError: No document was added, or ``path`` appeared meanwhile. Nothing is written then.
        """
        if self._closed:
            return self.path
        try:
            if self.num_documents == 0:
                raise CorpusError(f"no documents were added to {self.path}; an empty corpus is not written")
            self._finish_shard()
            for file, count in ((self._text, self._num_text), (self._sources, self._num_sources)):
                digest = file.close()
                if count:
                    self._sha256[file.name] = digest
                else:  # no document has one: the optional file is left out
                    (self._tmp / file.name).unlink()
            np.save(self._tmp / "offsets.npy", np.frombuffer(self._offsets, dtype=np.int64))
            self._sha256["offsets.npy"] = _sha256_file(self._tmp / "offsets.npy")
            meta = {
                "format_version": FORMAT_VERSION,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "tokenizer": self.tokenizer,
                "num_units": self.num_units,
                "num_documents": self.num_documents,
                "num_tokens": self.num_tokens,
                "hours": _hours(self._frames if self._has_durations else None, self.tokenizer),
                "has_durations": bool(self._has_durations),
                "has_text": self._num_text > 0,
                "has_sources": self._num_sources > 0,
                "shards": self._shards,
                "sha256": dict(sorted(self._sha256.items())),
            }
            (self._tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            # Checked again: the target may have appeared while we wrote, and renaming a directory
            # onto an empty one would silently succeed on POSIX.
            _check_target(self.path, self.overwrite)
            if self.path.exists():
                # A directory cannot be renamed onto a non-empty one: move the old corpus aside first,
                # so the path holds the old or the new corpus, never a mix.
                old = self.path.parent / f".{self.path.name}.old-{secrets.token_hex(4)}"
                os.replace(self.path, old)
                os.replace(self._tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything written so far; :attr:`path` is left as it was."""
        for file in (self._tokens, self._durations, self._text, self._sources):
            if file is not None:
                with contextlib.suppress(OSError):  # the directory is removed next anyway
                    file.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


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
        raise _corrupt(path, f"meta.json is not valid JSON ({e})") from e
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CorpusError(
            f"corpus {path} has format_version {version!r}, but this slamming reads version "
            f"{FORMAT_VERSION}; rebuild it with this slamming, or use the slamming that wrote it"
        )
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing or not meta["shards"]:
        raise _corrupt(path, f"meta.json lacks {', '.join(missing) or 'shards'}")
    return meta


class UnitCorpus:
    """A read-only view of a corpus directory.

    Opening reads ``meta.json`` and the header of ``offsets.npy`` only; shards are memory-mapped on
    first use, so opening is O(1) in the corpus size. Documents are read-only views into the maps.
    Pickling keeps only the path, so a DataLoader worker reopens the maps instead of copying them.

    Args:
        path: The corpus directory.

    Raises:
        CorpusError: The directory, ``meta.json`` or ``offsets.npy`` is missing or malformed, or the
            format version is unknown.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._meta = _read_meta(self.path)
        try:
            self._offsets = np.load(self.path / "offsets.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise _corrupt(self.path, f"offsets.npy is missing or unreadable ({e})") from e
        if self._offsets.shape != (len(self) + 1,):
            raise _corrupt(
                self.path, f"offsets.npy has shape {self._offsets.shape} for {len(self)} documents"
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

    def _slice(self, kind: str, i: int) -> np.ndarray:
        i = self._index(i)
        s = int(np.searchsorted(self._first_document, i, side="right")) - 1
        shard, maps = self._meta["shards"][s], self._maps[kind]
        if maps[s] is None:
            dtype = TOKEN_DTYPE if kind == "tokens" else DURATION_DTYPE
            file, expected = self.path / shard[kind], shard["num_tokens"] * dtype.itemsize
            size = file.stat().st_size if file.is_file() else None
            if size != expected:
                raise _corrupt(self.path, f"file {shard[kind]} has {size} bytes, expected {expected}")
            maps[s] = np.memmap(file, dtype=dtype, mode="r", shape=(shard["num_tokens"],))
        start = int(self._offsets[i]) - shard["first_token"]
        stop = int(self._offsets[i + 1]) - shard["first_token"]
        return np.asarray(maps[s][start:stop])  # drops the memmap subclass, keeps the view (no copy)

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
                raise _corrupt(self.path, f"{name} has {len(ends)} lines for {len(self)} documents")
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

    def verify(self) -> None:
        """Recompute the sha256 of every file and compare it with ``meta.json``.

        Raises:
            CorpusError: A file is missing or fails its checksum.
        """
        for name, expected in self._meta["sha256"].items():
            if not (self.path / name).is_file():
                raise _corrupt(self.path, f"file {name} is missing")
            got = _sha256_file(self.path / name)
            if got != expected:
                raise CorpusError(
                    f"corpus {self.path}: file {name} fails its checksum (expected {expected}, got {got}); "
                    "the corpus is corrupt — rebuild it"
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
    extras = ", ".join(name for name in ("durations", "text", "sources") if meta.get(f"has_{name}")) or "none"
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
