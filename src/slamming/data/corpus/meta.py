"""The ``meta.json`` of a unit corpus: its checksum and the checks made when a corpus is opened.

A wrong ``meta.json`` used to pass unnoticed until an embedding ``IndexError`` (or a CUDA assert)
deep in a fit, and its file names were joined to the corpus folder as given. Now
:func:`check_meta` refuses, in one line naming the corpus's ``meta.json``:

- a ``meta_sha256`` that does not match the sha256 of the canonical JSON of the fields a reader
  trusts to serve units (:data:`CHECKSUMMED`: format version, tokeniser, ``num_units``,
  ``max_unit_id``, counts, ``has_durations`` and the shard table). The per-file ``sha256`` table
  is left out: :meth:`~slamming.data.corpus.format.UnitCorpus.verify` checks it against the files,
  so a damaged entry fails there, never passes;
- ``num_units`` outside ``[1, 65536]``, a tokeniser ``k`` other than ``num_units``, and a largest
  unit id (``max_unit_id``, computed by the writer from what it wrote) not below ``num_units``;
- shard counts that do not add up to the recorded totals;
- a file name (shard or checksum table) that is not a plain name inside the folder
  (:func:`member_path`): an absolute path or ``..`` is never read.

A corpus written before ``meta_sha256`` and ``max_unit_id`` existed has neither and is accepted as
a legacy corpus: its other fields are checked the same way, and ``UnitCorpus.verify``, which reads
every token, checks its unit ids against ``num_units``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from slamming.errors import CorpusError, SlammingError

MAX_UNITS = 1 << 16  # what uint16 can hold
#: The ``meta.json`` fields ``meta_sha256`` covers: everything that decides which units a reader
#: serves and where it reads them from.
CHECKSUMMED = (
    "format_version",
    "tokenizer",
    "num_units",
    "max_unit_id",
    "num_documents",
    "num_tokens",
    "has_durations",
    "shards",
)
META_CHECKSUM = "meta_sha256"
_SHARD_COUNTS = ("first_document", "first_token", "num_documents", "num_tokens")


def corrupt(path: Path, what: str) -> CorpusError:
    """The one-line error of a corpus at ``path`` that is corrupt or incomplete in the way ``what`` says."""
    return CorpusError(f"corpus {path}: {what}; the corpus is corrupt or incomplete — rebuild it")


def meta_checksum(meta: dict[str, Any]) -> str:
    """The sha256 (hex) of the :data:`CHECKSUMMED` fields of ``meta`` as canonical JSON.

    A field that is absent is left out, so deleting one changes the checksum too.
    """
    covered = {key: meta[key] for key in CHECKSUMMED if key in meta}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def member_path(folder: Path, name: Any, what: str, error: type[SlammingError] = CorpusError) -> Path:
    """``folder / name`` for a ``name`` read from a file, refused unless it is a plain file name.

    File names in a folder's own index (a corpus's ``meta.json``, a model's weight index) are joined
    to the folder; an absolute path, a ``..``, a separator or an empty name would read outside it.

    Args:
        folder: The folder the name belongs to.
        name: The name as read.
        what: Where the name was read, for the message (``"corpus X: meta.json shard 3"``).
        error: The error class raised.

    Raises:
        SlammingError: (of class ``error``) one line naming ``what`` and the name.
    """
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not os.path.isabs(name)
    )
    if not plain:
        raise error(
            f"{what} names the file {name!r}, which is not a plain file name inside {folder} (absolute "
            "paths, '..' and subfolders are refused); the file is corrupt or hostile — rebuild it or "
            "get it again from its source"
        )
    return folder / name


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a ``meta.json`` whose checksum, ranges, counts or file names are wrong (one line)."""
    where = f"corpus {path}: meta.json"
    recorded = meta.get(META_CHECKSUM)
    if recorded is not None and recorded != meta_checksum(meta):
        raise corrupt(
            path,
            f"meta.json fails its checksum ({META_CHECKSUM} {str(recorded)[:16]!r}…, computed "
            f"{meta_checksum(meta)[:16]!r}…): it was edited or damaged after the corpus was written",
        )
    k = meta["num_units"]
    if not _is_count(k) or not 1 <= k <= MAX_UNITS:
        raise corrupt(path, f"meta.json records num_units={k!r}; K must be an integer in [1, {MAX_UNITS}]")
    top = meta.get("max_unit_id")
    if top is not None and (not _is_count(top) or top >= k):
        raise corrupt(
            path,
            f"meta.json records max unit id {top!r} but num_units={k}: unit ids must lie in [0, {k}), or "
            "they overflow the model's vocabulary",
        )
    if not isinstance(meta["tokenizer"], dict):
        raise corrupt(path, f"meta.json records tokenizer {meta['tokenizer']!r}, not an identity object")
    if meta["tokenizer"].get("k", k) != k:
        raise corrupt(
            path, f"meta.json records num_units={k} but its tokeniser has k={meta['tokenizer']['k']!r}"
        )
    for key in ("num_documents", "num_tokens"):
        if not _is_count(meta[key]):
            raise corrupt(path, f"meta.json records {key}={meta[key]!r}, not a count")
    shards, checksums = meta["shards"], meta["sha256"]
    if not isinstance(shards, list) or not isinstance(checksums, dict):
        raise corrupt(path, "meta.json has a malformed shards list or sha256 table")
    documents = tokens = 0
    for i, shard in enumerate(shards):
        counts = [shard.get(key) for key in _SHARD_COUNTS] if isinstance(shard, dict) else [None]
        if not all(_is_count(c) for c in counts) or counts[:2] != [documents, tokens]:
            raise corrupt(
                path,
                f"meta.json shard {i} is {shard!r}; shards hold counts that start where the previous "
                f"shard ended (document {documents}, token {tokens})",
            )
        member_path(path, shard.get("tokens"), f"{where} shard {i}")
        if meta.get("has_durations") or shard.get("durations") is not None:
            member_path(path, shard.get("durations"), f"{where} shard {i}")
        documents, tokens = documents + counts[2], tokens + counts[3]
    if (documents, tokens) != (meta["num_documents"], meta["num_tokens"]):
        raise corrupt(
            path,
            f"meta.json shards hold {documents} documents and {tokens} tokens, but it records "
            f"{meta['num_documents']} and {meta['num_tokens']}",
        )
    for name in checksums:
        member_path(path, name, f"{where} sha256 table")
