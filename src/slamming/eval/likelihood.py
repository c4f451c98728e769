"""Pair-benchmark scoring: sequence log-likelihoods, pair outcomes and their aggregation.

Pure functions; :class:`~slamming.tasks.evaluate.PairEvaluation` runs them under Lightning.

A side of a pair is scored as slamkit's modelling metrics do: its units become ``<S> u+2 … <S>``,
the model predicts every id after the opening ``<S>`` (the closing ``<S>`` included), and the score
is the mean of those log-probabilities (``mean=False``: their sum). A pair scores 1 when the positive
side is more likely, 0.5 on a tie, 0 otherwise. Where a tokeniser merges units (a phone tokeniser
with byte-pair merges, :mod:`slamming.speech.tokenizers.merges`), the mean divides by the units the
ids stand for (``spans``) rather than by the ids: a per-id mean would favour whatever the merges
split finely (non-words over words: 63.6 % against 79.7 % for the sum, docs/perf-log.md), and
without merges the two are the same.

Two accuracies are reported. *Flat*: the mean over pairs (the authors' code). *ZeroSpeech*: the
mean over the pairs of each ``id`` (its voices), then over the ids, as the ZeroSpeech 2021 toolkit
reports sWUGGY and sBLIMP; per group (sBLIMP ``type``, sWUGGY in-vocabulary vs ``oov``) the same
within the group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from slamming.eval.intervals import accuracy_interval
from slamming.eval.logprobs import sequence_logprobs
from slamming.vocab import IGNORE_INDEX, PAD_ID, document_ids

__all__ = [
    "flat_accuracy",
    "pair_outcomes",
    "score_sequences",
    "score_units",
    "summarize_pairs",
    "zerospeech_accuracy",
]


def _right_padded(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and next-token ``labels`` of sequences padded on the right."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        mask[row, : len(ids)] = 1
    # labels[:, t] is the target of position t: the next id, ignored past each sequence's end.
    labels = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    return input_ids, mask, labels


@torch.no_grad()
def score_sequences(
    model: torch.nn.Module,
    sequences: Sequence[np.ndarray],
    mean: bool = True,
    batch_size: int | None = None,
    id_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood of each id sequence after its first id, in fp32.

    Sequences are sorted by length and run ``batch_size`` at a time (all at once when None), right
    padded with an attention mask, so padding never changes a score beyond float rounding; the
    log-softmax runs in fp32 whatever the model's dtype.

    Example: a model whose logits are all equal over a vocabulary of V gives every target
    log(1/V); a sequence of n ids then scores -log V with ``mean`` and -(n - 1) log V without.

    Args:
        model: A causal LM taking ``input_ids`` and ``attention_mask``, returning ``.logits``.
        sequences: Id sequences of at least 2 ids each.
        mean: Average over the predicted ids instead of summing them.
        batch_size: Most sequences per forward pass.
        id_weights: with ``mean``, what each vocabulary id counts for in the average (its units);
            None: every id counts 1.

    Returns:
        ``(N,)`` float32 scores on the CPU, in the order of ``sequences``.
    """
    if any(len(s) < 2 for s in sequences):
        raise ValueError("every sequence needs at least 2 ids (<S> and a target)")
    scores = torch.empty(len(sequences), dtype=torch.float32)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    step = batch_size or max(len(order), 1)
    device = next(model.parameters()).device
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        input_ids, mask, labels = (t.to(device) for t in _right_padded([sequences[i] for i in chunk]))
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        logps, counts = sequence_logprobs(logits[:, :-1], labels)
        if mean and id_weights is not None:
            valid = labels != IGNORE_INDEX
            counts = (id_weights.to(device)[labels.clamp_min(0)] * valid).sum(dim=-1)
        values = logps / counts if mean else logps
        scores[torch.as_tensor(chunk)] = values.float().cpu()
    return scores


def score_units(
    model: torch.nn.Module,
    units: Sequence[np.ndarray],
    mean: bool = True,
    batch_size: int | None = None,
    max_length: int | None = None,
    spans: np.ndarray | None = None,
    memo: dict[bytes, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """Score raw unit sequences (0..K-1) as documents ``<S> u+2 … <S>``.

    Args:
        model: The unit LM.
        units: One unit array per side.
        mean: See :func:`score_sequences`.
        batch_size: See :func:`score_sequences`.
        max_length: Most ids a document may have (the model's context). A longer one keeps its last
            ``max_length`` ids: pairs such as StoryCloze differ at the end, which must stay scored.
        spans: ``(K,)`` how many units each unit stands for (a tokeniser's
            :func:`~slamming.speech.tokenizers.base.unit_spans`); with ``mean``, the average is per
            unit spanned instead of per id (the closing ``<S>`` counts 1). None: per id.
        memo: scores of documents already scored, by their ids' bytes: a document found there is not
            run again, each other distinct one runs once and is added. It belongs to one model and
            one ``mean`` / ``spans`` / ``max_length``: the caller keeps one per scoring pass (the two
            cloze benchmarks share their true endings, so a pass scores a quarter fewer documents).
            None: every document runs.

    Returns:
        The scores and how many documents were cut to ``max_length``.
    """
    documents = [document_ids(np.asarray(u)) for u in units]
    cut = 0
    if max_length is not None:
        cut = sum(len(d) > max_length for d in documents)
        documents = [d[-max_length:] for d in documents]
    weights = (
        None if spans is None else torch.cat([torch.ones(2), torch.as_tensor(spans, dtype=torch.float32)])
    )
    if memo is None:
        return score_sequences(model, documents, mean=mean, batch_size=batch_size, id_weights=weights), cut
    keys = [d.tobytes() for d in documents]
    first: dict[bytes, int] = {}  # each distinct document's first index
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    todo = [key for key in first if key not in memo]
    if todo:
        fresh = score_sequences(
            model, [documents[first[k]] for k in todo], mean=mean, batch_size=batch_size, id_weights=weights
        )
        memo.update(zip(todo, fresh.tolist(), strict=True))
    return torch.tensor([memo[key] for key in keys], dtype=torch.float32), cut


def pair_outcomes(positive: np.ndarray | torch.Tensor, negative: np.ndarray | torch.Tensor) -> np.ndarray:
    """1 where the positive scores higher, 0.5 on a tie, 0 otherwise (float64 array)."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    return (pos > neg).astype(np.float64) + 0.5 * (pos == neg)


def flat_accuracy(outcomes: np.ndarray) -> float:
    """Mean outcome over all pairs (slamkit's accuracy)."""
    return float(np.mean(outcomes)) if len(outcomes) else float("nan")


def zerospeech_accuracy(outcomes: np.ndarray, ids: Sequence[str]) -> float:
    """Mean over the pairs of each id (its voices), then over ids (the ZeroSpeech 2021 toolkit's).

    Example: id a has outcomes 1 and 0 (two voices), id b has 1: (0.5 + 1) / 2 = 0.75, where the
    flat accuracy is 2/3.
    """
    by_id: dict[str, list[float]] = defaultdict(list)
    for item, outcome in zip(ids, outcomes, strict=True):
        by_id[item].append(float(outcome))
    return float(np.mean([np.mean(v) for v in by_id.values()])) if by_id else float("nan")


def summarize_pairs(
    outcomes: np.ndarray, ids: Sequence[str], groups: Sequence[str], zerospeech: bool
) -> dict[str, Any]:
    """The metrics of one benchmark.

    Args:
        outcomes: Per-pair outcomes (:func:`pair_outcomes`).
        ids: Per-pair item ids.
        groups: Per-pair reporting groups ("" = none).
        zerospeech: Also report the ZeroSpeech aggregation.

    Returns:
        ``{"pairs", "accuracy", "ci95", ["zerospeech_accuracy"], ["groups": {group: {"pairs",
        "accuracy", "ci95", ["zerospeech_accuracy"]}}]}``: the same metrics within each group;
        ``ci95`` is the flat accuracy's 95 % interval (:func:`~slamming.eval.intervals.accuracy_interval`).
    """
    outcomes = np.asarray(outcomes, dtype=np.float64)
    result: dict[str, Any] = {
        "pairs": len(outcomes),
        "accuracy": flat_accuracy(outcomes),
        "ci95": list(accuracy_interval(outcomes)),
    }
    if zerospeech:
        result["zerospeech_accuracy"] = zerospeech_accuracy(outcomes, ids)
    names = sorted({g for g in groups if g})
    if names:
        result["groups"] = {}
        for name in names:
            picked = [i for i, g in enumerate(groups) if g == name]
            result["groups"][name] = summarize_pairs(
                outcomes[picked], [ids[i] for i in picked], [""] * len(picked), zerospeech
            )
    return result


def join_units(head: np.ndarray, tail: np.ndarray, dedup: bool) -> np.ndarray:
    """``head``'s units followed by ``tail``'s, as one utterance's: with ``dedup``, a ``tail`` starting
    with ``head``'s last unit loses that first unit (its run would have merged into ``head``'s)."""
    if dedup and len(head) and len(tail) and head[-1] == tail[0]:
        tail = tail[1:]
    return np.concatenate([head, tail])
