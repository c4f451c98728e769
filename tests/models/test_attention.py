"""Every attention path for packed documents equals the per-document unpacked loss (issue 11 item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slamming.data.pretrain.packing import build_window, collate_packed, num_windows
from slamming.errors import SlammingError
from slamming.models.attention import FLEX, PackedMasks, resolve_attention, varlen_boundaries
from slamming.models.unit_lm import UnitLMBuilder
from slamming.tasks.losses import next_unit_loss
from slamming.tasks.pretrain import NextUnitPretraining

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def _packed(context: int, seed: int = 0, docs: int = 14) -> tuple[dict[str, torch.Tensor], list]:
    rng = np.random.default_rng(seed)
    documents = [rng.integers(0, 20, size=int(n)) for n in rng.integers(1, 40, size=docs)]
    lengths = np.array([len(d) + 2 for d in documents], dtype=np.int64)
    starts = np.zeros(len(documents) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    windows = [
        build_window(k, starts, lambda j: documents[j], context)
        for k in range(num_windows(int(starts[-1]), context))
    ]
    return collate_packed(windows), windows


def _module(attention: str) -> NextUnitPretraining:
    torch.manual_seed(0)
    builder = UnitLMBuilder(config=TINY, attn_implementation=attention)
    return NextUnitPretraining(builder, num_units=20, context_length=64).eval()


def _unpacked_reference(model: torch.nn.Module, windows: list) -> float:
    """Mean next-unit loss of every piece the windows hold, each run alone, unpacked, with sdpa."""
    total, count = 0.0, 0
    model.config._attn_implementation = "sdpa"
    for ids, seg, _ in windows:
        for s in np.unique(seg):
            piece = torch.from_numpy(ids[seg == s])
            if len(piece) < 2:
                continue
            with torch.no_grad():
                logits = model(input_ids=piece[None, :-1]).logits
            total += float(torch.nn.functional.cross_entropy(logits[0], piece[1:], reduction="sum"))
            count += len(piece) - 1
    return total / count


@pytest.mark.parametrize("attention", [FLEX, "sdpa", "eager", "varlen-layout"])
def test_each_attention_path_equals_the_unpacked_per_document_loss(attention: str) -> None:
    """fp32, ≤ 1e-5. ``varlen-layout`` is flash-attn's input layout (the windows end to end in one row,
    position ids restarting) run through sdpa's packed-sequence detection, as flash-attn needs CUDA."""
    module = _module("sdpa" if attention == "varlen-layout" else attention)
    assert attention == "varlen-layout" or module.attention == attention
    batch, windows = _packed(context=48)
    with torch.no_grad():
        logits = module.forward_flattened(batch) if attention == "varlen-layout" else module(batch)
    loss, _ = next_unit_loss(logits, batch["labels"])
    reference = _unpacked_reference(module.hf_model, windows)
    assert abs(float(loss) - reference) <= 1e-5, (float(loss), reference)


def test_flex_gradients_equal_sdpa_gradients() -> None:
    """Training through FlexAttention (eager on CPU) gives sdpa's gradients, not only its loss."""
    batch, _ = _packed(context=48, seed=3)
    grads = {}
    for attention in (FLEX, "sdpa"):
        module = _module(attention).train()
        loss, _ = next_unit_loss(module(batch), batch["labels"])
        loss.backward()
        grads[attention] = torch.cat([p.grad.flatten() for p in module.parameters()])
    assert torch.allclose(grads[FLEX], grads["sdpa"], atol=1e-6)


def test_block_mask_reuses_one_mask_function_as_boundaries_change() -> None:
    """A compiled model sees the same mask function and id tensor each step (no recompiles)."""
    masks = PackedMasks()
    first = masks(_packed(context=32, seed=1)[0]["segment_ids"][:2], FLEX, torch.float32)
    ids_before = masks._ids
    second = masks(_packed(context=32, seed=2)[0]["segment_ids"][:2], FLEX, torch.float32)
    assert first.mask_mod is second.mask_mod and masks._ids is ids_before
    dense = second.to_dense()  # (B, H, Lq/128, Lk/128) block map: one block at L = 32
    assert dense.shape[0] == 2


def test_eager_gets_an_additive_mask() -> None:
    segments = torch.tensor([[0, 0, 1, 1]])
    mask = PackedMasks()(segments, "eager", torch.float32)
    low = torch.finfo(torch.float32).min
    assert mask.dtype == torch.float32 and mask[0, 0, 2].tolist() == [low, low, 0.0, low]


def test_auto_picks_per_device() -> None:
    assert resolve_attention("auto", device="cpu") == "sdpa"
    if not torch.cuda.is_available():  # no flash-attn without CUDA: FlexAttention is CUDA's fallback
        assert resolve_attention("auto", device="cuda") == FLEX
        assert resolve_attention("auto", device="cuda", dropout=0.1) == "sdpa"
        assert resolve_attention("flash_attention_2") == "sdpa"
    assert resolve_attention("flex_attention", device="cpu") == FLEX
    with pytest.raises(SlammingError, match="attn_implementation must be one of"):
        resolve_attention("flash")


def test_varlen_boundaries_are_the_piece_starts_padded_to_a_fixed_width() -> None:
    batch, _ = _packed(context=48)
    extra = varlen_boundaries(batch["position_ids"])
    cu = extra["cu_seq_lens_q"]
    starts = torch.nonzero(batch["position_ids"].reshape(-1) == 0).reshape(-1)
    assert cu.dtype == torch.int32 and cu.shape == (64,)
    assert cu[: len(starts)].tolist() == starts.tolist()
    assert (cu[len(starts) :] == batch["position_ids"].numel()).all() and extra["max_length_q"] == 48
    # Window starts are piece starts: every window begins at position 0.
    assert set(range(0, batch["position_ids"].numel(), 48)) <= set(starts.tolist())
