"""``CorpusWriter``: stream documents into a new unit corpus directory, atomically.

The format is described in :mod:`slamming.data.corpus.format`. The writer streams into a hidden sibling
directory and renames it into place only when complete, so an exception or a kill never leaves a
half-written corpus at the target path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import secrets
import shutil
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from slamming.atomic import StagedWriter, check_replaceable, temporary_sibling
from slamming.data.corpus.format import (
    DEFAULT_SHARD_TOKENS,
    DURATION_DTYPE,
    FORMAT_VERSION,
    MAX_UNITS,
    TOKEN_DTYPE,
    frames_to_hours,
)
from slamming.data.corpus.meta import META_CHECKSUM, meta_checksum
from slamming.errors import CorpusError
from slamming.hashing import sha256_file


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


def _word_line(words: Any, where: str) -> str:
    """The JSON line of a document's word timings: a list of ``[word, start_s, end_s]``, or null."""
    if words is None:
        return "null"
    if isinstance(words, str | bytes) or not isinstance(words, list | tuple):
        raise CorpusError(
            f"{where}: words must be a list of (word, start_s, end_s), got {type(words).__name__}"
        )
    rows = []
    for n, entry in enumerate(words):
        ok = isinstance(entry, list | tuple) and len(entry) == 3 and isinstance(entry[0], str)
        times = entry[1:] if ok else ()
        ok = ok and all(
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in times
        )
        if not ok or not 0 <= times[0] <= times[1]:
            raise CorpusError(
                f"{where}: word {n} is {entry!r}; each word is (word, start_s, end_s) with 0 <= start <= end"
            )
        rows.append([entry[0], float(times[0]), float(times[1])])
    return json.dumps(rows, ensure_ascii=False)


class CorpusWriter(StagedWriter):
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
        check_replaceable(
            self.path, overwrite, marker="meta.json", kind="a slamming corpus", error=CorpusError
        )
        self.tokenizer, self.num_units, self.overwrite = dict(tokenizer), num_units, overwrite
        self.shard_tokens = int(shard_tokens)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A sibling on the same file system, so the final rename is atomic; os.mkdir (unlike
        # tempfile.mkdtemp, which makes 0700 directories) keeps the user's umask permissions.
        self._tmp = temporary_sibling(self.path)
        os.mkdir(self._tmp)
        self._offsets = array("q", [0])  # grows in place: no quadratic re-concatenation
        self._shards: list[dict[str, Any]] = []
        self._sha256: dict[str, str] = {}
        self._tokens: _HashingFile | None = None
        self._durations: _HashingFile | None = None
        self._has_durations: bool | None = None  # decided by the first document
        self._frames = 0
        self._max_unit_id = -1  # recorded in meta.json; readers check it against num_units
        self._text = _HashingFile(self._tmp / "text.jsonl")
        self._sources = _HashingFile(self._tmp / "sources.jsonl")
        self._words = _HashingFile(self._tmp / "words.jsonl")
        self._num_text = self._num_sources = self._num_words = 0
        self._closed = False

    @property
    def num_documents(self) -> int:
        """Documents added so far."""
        return len(self._offsets) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens added so far."""
        return self._offsets[-1]

    def add(
        self,
        units: Any,
        durations: Any = None,
        text: str | None = None,
        source: Any = None,
        words: Any = None,
    ) -> int:
        """Append one document.

        Args:
            units: 1-D integer unit ids in ``[0, num_units)``.
            durations: Optional run length (frames, each ``>= 1``) of each unit. Give durations for
                every document or for none.
            text: Optional transcript.
            source: Optional JSON-serialisable provenance, e.g. the audio file name.
            words: Optional word timings: a list of ``(word, start_s, end_s)`` in seconds of the
                document's audio, ``0 <= start <= end`` (sTinyStories' ``aligned_text`` format).

        Returns:
            The new document's index.

        Raises:
            CorpusError: Naming the document, for an empty document, an out-of-range unit id, bad
                durations, or text/source/words that cannot be stored. Nothing is written then.
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
        words_line = _word_line(words, where)

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
        self._words.write((words_line + "\n").encode("utf-8"))
        self._num_text += text is not None
        self._num_sources += source is not None
        self._num_words += words is not None
        shard["num_tokens"] += int(arr.size)
        shard["num_documents"] += 1
        self._max_unit_id = max(self._max_unit_id, hi)
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

    def _commit(self) -> None:
        """Finish the corpus and rename it to :attr:`path` (run once by :meth:`close`).

        Raises:
            CorpusError: No document was added, or ``path`` appeared meanwhile. Nothing is written then.
        """
        if self.num_documents == 0:
            raise CorpusError(f"no documents were added to {self.path}; an empty corpus is not written")
        self._finish_shard()
        optional = (
            (self._text, self._num_text),
            (self._sources, self._num_sources),
            (self._words, self._num_words),
        )
        for file, count in optional:
            digest = file.close()
            if count:
                self._sha256[file.name] = digest
            else:  # no document has one: the optional file is left out
                (self._tmp / file.name).unlink()
        # Through Python's file write (not numpy's C-level one): a full disk raises OSError(ENOSPC),
        # which the CLI reports in one line.
        offsets = io.BytesIO()
        np.save(offsets, np.frombuffer(self._offsets, dtype=np.int64))
        (self._tmp / "offsets.npy").write_bytes(offsets.getbuffer())
        self._sha256["offsets.npy"] = sha256_file(self._tmp / "offsets.npy")
        meta = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tokenizer": self.tokenizer,
            "num_units": self.num_units,
            "max_unit_id": self._max_unit_id,
            "num_documents": self.num_documents,
            "num_tokens": self.num_tokens,
            "hours": frames_to_hours(self._frames if self._has_durations else None, self.tokenizer),
            "has_durations": bool(self._has_durations),
            "has_text": self._num_text > 0,
            "has_sources": self._num_sources > 0,
            "has_words": self._num_words > 0,
            "shards": self._shards,
            "sha256": dict(sorted(self._sha256.items())),
        }
        # Over the JSON as a reader will see it (tuples become lists, keys strings).
        meta[META_CHECKSUM] = meta_checksum(json.loads(json.dumps(meta)))
        (self._tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        # Checked again: the target may have appeared while we wrote, and renaming a directory
        # onto an empty one would silently succeed on POSIX.
        check_replaceable(
            self.path, self.overwrite, marker="meta.json", kind="a slamming corpus", error=CorpusError
        )
        if self.path.exists():
            # A directory cannot be renamed onto a non-empty one: move the old corpus aside first,
            # so the path holds the old or the new corpus, never a mix.
            old = self.path.parent / f".{self.path.name}.old-{secrets.token_hex(4)}"
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written so far; :attr:`path` is left as it was."""
        for file in (self._tokens, self._durations, self._text, self._sources, self._words):
            if file is not None:
                with contextlib.suppress(OSError):  # the directory is removed next anyway
                    file.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True
