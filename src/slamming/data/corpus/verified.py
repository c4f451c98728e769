"""Checksum verification of unit corpora: once per node, and only when their files changed.

:meth:`UnitCorpus.verify <slamming.data.corpus.format.UnitCorpus.verify>` reads every byte of a
corpus. Done by every rank of every run it stalls DDP start-up (eight ranks of a node reading the
same files) for nothing when the files have not changed since the last run. Here:

- :func:`verify_if_changed` hashes a corpus only when the ``(size, mtime_ns, inode)`` of its
  ``meta.json`` or of a checksummed file differs from the state recorded by the last successful
  verification. The record is a small JSON, :data:`RECORD_NAME` in the corpus folder, written
  atomically; where the folder is not writable it lies in ``$XDG_CACHE_HOME/slamming/verified``
  (``~/.cache/slamming/verified``), named by the corpus's resolved path. A failed verification is
  never recorded. The inode is part of the state so that a copy (``cp -a``, ``rsync -a`` keep the
  size and mtime) is verified again.
- :func:`verify_on_node` runs it under ``torch.distributed`` on local rank 0 of each node only; the
  other ranks wait in a collective, and every rank of every node raises the same error when one node
  found a corrupt corpus, so all ranks fail together instead of some hanging in the next collective.

What the state does not see: bytes changed in place with the size kept and the mtime set back
(``os.utime``). ``slamming corpus verify`` always hashes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slamming.atomic import write_text_atomic
from slamming.data.corpus.format import UnitCorpus
from slamming.errors import CorpusError, SlammingError
from slamming.hashing import settings_key

log = logging.getLogger(__name__)

#: The record of the last successful verification, in the corpus folder.
RECORD_NAME = ".verified.json"
_FORMAT = "slamming-verified-corpus"
_VERSION = 1

FileState = dict[str, list[int]]


def cache_record_path(corpus_dir: str | os.PathLike[str]) -> Path:
    """Where the record of a corpus whose folder is not writable lies (named by its resolved path)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "slamming" / "verified"
    return root / f"{settings_key(str(Path(corpus_dir).resolve()))}.json"


def file_state(corpus: UnitCorpus) -> FileState | None:
    """``[size, mtime_ns, inode]`` of ``meta.json`` and of every file ``meta.json`` checksums.

    Returns:
        The state by file name, or None when a file is missing (then only a verification can say
        what is wrong).
    """
    names = ["meta.json", *sorted(corpus.meta["sha256"])]
    state: FileState = {}
    for name in names:
        try:
            st = os.stat(corpus.path / name)
        except FileNotFoundError:
            return None
        state[name] = [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino)]
    return state


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none yet, unreadable or half-written by hand: verify again
    if not isinstance(record, dict) or record.get("format") != _FORMAT or record.get("version") != _VERSION:
        return None
    return record


def _recorded(corpus: UnitCorpus, state: FileState) -> bool:
    """Whether a record of the last successful verification holds exactly ``state``."""
    if (record := _read_record(corpus.path / RECORD_NAME)) is not None and record.get("files") == state:
        return True
    record = _read_record(cache_record_path(corpus.path))
    return (
        record is not None
        and record.get("corpus") == str(corpus.path.resolve())
        and record.get("files") == state
    )


def _record(corpus: UnitCorpus, state: FileState) -> None:
    """Record ``state`` as verified: in the corpus folder, else in the cache folder."""
    text = json.dumps(
        {"format": _FORMAT, "version": _VERSION, "corpus": str(corpus.path.resolve()), "files": state},
        indent=1,
    )
    errors = []
    for path in (corpus.path / RECORD_NAME, cache_record_path(corpus.path)):
        try:
            write_text_atomic(path, text + "\n")
            return
        except OSError as e:
            errors.append(f"{path.parent}: {e.strerror or e}")
    log.warning(
        "could not record that corpus %s passed its checksums (%s): the next run verifies it again",
        corpus.path,
        "; ".join(errors),
    )


def verify_if_changed(corpus: UnitCorpus) -> bool:
    """Verify a corpus's checksums unless its files are as they were at its last successful verification.

    Args:
        corpus: The corpus to verify.

    Returns:
        True when the files were hashed, False when the recorded state matched and nothing was read.

    Raises:
        CorpusError: A file is missing, unreadable, or fails its checksum (nothing is recorded).
    """
    before = file_state(corpus)
    if before is not None and _recorded(corpus, before):
        log.info("corpus %s is unchanged since its last verification: checksums not recomputed", corpus.path)
        return False
    try:
        corpus.verify()
    except OSError as e:
        raise CorpusError(
            f"corpus {corpus.path}: its files cannot be read to verify their checksums "
            f"({e.strerror or e}); check the folder's permissions and storage"
        ) from e
    # A file changed while it was hashed: its state now may not be what was verified.
    if before is not None and file_state(corpus) == before:
        _record(corpus, before)
    return True


def verify_on_node(corpora: Sequence[UnitCorpus], local_rank: int = 0) -> int:
    """Verify ``corpora`` (:func:`verify_if_changed`) once per node; every rank raises on a failure.

    Without an initialised ``torch.distributed`` process group (or with one rank) this process
    verifies. Under DDP, local rank 0 of each node verifies while the others wait in an
    ``all_gather_object``, which then tells every rank of every node the first failure: a
    :class:`~slamming.errors.SlammingError` is raised again as a ``CorpusError`` with the same
    message on the ranks that did not verify (local rank 0 raises the original). Every rank must call
    this with the same corpora, like any collective.

    Args:
        corpora: The corpora to verify.
        local_rank: This process's rank within its node.

    Returns:
        How many corpora this process hashed (0 on ranks that only waited, or when nothing changed).

    Raises:
        CorpusError: A corpus failed its verification on this or another node.
        RuntimeError: Verification failed on another node with an unexpected error.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not distributed:
        return sum(verify_if_changed(corpus) for corpus in corpora)
    hashed, error, failure = 0, None, None
    if local_rank == 0:
        try:
            for corpus in corpora:
                hashed += verify_if_changed(corpus)
        except Exception as e:  # every rank must reach the collective, whatever went wrong
            error, failure = e, (f"{type(e).__name__}: {e}", isinstance(e, SlammingError), str(e))
    outcomes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, failure)
    if error is not None:
        raise error
    for rank, outcome in enumerate(outcomes):
        if outcome is not None:
            described, known, message = outcome
            if known:
                raise CorpusError(message)
            raise RuntimeError(f"verifying the corpora failed on rank {rank}: {described}")
    return hashed
