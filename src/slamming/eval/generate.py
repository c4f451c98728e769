"""Sampling continuations of unit prompts from a unit LM (pure functions, no Lightning).

The paper's generation settings (slam-recipe §1.6: temperature 0.8, top-k 25, 150 new tokens,
repetition penalty 1.1) are :data:`~slamming.models.sampling.PAPER_SAMPLING`, the defaults of
:class:`~slamming.models.sampling.SamplingSettings` (defined on the models floor and re-exported
here, since exported folders carry them too, as ``generation_config.json``).

:func:`sample_continuations` is our own sampler rather than ``transformers``' ``generate``, for one
reason: **every prompt draws from its own random generator**,
seeded by :func:`prompt_seed` from a global seed and the prompt's index. ``generate(do_sample=True)``
draws every row of a batch from the one global RNG, so a prompt's continuation would depend on which
prompts share its batch, on the batch size and on the number of devices. Here it does not: the draws
are made on the CPU from per-prompt ``torch.Generator`` s, so they are the same on any device.

What else the sampler does is ``generate``'s: the same logits processing in the same order
(repetition penalty over every id in the sequence so far, prompt included; temperature; top-k) and
``torch.multinomial`` on the resulting probabilities. With one prompt it reproduces
``model.generate(do_sample=True, suppress_tokens=[PAD], eos_token_id=<S>, ...)`` run after
``torch.manual_seed(seed)`` token for token (a test checks it).

Batches are left padded (``attention_mask`` and restarting ``position_ids``), one forward pass per
step for the whole batch with a KV cache. Padding changes the logits only at float rounding level,
so a batch reproduces one-prompt-at-a-time sampling except where a draw falls within that rounding
of a bucket edge; ``batch_size: 1`` is the bit-exact choice, a larger batch the fast one.

Vocabulary (:mod:`slamming.vocab`): a prompt is ``<S> u+2 ...`` with no closing ``<S>``; sampling
stops at ``<S>`` (the EOS) or after ``max_new_tokens``; PAD is never sampled; continuation ids map
back to units as ``u = id - 2``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from slamming.errors import SlammingError
from slamming.models.sampling import PAPER_SAMPLING, SamplingSettings
from slamming.vocab import BOS_ID, EOS_ID, PAD_ID, UNIT_OFFSET

__all__ = [
    "PAPER_SAMPLING",
    "Continuation",
    "SamplingSettings",
    "process_logits",
    "prompt_ids",
    "prompt_seed",
    "sample_continuations",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Continuation:
    """What one prompt was continued with.

    Attributes:
        units: the sampled units (raw, ``0..K-1``), without the closing ``<S>``.
        eos: whether sampling stopped at ``<S>``; when False, ``len(units) == max_new_tokens``.
        seed: the seed of this prompt's generator.
    """

    units: np.ndarray
    eos: bool
    seed: int


def prompt_seed(seed: int, index: int) -> int:
    """The seed of prompt ``index`` under the global ``seed``: a 63-bit hash of both.

    ``numpy``'s ``SeedSequence`` mixes the two, so neighbouring indices or seeds give unrelated
    streams, and the result depends on nothing else (batch, rank, device).
    """
    if seed < 0 or index < 0:
        raise SlammingError(f"model.seed must be >= 0, got {seed}")
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def prompt_ids(units: Sequence[int] | np.ndarray) -> list[int]:
    """A prompt as model ids: ``<S>`` then ``u + 2`` per unit, with no closing ``<S>``."""
    return [BOS_ID, *(int(u) + UNIT_OFFSET for u in np.asarray(units, dtype=np.int64).tolist())]


def process_logits(logits: torch.Tensor, present: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """``generate``'s logits processing: suppress PAD, repetition penalty, temperature, top-k.

    Args:
        logits: ``(B, V)`` float32 next-id logits.
        present: ``(B, V)`` bool, True for the ids already in each sequence (prompt included).
        settings: the sampling settings.

    Returns:
        ``(B, V)`` processed scores (``-inf`` for what cannot be sampled).
    """
    scores = logits.clone()
    scores[:, PAD_ID] = float("-inf")
    penalty = settings.repetition_penalty
    if penalty != 1.0:
        penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
        scores = torch.where(present, penalised, scores)
    scores = scores / settings.temperature
    if settings.top_k > 0:
        k = min(settings.top_k, scores.size(-1))
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return scores


def _left_padded(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def sample_continuations(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int] | np.ndarray],
    seeds: Sequence[int],
    settings: SamplingSettings,
) -> list[Continuation]:
    """Continue a batch of unit prompts, each with its own seeded generator.

    Args:
        model: a ``transformers`` causal LM over the unit vocabulary (K + 2 ids), in eval mode.
        prompts: raw unit prompts (``0..K-1``); an empty prompt is ``<S>`` alone.
        seeds: one seed per prompt (:func:`prompt_seed`).
        settings: the sampling settings.

    Returns:
        One :class:`Continuation` per prompt, in order.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        return []
    device = next(model.parameters()).device
    rows = [prompt_ids(p) for p in prompts]
    vocab = int(model.config.vocab_size)
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(r) for r in rows) + settings.max_new_tokens
    if limit is not None and longest > limit:
        # RoPE models run past it, but the model never saw such positions in training.
        log.warning(
            "prompt + max_new_tokens reach %d positions, beyond the model's max_position_embeddings %d; "
            "shorten the prompts (data.prompt_seconds) or lower model.max_new_tokens",
            longest,
            limit,
        )
    ids, mask = _left_padded(rows, device)
    present = torch.zeros((len(rows), vocab), dtype=torch.bool)
    for i, row in enumerate(rows):
        present[i, row] = True
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    sampled: list[list[int]] = [[] for _ in rows]
    finished = [False] * len(rows)
    for step in range(settings.max_new_tokens):
        scores = process_logits(out.logits[:, -1, :].float().cpu(), present, settings)
        probs = torch.softmax(scores, dim=-1)
        step_ids = torch.full((len(rows),), PAD_ID, dtype=torch.long)
        for i, generator in enumerate(generators):
            if finished[i]:
                continue
            # One row at a time, each from its own generator: `generate` draws the same way for a
            # batch of one (multinomial over a (1, V) tensor).
            token = int(torch.multinomial(probs[i : i + 1], 1, generator=generator).item())
            step_ids[i] = token
            present[i, token] = True
            if token == EOS_ID:
                finished[i] = True
            else:
                sampled[i].append(token - UNIT_OFFSET)
        if all(finished) or step == settings.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=step_ids[:, None].to(device),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return [
        Continuation(np.asarray(units, dtype=np.int64), eos, int(seed))
        for units, eos, seed in zip(sampled, finished, seeds, strict=True)
    ]
