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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from slamming.atomic import atomic_path
from slamming.errors import SlammingError
from slamming.hashing import settings_key
from slamming.tasks.preference import concatenated_logprobs

FORMAT = "slamming-reference-logps"
FORMAT_VERSION = 1


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
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    tokens: int = 0
    seconds: float = 0.0

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
        SlammingError: The batches did not cover every triple.
    """
    was_training = model.training
    model.eval()
    chosen = torch.full((num_triples,), float("nan"))
    rejected = torch.full((num_triples,), float("nan"))
    tokens = 0
    started = time.perf_counter()
    with tqdm(total=num_triples, desc=desc, unit="pair", disable=not progress) as bar:
        for batch in batches:
            sides = [{k: v.to(device) for k, v in batch[s].items()} for s in ("chosen", "rejected")]
            with forward_context():
                c, r = concatenated_logprobs(model, sides[0], sides[1])
            index = batch["index"].cpu()
            chosen[index], rejected[index] = c.float().cpu(), r.float().cpu()
            tokens += int(sum(int(s["attention_mask"].sum()) for s in sides))
            bar.update(len(index))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    model.train(was_training)
    missing = int(torch.isnan(chosen).sum())
    if missing:
        raise SlammingError(f"{desc}: {missing} of {num_triples} triples got no reference log-prob")
    return ReferenceLogps(chosen, rejected, tokens, seconds)


def save_reference(path: str | os.PathLike[str], key: ReferenceKey, logps: ReferenceLogps) -> Path:
    """Write the cache file atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "key": asdict(key),
        "chosen": logps.chosen.cpu(),
        "rejected": logps.rejected.cpu(),
        "tokens": logps.tokens,
        "seconds": logps.seconds,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_reference(path: str | os.PathLike[str], key: ReferenceKey, num_triples: int) -> ReferenceLogps:
    """Read a cache file and check it was made for ``key``.

    Raises:
        SlammingError: Not a reference cache, or made for another model, other data or another
            precision (the message names which and how to fix it).
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
    chosen, rejected = payload["chosen"], payload["rejected"]
    if chosen.shape != (num_triples,) or rejected.shape != (num_triples,):
        raise SlammingError(f"{path} holds {chosen.shape[0]} log-probs for {num_triples} triples; delete it")
    return ReferenceLogps(chosen.float(), rejected.float(), int(payload.get("tokens", 0)), 0.0)
