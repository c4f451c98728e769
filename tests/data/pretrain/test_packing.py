"""Packing: windows, masks, and the packed-vs-unpacked loss identity (acceptance A3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.data.pretrain.packing import (
    build_window,
    collate_packed,
    document_attention_mask,
    num_windows,
    pad_documents,
)
from slamming.tasks.losses import next_unit_loss
from slamming.vocab import BOS_ID, EOS_ID, IGNORE_INDEX, UNIT_OFFSET


def _tiny_qwen(vocab_size: int, layers: int) -> Qwen2ForCausalLM:
    """A small random Qwen2 (hidden 32, 4 heads / 2 KV heads, RoPE theta 10,000, sdpa) in eval mode."""
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, attn_implementation="sdpa",
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def _stream(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(d) + 2 for d in docs], dtype=np.int64)
    starts = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    flat = np.concatenate(
        [np.concatenate([[BOS_ID], d.astype(np.int64) + UNIT_OFFSET, [EOS_ID]]) for d in docs]
    )
    return starts, flat


def test_windows_tile_the_stream_with_one_id_overlap() -> None:
    docs = [np.array([3, 4, 5]), np.array([7]), np.array([1, 1, 2, 9, 8])]  # 5 + 3 + 7 = 15 ids
    starts, flat = _stream(docs)
    L = 4
    assert num_windows(15, L) == 3
    seen = []
    for k in range(3):
        ids, seg, pos = build_window(k, starts, lambda j: docs[j], L)
        assert np.array_equal(ids, flat[k * L : k * L + L + 1])
        seen.append((seg.tolist(), pos.tolist()))
    # window 0 = <S> 3 4 5 <S> (one document); window 1 = <S> | <S> 7 <S> | <S>
    assert seen[0] == ([0, 0, 0, 0, 0], [0, 1, 2, 3, 4])
    assert seen[1] == ([0, 1, 1, 1, 2], [0, 0, 1, 2, 0])
    with pytest.raises(IndexError):
        build_window(3, starts, lambda j: docs[j], L)


def test_collate_ignores_cross_document_targets_and_builds_block_mask() -> None:
    docs = [np.array([3, 4]), np.array([5, 6, 7])]
    starts, _ = _stream(docs)
    batch = collate_packed([build_window(0, starts, lambda j: docs[j], 8)])
    # ids: <S> 5 6 <S> <S> 7 8 9 <S>; the target of position 3 (<S> -> <S>) crosses documents.
    assert batch["input_ids"].tolist() == [[1, 5, 6, 1, 1, 7, 8, 9]]
    assert batch["labels"].tolist() == [[5, 6, 1, IGNORE_INDEX, 7, 8, 9, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3]]
    mask = document_attention_mask(batch["segment_ids"])[0, 0]
    assert mask.shape == (8, 8)
    assert mask[5].tolist() == [False] * 4 + [True, True, False, False]
    assert mask[2].tolist() == [True, True, True] + [False] * 5


@pytest.mark.parametrize("context", [16, 23])
def test_packed_masked_loss_equals_unpacked_per_document_loss(context: int) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _tiny_qwen(vocab_size=22, layers=2)
    docs = [rng.integers(0, 20, size=int(n)) for n in rng.integers(1, 30, size=12)]
    starts, _ = _stream(docs)
    n_win = num_windows(int(starts[-1]), context)
    windows = [build_window(k, starts, lambda j: docs[j], context) for k in range(n_win)]
    batch = collate_packed(windows)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=document_attention_mask(batch["segment_ids"]),
        ).logits
    packed_loss, packed_n = next_unit_loss(logits, batch["labels"])

    # Reference twin: every piece a window holds, run alone without packing.
    total, count, per_token_packed, per_token_ref = 0.0, 0, [], []
    for w, (ids, seg, _) in enumerate(windows):
        for s in np.unique(seg):
            piece = torch.from_numpy(ids[seg == s])
            if len(piece) < 2:
                continue
            with torch.no_grad():
                ref_logits = model(input_ids=piece[None, :-1]).logits
            nll = torch.nn.functional.cross_entropy(ref_logits[0], piece[1:], reduction="none")
            total += float(nll.sum())
            count += len(piece) - 1
            idx = np.flatnonzero((seg[:-1] == s) & (seg[1:] == s))  # the piece's own targets
            per_token_ref.append(nll)
            per_token_packed.append(
                torch.nn.functional.cross_entropy(logits[w, idx], batch["labels"][w, idx], reduction="none")
            )
    assert int(packed_n) == count
    assert abs(float(packed_loss) - total / count) <= 1e-5
    assert torch.allclose(torch.cat(per_token_packed), torch.cat(per_token_ref), atol=1e-5)


def test_whole_documents_that_fit_equal_their_padded_unpacked_loss() -> None:
    """When windows hold whole documents only, packed loss = the padded per-document loss."""
    torch.manual_seed(1)
    model = _tiny_qwen(vocab_size=12, layers=1)
    docs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9])]  # 5 + 4 + 6 = 15 ids
    starts, _ = _stream(docs)
    batch = collate_packed([build_window(0, starts, lambda j: docs[j], 14)])
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=document_attention_mask(batch["segment_ids"]),
        ).logits
        packed, n = next_unit_loss(logits, batch["labels"])
        padded = pad_documents(docs)
        ref_logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        ref, ref_n = next_unit_loss(ref_logits, padded["labels"])
    assert int(n) == int(ref_n) == 12
    assert abs(float(packed) - float(ref)) <= 1e-5


def test_flattened_varlen_path_matches_the_masked_path() -> None:
    """The flash-attention path lays windows end to end; checked here with sdpa's own packed-sequence
    detection (transformers 4.57 isolates restarting position ids for a one-row batch without a mask)."""
    from slamming.models.unit_lm import UnitLMBuilder
    from slamming.tasks.pretrain import NextUnitPretraining

    torch.manual_seed(0)
    config = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    module = NextUnitPretraining(UnitLMBuilder(config=config), num_units=20, context_length=24).eval()
    rng = np.random.default_rng(4)
    docs = [rng.integers(0, 20, size=int(n)) for n in rng.integers(1, 30, size=10)]
    starts, _ = _stream(docs)
    batch = collate_packed([build_window(k, starts, lambda j: docs[j], 24) for k in range(3)])
    with torch.no_grad():
        masked = module(batch)
        flat = module.forward_flattened(batch)
    assert flat.shape == masked.shape
    assert torch.allclose(flat, masked, atol=1e-5)
