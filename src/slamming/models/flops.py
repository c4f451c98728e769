"""Peak FLOP/s of the hardware and model FLOPs per token, for MFU.

MFU (model FLOPs utilisation) = model FLOPs per token × tokens per second ÷ (peak FLOP/s × devices).
Both halves live here:

* :func:`peak_flops` returns the dense peak of a device for the dtype its matmuls run in. On CUDA it
  looks the device name up in :data:`PEAK_FLOPS`, our own table of *dense* (no 2:4 sparsity) figures
  from NVIDIA's datasheets and architecture whitepapers. We keep our own table because Lightning's
  ``get_available_flops`` (2.6) misses the RTX A5000 the paper ran on and lists the H200 with its
  sparse figure. On CPU there is no trustworthy datasheet number, so the peak is *measured* in the
  current process as the best of a few timed ``torch.mm`` GEMMs (:func:`measure_cpu_peak_flops`).
* :func:`transformer_flops_per_token` is the usual 6N + attention estimate for training.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from torch import nn

# Dtype keys of the table. "tf32" is fp32 matmuls on tensor cores, which PyTorch uses only when
# `torch.get_float32_matmul_precision()` is not "highest" (the default is "highest").
TF32 = "tf32"


@dataclass(frozen=True)
class PeakEntry:
    """Dense peak FLOP/s of one device family.

    Attributes:
        pattern: Regular expression matched (case-insensitively, with word boundaries) against
            ``torch.cuda.get_device_name()``.
        peaks: Dense peak FLOP/s per matmul dtype (``torch.bfloat16``, ``torch.float16``,
            ``torch.float32`` for non-tensor-core fp32, ``"tf32"``). A missing dtype means unknown or
            unsupported, and MFU is then not reported rather than guessed.
    """

    pattern: str
    peaks: dict[torch.dtype | str, float]


# Ordered most specific first: "H200 NVL" must win over "H200", "H100 PCIe" over "H100".
# Word boundaries keep "A10" from matching "A100" and "L4" from matching "L40S".
# bf16/fp16 figures on GeForce/RTX cards are for fp32 accumulation, which is what PyTorch uses.
# Left out on purpose: A10G (AWS publishes no dense tensor peak and the public figures disagree);
# pass `peak_flops=` to the Throughput callback for devices not listed here.
PEAK_FLOPS: tuple[PeakEntry, ...] = (
    # Hopper. H200 SXM has the H100 SXM's compute (more memory); the NVL variant is clocked lower.
    PeakEntry(r"\bh200 nvl\b", {torch.bfloat16: 836e12, torch.float16: 836e12, torch.float32: 60e12}),
    PeakEntry(
        r"\bg?h200\b", {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12, TF32: 494.7e12}
    ),
    PeakEntry(r"\bh100 nvl\b", {torch.bfloat16: 835e12, torch.float16: 835e12, torch.float32: 60e12}),
    PeakEntry(
        r"\bh100 pcie\b", {torch.bfloat16: 756e12, torch.float16: 756e12, torch.float32: 51e12, TF32: 378e12}
    ),
    PeakEntry(
        r"\bg?h100\b", {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12, TF32: 494.7e12}
    ),
    # Ampere data centre.
    PeakEntry(
        r"\ba100\b", {torch.bfloat16: 312e12, torch.float16: 312e12, torch.float32: 19.5e12, TF32: 156e12}
    ),
    PeakEntry(
        r"\ba10\b", {torch.bfloat16: 125e12, torch.float16: 125e12, torch.float32: 31.2e12, TF32: 62.5e12}
    ),
    # Ampere workstation. A5000: 64 SMs × 512 dense FMA/clk × 2 × 1.695 GHz = 111.1 TF (perf-anchors §1).
    PeakEntry(r"\ba5000\b", {torch.bfloat16: 111.1e12, torch.float16: 111.1e12, torch.float32: 27.8e12}),
    PeakEntry(r"\ba6000\b", {torch.bfloat16: 154.8e12, torch.float16: 154.8e12, torch.float32: 38.7e12}),
    # Ada.
    PeakEntry(r"\bl40s\b", {torch.bfloat16: 362.05e12, torch.float16: 362.05e12, torch.float32: 91.6e12}),
    PeakEntry(r"\bl4\b", {torch.bfloat16: 121e12, torch.float16: 121e12, torch.float32: 30.3e12}),
    PeakEntry(r"\brtx 4090\b", {torch.bfloat16: 165.2e12, torch.float16: 165.2e12, torch.float32: 82.6e12}),
    # GeForce Ampere: fp32-accumulate tensor rate is half the fp16-accumulate one.
    PeakEntry(r"\brtx 3090\b", {torch.bfloat16: 71e12, torch.float16: 71e12, torch.float32: 35.6e12}),
    # Volta and Turing have no bf16 tensor cores.
    PeakEntry(r"\bv100\b", {torch.float16: 125e12, torch.float32: 15.7e12}),
    PeakEntry(r"\bt4\b", {torch.float16: 65e12, torch.float32: 8.1e12}),
)

# Lightning precision flag → dtype of the matmuls, which is what the peak must match.
_PRECISION_DTYPES: dict[str, torch.dtype] = {
    "bf16-true": torch.bfloat16,
    "bf16-mixed": torch.bfloat16,
    "bf16": torch.bfloat16,
    "16-true": torch.float16,
    "16-mixed": torch.float16,
    "16": torch.float16,
    "32-true": torch.float32,
    "32": torch.float32,
    "64-true": torch.float64,
    "64": torch.float64,
}

_CPU_PEAK_CACHE: dict[tuple[torch.dtype, int, int], float] = {}


def precision_to_dtype(precision: str | int) -> torch.dtype:
    """Return the matmul dtype of a Lightning precision flag.

    Args:
        precision: ``trainer.precision``, e.g. ``"bf16-mixed"`` or ``"32-true"``.

    Returns:
        The dtype the model's matmuls run in (mixed precision runs them in the half type).
    """
    return _PRECISION_DTYPES.get(str(precision), torch.float32)


def peak_flops_for_device_name(name: str, dtype: torch.dtype | str) -> float | None:
    """Look a CUDA device name up in :data:`PEAK_FLOPS`.

    Args:
        name: A device name such as ``"NVIDIA H200"`` (``torch.cuda.get_device_name()``).
        dtype: The matmul dtype, or ``"tf32"``.

    Returns:
        The dense peak FLOP/s, or ``None`` when the device or the dtype is not in the table.
    """
    lowered = name.lower()
    for entry in PEAK_FLOPS:
        if re.search(entry.pattern, lowered):
            return entry.peaks.get(dtype)
    return None


def measure_cpu_peak_flops(
    dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5, target_seconds: float = 0.05
) -> float:
    """Measure the CPU's matmul FLOP/s in this process, as the best of ``repeats`` timed GEMMs.

    A datasheet number for a CPU depends on the cores we are given and on the clock under load, so we
    measure what ``torch.mm`` achieves here with the current ``torch.get_num_threads()``. Taking the
    best of several runs approximates the peak; the result is cached per (dtype, size, threads).

    The side of the square matrices grows from 256 by doubling up to ``size`` while one GEMM takes
    less than ``target_seconds``: large enough to reach the peak where the dtype is fast, and cheap
    where it is emulated. (A 2048² bf16 GEMM takes ~100 s on an AVX2-only CPU without native bf16,
    which stalled the start of every bf16-mixed CPU fit for minutes: docs/perf-log.md, 2026-12-02.)

    Args:
        dtype: Matmul dtype.
        size: Largest side of the square matrices (2·side³ FLOPs per GEMM).
        repeats: Number of timed GEMMs at the chosen side after the sizing runs.
        target_seconds: A GEMM this long is large enough to measure.

    Returns:
        Peak FLOP/s.
    """
    key = (dtype, size, torch.get_num_threads())
    if key in _CPU_PEAK_CACHE:
        return _CPU_PEAK_CACHE[key]
    generator = torch.Generator().manual_seed(0)
    side = min(256, size)
    while True:
        a = torch.randn(side, side, generator=generator).to(dtype)
        b = torch.randn(side, side, generator=generator).to(dtype)
        out = torch.empty(side, side, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up: allocator, thread pool, kernel selection
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = time.perf_counter() - start
        if best >= target_seconds or side >= size:
            break
        side = min(2 * side, size)
    for _ in range(max(1, repeats) - 1):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    result = 2.0 * side**3 / max(best, 1e-9)
    _CPU_PEAK_CACHE[key] = result
    return result


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Return the dense peak FLOP/s of one device for matmuls in ``dtype``.

    Args:
        device: The device the model runs on.
        dtype: The matmul dtype (see :func:`precision_to_dtype`).

    Returns:
        Peak FLOP/s from :data:`PEAK_FLOPS` on CUDA, measured on CPU, ``None`` when unknown.
    """
    if device.type == "cuda":
        key: torch.dtype | str = dtype
        if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            key = TF32
        return peak_flops_for_device_name(torch.cuda.get_device_name(device), key)
    if device.type == "cpu":
        return measure_cpu_peak_flops(dtype)
    return None


def transformer_flops_per_token(
    n_params_non_embedding: int, n_layers: int, d_model: int, context: int, causal: bool = True
) -> float:
    """Training FLOPs per token of a decoder-only transformer (forward + backward).

    Convention (perf-anchors §2, as in Kaplan et al. / PaLM / nanoGPT):

    * ``6 · N`` for the weight matmuls, N = non-embedding parameters (2 FLOPs per multiply-add,
      forward 1× and backward 2×);
    * plus attention scores and mixing (QKᵀ and AV) = ``12 · L · d · T`` counted over the full T×T
      square; ``causal=True`` counts half of it, the work a causal kernel actually does.

    The embedding lookup is free and the LM head of a 502-unit vocabulary is negligible, so neither is
    counted. For the Slam model (Qwen2.5-0.5B body, N ≈ 357.9M, L 24, d 896, T 1024, causal) this
    gives 2.147 + 0.132 ≈ 2.28 GFLOP/token, the canonical "2.3 GF" of perf-anchors §2.

    Args:
        n_params_non_embedding: N, e.g. from :func:`count_params`.
        n_layers: Number of transformer blocks L.
        d_model: Attention width d (heads × head dim).
        context: Sequence length T the model is trained on.
        causal: Count half of the attention square.

    Returns:
        FLOPs per trained token.
    """
    attention = 12.0 * n_layers * d_model * context
    if causal:
        attention /= 2.0
    return 6.0 * n_params_non_embedding + attention


def count_params(model: nn.Module, exclude_embeddings: bool = True) -> int:
    """Count the parameters of a model, by default without its embeddings.

    Shared (tied) parameters are counted once. "Embeddings" are every ``nn.Embedding`` (token and
    learned position tables) and, for a Hugging Face model, its output embeddings (the LM head), which
    are a lookup table in the FLOPs convention of :func:`transformer_flops_per_token` whether tied
    or not. Works on models built on the ``meta`` device.

    Args:
        model: A Hugging Face causal LM or any module.
        exclude_embeddings: Leave out embedding and LM-head parameters.

    Returns:
        Number of parameters.
    """
    excluded: set[int] = set()
    if exclude_embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                excluded.update(id(p) for p in module.parameters())
        get_output = getattr(model, "get_output_embeddings", None)
        head = get_output() if callable(get_output) else None
        if isinstance(head, nn.Module):
            excluded.update(id(p) for p in head.parameters())
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def hf_flops_per_token(model: nn.Module, context: int, causal: bool = True) -> float:
    """:func:`transformer_flops_per_token` for a Hugging Face causal LM, read from its config.

    Args:
        model: A ``transformers`` model with ``config.num_hidden_layers`` and ``config.hidden_size``.
        context: Training sequence length.
        causal: Count half of the attention square.

    Returns:
        FLOPs per trained token.
    """
    config = model.config  # type: ignore[attr-defined]
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None)
    # Attention width is heads × head_dim; it equals hidden_size for Qwen2 but not for every model.
    width = heads * head_dim if heads and head_dim else config.hidden_size
    return transformer_flops_per_token(count_params(model), config.num_hidden_layers, width, context, causal)
