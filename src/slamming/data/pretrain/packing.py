"""Fixed-length packed windows with document masking.

The documents of an epoch are laid end to end as one stream of model ids (each document is
``<S> u+2 ... <S>``). Window ``k`` is ``stream[k * L : k * L + L + 1]`` for context length ``L``:
``L + 1`` ids, so that inputs are ``window[:-1]`` and targets ``window[1:]``. Consecutive windows
share one id, hence every id of the stream (except the first) is a target exactly once and no id
is wasted on padding — only the last, incomplete window of an epoch is dropped.

A document is split only where it crosses a window boundary; its remainder starts the next window.
Inside a window every piece of a document gets its own segment id and position ids that restart
at 0, attention never crosses segments, and the target that would predict one segment from the
previous one is ignored. So the packed loss equals the loss of the same pieces run one by one
unpacked (``tests/data/pretrain/test_packing.py`` proves it).

Windows are built in O(window) from a cumulative-length index (``np.searchsorted``), which makes
random access, sharding and mid-epoch resume cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from slamming.vocab import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, UNIT_OFFSET

#: A function returning the raw units (0..K-1) of document ``j`` of the epoch plan.
DocumentFetcher = Callable[[int], np.ndarray]


def num_windows(total_ids: int, context_length: int) -> int:
    """Number of complete ``context_length + 1`` windows in a stream of ``total_ids`` ids."""
    if total_ids <= context_length:
        return 0
    return (total_ids - 1) // context_length


def build_window(
    k: int,
    starts: np.ndarray,
    fetch: DocumentFetcher,
    context_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assemble packed window ``k`` of a stream.

    Args:
        k: window index.
        starts: int64 array of length ``D + 1``: stream offset where each planned document starts
            (``starts[-1]`` is the stream length). Document ``j`` occupies
            ``starts[j]:starts[j + 1]`` and holds ``len(units) + 2`` ids.
        fetch: returns the raw units of planned document ``j``.
        context_length: ``L``; the window holds ``L + 1`` ids.

    Returns:
        ``ids`` (int64, L + 1), ``segments`` (int32, L + 1; piece index inside the window, from 0),
        ``positions`` (int64, L + 1; position inside the piece, restarting at 0).
    """
    size = context_length + 1
    begin = k * context_length
    end = begin + size
    if end > starts[-1]:
        raise IndexError(f"window {k} runs past the end of the stream ({starts[-1]} ids)")
    ids = np.empty(size, dtype=np.int64)
    segments = np.empty(size, dtype=np.int32)
    positions = np.empty(size, dtype=np.int64)
    j = int(np.searchsorted(starts, begin, side="right")) - 1
    filled = 0
    piece = 0
    while filled < size:
        doc_start = int(starts[j])
        doc_len = int(starts[j + 1]) - doc_start
        offset = begin + filled - doc_start  # where in document j the window currently is
        take = min(doc_len - offset, size - filled)
        units = fetch(j)
        doc = np.empty(doc_len, dtype=np.int64)
        doc[0] = BOS_ID
        doc[-1] = EOS_ID
        doc[1:-1] = units.astype(np.int64) + UNIT_OFFSET
        ids[filled : filled + take] = doc[offset : offset + take]
        segments[filled : filled + take] = piece
        positions[filled : filled + take] = np.arange(take)
        filled += take
        piece += 1
        j += 1
    return ids, segments, positions


def collate_packed(
    windows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, torch.Tensor]:
    """Stack packed windows into a training batch.

    Returns a dict with ``input_ids``, ``position_ids``, ``segment_ids`` (B, L) and ``labels``
    (B, L) where targets that cross a segment boundary are ``IGNORE_INDEX``. The attention mask is
    built on the model's device from ``segment_ids`` (see :func:`document_attention_mask`), so the
    O(L²) mask never travels through the data loader.
    """
    ids = torch.from_numpy(np.stack([w[0] for w in windows]))
    seg = torch.from_numpy(np.stack([w[1] for w in windows]))
    pos = torch.from_numpy(np.stack([w[2] for w in windows]))
    labels = ids[:, 1:].clone()
    labels[seg[:, 1:] != seg[:, :-1]] = IGNORE_INDEX
    return {
        "input_ids": ids[:, :-1].contiguous(),
        "labels": labels,
        "position_ids": pos[:, :-1].contiguous(),
        "segment_ids": seg[:, :-1].contiguous(),
    }


def document_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask: ``(B, 1, L, L)`` bool, True where a query may attend a key.

    Position ids restarting per document do not isolate documents under ``sdpa`` or ``eager`` in
    transformers 4.57 (measured, see reference/environment.md); this 4-D mask does.
    """
    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril_()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & causal)[:, None, :, :]


def pad_documents(docs: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Right-pad whole documents (raw units) into an unpacked batch: the reference twin of packing.

    Returns ``input_ids``, ``attention_mask`` (B, T) and ``labels`` with ``IGNORE_INDEX`` on padding.
    """
    seqs = [np.concatenate([[BOS_ID], np.asarray(d, dtype=np.int64) + UNIT_OFFSET, [EOS_ID]]) for d in docs]
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.from_numpy(s)
        mask[i, : len(s)] = 1
    labels = ids[:, 1:].clone()
    labels[mask[:, 1:] == 0] = IGNORE_INDEX
    return {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "labels": labels}
