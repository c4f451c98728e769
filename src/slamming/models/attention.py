"""Attention over packed documents: which kernel isolates documents, and the mask each one needs.

A packed pretraining window holds pieces of several documents; attention must never cross them.
Each ``transformers`` attention implementation isolates them differently:

===================== ======================================================= =====================
implementation        what isolates documents                                 memory of the mask
===================== ======================================================= =====================
``flash_attention_2`` restarting position ids (varlen; the windows are laid   none
                      end to end as one row, see ``forward_flattened``)
``slamming_flex``     a FlexAttention ``BlockMask`` built from the segment    O(B·L²/128²) blocks
                      ids: fully masked blocks are skipped, not computed
``sdpa``              a 4-D boolean block-diagonal causal mask                O(B·L²) bools
``eager``             the same mask as additive floats (0 / dtype min)        O(B·L²) floats
===================== ======================================================= =====================

``slamming_flex`` is registered with transformers' ``AttentionInterface`` on import. On CUDA it
calls transformers' compiled FlexAttention; on CPU, where inductor compiles FlexAttention for
inference only (torch 2.9: "torch.compile on CPU only supports inference"), it runs FlexAttention
eagerly, outside any surrounding ``torch.compile`` (a correctness path; ``auto`` does not choose it
there). Given anything but a ``BlockMask`` (generation, scoring with padding masks) it is ``sdpa``.

``auto`` picks, per device, the fastest implementation that isolates documents: flash varlen where
flash-attn imports on CUDA, else FlexAttention on CUDA, else ``sdpa`` with the 4-D mask on CPU
(measured, ``make bench`` attention part: training a 4-layer model at context 1024 on this
project's CPU, eager FlexAttention reaches 0.52× the tokens/s of ``sdpa`` with the mask, with 1.5×
its memory; docs/perf-log.md 2026-12-02). Attention dropout rules FlexAttention out (it has none).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from transformers.integrations.flex_attention import flex_attention_forward, repeat_kv
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import is_flash_attn_2_available

from slamming.data.pretrain.packing import document_attention_mask
from slamming.errors import SlammingError

log = logging.getLogger(__name__)

#: The name under which the document FlexAttention path is registered with transformers.
FLEX = "slamming_flex"
#: What ``attn_implementation`` accepts (``flex_attention`` is an alias of :data:`FLEX`).
CHOICES = ("auto", "flash_attention_2", FLEX, "flex_attention", "sdpa", "eager")


def flash_available() -> bool:
    """Whether flash-attn imports and a CUDA device is present."""
    return bool(is_flash_attn_2_available() and torch.cuda.is_available())


def resolve_attention(requested: str, device: str | None = None, dropout: float = 0.0) -> str:
    """The transformers attention implementation to build a model with.

    Args:
        requested: one of :data:`CHOICES`.
        device: ``cuda`` or ``cpu``: where the model will run; None: CUDA when one is visible.
        dropout: the model's attention dropout (FlexAttention has none, so ``auto`` skips it).

    ``flash_attention_2`` falls back to ``sdpa`` with a logged warning where flash-attn or CUDA is
    missing, so one config runs on a laptop and on a GPU.
    """
    if requested not in CHOICES:
        raise SlammingError(f"attn_implementation must be one of {', '.join(CHOICES)}; got {requested!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "auto":
        if device == "cuda" and flash_available():
            return "flash_attention_2"
        if device == "cuda" and dropout == 0.0:
            return FLEX
        return "sdpa"
    if requested == "flex_attention":
        return FLEX
    if requested == "flash_attention_2" and not flash_available():
        log.warning("flash_attention_2 requested but flash-attn/CUDA is not available: falling back to sdpa")
        return "sdpa"
    return requested


@torch.compiler.disable
def _eager_flex(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_mask: BlockMask, scaling: float | None
) -> torch.Tensor:
    """FlexAttention run eagerly (CPU): ``(B, H, L, D)`` output, KV heads repeated to H."""
    groups = query.shape[1] // key.shape[1]
    with warnings.catch_warnings():  # "called without torch.compile()": known, see the module docstring
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(
            query, repeat_kv(key, groups), repeat_kv(value, groups), block_mask=block_mask, scale=scaling
        )


def document_flex_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | BlockMask | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The ``slamming_flex`` attention function (transformers' attention-interface signature)."""
    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if dropout > 0.0 and module.training:
        raise SlammingError(
            "FlexAttention has no attention dropout: set dropout 0 or attn_implementation sdpa"
        )
    if query.device.type == "cuda":
        return flex_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    out = _eager_flex(query, key, value, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


ALL_ATTENTION_FUNCTIONS.register(FLEX, document_flex_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(FLEX, sdpa_mask)


class PackedMasks:
    """The attention mask of a packed batch for one implementation (``None`` for flash varlen).

    For FlexAttention the document ids live in one persistent tensor that each batch copies into,
    and the mask function closing over it is created once: a compiled model then sees the same
    function and tensor object at every step, so changing document boundaries cause no recompiles.
    """

    def __init__(self) -> None:
        self._ids: torch.Tensor | None = None
        self._mask_mod: Callable[..., torch.Tensor] | None = None

    def __call__(self, segment_ids: torch.Tensor, implementation: str, dtype: torch.dtype) -> Any:
        if implementation == "flash_attention_2":
            return None
        if implementation == FLEX:
            return self.block_mask(segment_ids)
        mask = document_attention_mask(segment_ids)
        if implementation == "eager":  # eager attention adds the mask to the scores
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
                ~mask, torch.finfo(dtype).min
            )
        return mask

    def block_mask(self, segment_ids: torch.Tensor) -> BlockMask:
        """A document-causal ``BlockMask`` of ``segment_ids`` ``(B, L)``."""
        ids = self._ids
        if ids is None or ids.shape != segment_ids.shape or ids.device != segment_ids.device:
            ids = self._ids = segment_ids.clone()

            def document_causal(
                b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor
            ) -> torch.Tensor:
                return (ids[b, q] == ids[b, kv]) & (q >= kv)

            self._mask_mod = document_causal
        else:
            ids.copy_(segment_ids)
        batch, length = segment_ids.shape
        return create_block_mask(
            self._mask_mod,
            batch,
            None,
            length,
            length,
            device=segment_ids.device,
            _compile=segment_ids.device.type == "cuda",
        )


def varlen_boundaries(position_ids: torch.Tensor, min_width: int = 64) -> dict[str, Any]:
    """flash-attn's varlen arguments for packed windows laid end to end, in shapes that rarely change.

    ``cu_seq_lens`` holds the offset of every piece (where a position id is 0) in the flattened
    ``B × L`` tokens and is padded with the total (empty trailing pieces) to a power of two, at
    least ``min_width``: a batch of 8 × 1024 holds ~20–40 pieces, so every batch gets width 64.
    ``max_length`` is ``L``, an upper bound, so it is the same at every step too. Computed outside
    the compiled model (``nonzero`` synchronises with the device once per batch).
    """
    batch, length = position_ids.shape
    total = batch * length
    starts = torch.nonzero(position_ids.reshape(-1) == 0).reshape(-1).to(torch.int32)
    width = max(min_width, 1 << int(starts.numel()).bit_length())
    cu = torch.full((width,), total, dtype=torch.int32, device=position_ids.device)
    cu[: starts.numel()] = starts
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": length, "max_length_k": length}
