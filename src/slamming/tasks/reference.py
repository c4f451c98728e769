"""Reference log-probabilities for DPO, computed once and cached on disk.

DPO compares the policy with a frozen reference (the model it started from). Running the reference
live costs a forward per step and a second copy of the model in memory; its answers never change,
so slamming computes them once per split — summed completion log-probs of the chosen and rejected
side of every triple — and keeps them in a small file. A training step then costs the policy's
forward and backward only (perf-anchors §7: 6N instead of 8N FLOPs per token).

The file is keyed by what decides its numbers: the reference weights (a fingerprint of every
tensor), the data (the preference sources, context and prompt lengths, collate version) and the
numeric precision. A cache made for another model, other data or another precision is refused with
one line saying which of the three differs.

Which triples have a value is stored apart from the values (a boolean ``present`` mask, format 2), so a
NaN is never taken for "missing": a reference log-prob that is NaN or Inf is refused in one line when
computed and when loaded. Format 1 files (NaN marked a missing value; they were only ever written
complete) stay readable: every triple counts as present and every value must be finite.

:func:`load_or_build_reference` builds a cache under :func:`slamming.locks.build_lock`, so two
processes that want the same cache at once compute it once: the second waits, then reads the first's
file.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from slamming.atomic import atomic_path, remove_stale_temporaries
from slamming.errors import SlammingError
from slamming.hashing import settings_key
from slamming.locks import build_lock
from slamming.tasks.preference import concatenated_logprobs

FORMAT = "slamming-reference-logps"
FORMAT_VERSION = 2
#: Format versions :func:`load_reference` reads (1: NaN marked a missing value, no mask).
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class ReferenceKey:
    """What a reference cache's numbers depend on."""

    model: str
    data: str
    precision: str

    @property
    def digest(self) -> str:
        """16 hex digits naming the key (the automatic cache file is named by it)."""
        return settings_key(asdict(self))


@dataclass
class ReferenceLogps:
    """Summed completion log-probs of the reference for every triple of one split.

    Attributes:
        chosen: ``(N,)`` fp32, indexed by the triple's position in its split.
        rejected: ``(N,)`` fp32.
        tokens: Tokens the precompute ran through the model (both sides, padding excluded).
        seconds: Wall time of the precompute (0 when it was loaded from disk).
        present: ``(N,)`` bool, which triples have values; None: all of them.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    tokens: int = 0
    seconds: float = 0.0
    present: torch.Tensor | None = None

    def presence(self) -> torch.Tensor:
        """The ``present`` mask, all True when none was given."""
        if self.present is None:
            return torch.ones(self.chosen.shape, dtype=torch.bool)
        return self.present.cpu().bool()

    def check(self, what: str, fix: str, missing_fix: str | None = None) -> None:
        """Refuse, in one line, a missing triple or a NaN/Inf value of a present one.

        Args:
            what: What holds the values, to start the message (``"reference cache x.pt"``).
            fix: What the user should do, to end it.
            missing_fix: What to do about a missing triple, when not ``fix``.

        Raises:
            SlammingError: Some triple has no value, or a non-finite one.
        """
        present = self.presence()
        n = int(present.numel())
        missing = int((~present).sum())
        if missing:
            raise SlammingError(
                f"{what}: {missing} of {n} triples got no reference log-prob; {missing_fix or fix}"
            )
        chosen, rejected = self.chosen.cpu().float(), self.rejected.cpu().float()
        bad = present & ~(torch.isfinite(chosen) & torch.isfinite(rejected))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise SlammingError(
                f"{what}: non-finite reference log-probs for {int(bad.sum())} of {n} triples (first: triple {i}, "
                f"chosen {float(chosen[i])}, rejected {float(rejected[i])}); {fix}"
            )

    def lookup(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference log-probs of the triples ``index`` (on ``index``'s device)."""
        if self.chosen.device != index.device:
            self.chosen, self.rejected = self.chosen.to(index.device), self.rejected.to(index.device)
        return self.chosen[index], self.rejected[index]


@torch.no_grad()
def compute_reference_logps(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    num_triples: int,
    device: torch.device,
    forward_context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    desc: str = "Reference log-probs",
    progress: bool = True,
) -> ReferenceLogps:
    """Run ``model`` over every batch (the split in index order) and collect per-triple log-probs.

    Args:
        model: The reference model (left in eval mode for the computation, then restored).
        batches: Preference batches (``index``, ``chosen``, ``rejected``) covering the split.
        num_triples: N, the size of the split.
        device: Where to run.
        forward_context: The trainer's precision context (autocast for mixed precision), so the
            numbers match the ones a live reference would produce in training.
        desc: Progress bar label.
        progress: Show a progress bar.

    Raises:
        SlammingError: The batches did not cover every triple, or the model gave a NaN/Inf log-prob.
    """
    was_training = model.training
    model.eval()
    chosen = torch.zeros(num_triples)
    rejected = torch.zeros(num_triples)
    present = torch.zeros(num_triples, dtype=torch.bool)
    tokens = 0
    started = time.perf_counter()
    with tqdm(total=num_triples, desc=desc, unit="pair", disable=not progress) as bar:
        for batch in batches:
            sides = [{k: v.to(device) for k, v in batch[s].items()} for s in ("chosen", "rejected")]
            with forward_context():
                c, r = concatenated_logprobs(model, sides[0], sides[1])
            index = batch["index"].cpu()
            chosen[index], rejected[index] = c.float().cpu(), r.float().cpu()
            present[index] = True
            tokens += int(sum(int(s["attention_mask"].sum()) for s in sides))
            bar.update(len(index))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    model.train(was_training)
    logps = ReferenceLogps(chosen, rejected, tokens, seconds, present)
    logps.check(
        desc,
        "the reference model (model.init_from) must give finite log-probs: check that its weights are finite, "
        "or run in trainer.precision 32-true",
        missing_fix="the reference batches must cover every triple of the split",
    )
    return logps


def save_reference(path: str | os.PathLike[str], key: ReferenceKey, logps: ReferenceLogps) -> Path:
    """Write the cache file atomically (a temporary sibling renamed into place).

    Raises:
        SlammingError: Some triple has no value or a NaN/Inf one (nothing is written).
    """
    path = Path(path)
    logps.check(f"reference cache {path}", "nothing written")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "key": asdict(key),
        "chosen": logps.chosen.cpu(),
        "rejected": logps.rejected.cpu(),
        "present": logps.presence(),
        "tokens": logps.tokens,
        "seconds": logps.seconds,
    }
    data = io.BytesIO()  # written by Python's file write: a full disk is OSError(ENOSPC), one line
    torch.save(payload, data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.getbuffer())
    return path


def load_reference(path: str | os.PathLike[str], key: ReferenceKey, num_triples: int) -> ReferenceLogps:
    """Read a cache file and check it was made for ``key``.

    Raises:
        SlammingError: Not a reference cache, made for another model, other data or another
            precision (the message names which and how to fix it), or holding a missing or NaN/Inf
            value.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the same user-facing problem
        raise SlammingError(
            f"{path} is not a readable reference cache ({err}); delete it to recompute"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SlammingError(f"{path} is not a slamming reference cache; delete it or point elsewhere")
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS:
        raise SlammingError(
            f"{path} is a reference cache of format {version!r}, which this slamming does not read "
            f"(it reads {', '.join(map(str, READABLE_VERSIONS))}); delete it to recompute"
        )
    stored = payload.get("key", {})
    wanted = asdict(key)
    what = {"model": "another model", "data": "other data", "precision": "another precision"}
    differing = [name for name in wanted if stored.get(name) != wanted[name]]
    if differing:
        details = "; ".join(f"{n}: cache {stored.get(n)!r}, this run {wanted[n]!r}" for n in differing)
        raise SlammingError(
            f"reference cache {path} was made for {' and '.join(what[n] for n in differing)} ({details}); "
            "delete it, or set model.reference_cache to another file (null picks one automatically)"
        )
    chosen, rejected = payload.get("chosen"), payload.get("rejected")
    # Format 1 had no mask: it was written only when every triple had a value.
    present = payload.get("present") if version >= 2 else torch.ones(num_triples, dtype=torch.bool)
    if not all(isinstance(t, torch.Tensor) and t.ndim == 1 for t in (chosen, rejected, present)):
        raise SlammingError(
            f"{path} is a damaged reference cache (no value or mask vectors); delete it to recompute"
        )
    if chosen.shape != (num_triples,) or rejected.shape != (num_triples,) or present.shape != (num_triples,):
        raise SlammingError(f"{path} holds {chosen.shape[0]} log-probs for {num_triples} triples; delete it")
    logps = ReferenceLogps(
        chosen.float(), rejected.float(), int(payload.get("tokens", 0)), 0.0, present.bool()
    )
    logps.check(f"reference cache {path}", "delete it to recompute")
    return logps


def load_or_build_reference(
    path: str | os.PathLike[str],
    key: ReferenceKey,
    num_triples: int,
    compute: Callable[[], ReferenceLogps],
) -> tuple[ReferenceLogps, bool]:
    """Read the cache at ``path``, or compute and save it, holding the cache's build lock.

    A process that finds the lock held waits; when it gets it, the cache is there and it reads it,
    so concurrent builders of one cache compute it once. Temporaries left by a builder that died are
    removed first.

    Args:
        path: The cache file.
        key: What its numbers depend on (checked on read, recorded on write).
        num_triples: N, the size of the split.
        compute: Computes the log-probs when the cache is missing (:func:`compute_reference_logps`).

    Returns:
        The log-probs and whether this call computed them (False: read from the cache).

    Raises:
        SlammingError: The cache is unreadable, made for another key or holds bad values (see
            :func:`load_reference`), or the computation failed.
    """
    path = Path(path)
    with build_lock(path):
        remove_stale_temporaries(path)
        if path.exists():
            return load_reference(path, key, num_triples), False
        logps = compute()
        save_reference(path, key, logps)
        return logps, True
