"""Peak-FLOPs table, CPU peak measurement and model FLOPs per token."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.models.flops import (
    count_params,
    hf_flops_per_token,
    measure_cpu_peak_flops,
    peak_flops,
    peak_flops_for_device_name,
    precision_to_dtype,
    transformer_flops_per_token,
)


def slam_model(tie: bool = True) -> Qwen2ForCausalLM:
    """The Slam model's shape (Qwen2.5-0.5B body, 500 units + 2 specials), on the meta device."""
    config = Qwen2Config(
        vocab_size=502,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    with torch.device("meta"):
        return Qwen2ForCausalLM(config)


def test_slam_model_has_358m_non_embedding_params_and_2_3_gflops_per_token() -> None:
    model = slam_model()
    # Per layer, by hand: q 896²+896 (bias), k and v 896·128+128 each (2 KV heads × 64), o 896²,
    # SwiGLU 3·896·4864, two RMSNorms 2·896; plus the final norm. Embeddings are left out.
    per_layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896
    expected = 24 * per_layer + 896
    n = count_params(model)
    assert n == expected == 357_898_112
    assert count_params(model, exclude_embeddings=False) == n + 502 * 896  # tied: counted once

    flops = transformer_flops_per_token(n, n_layers=24, d_model=896, context=1024, causal=True)
    assert flops == 6 * n + 6 * 24 * 896 * 1024
    assert flops == pytest.approx(2.3e9, rel=0.05)  # perf-anchors §2 canonical figure
    full = transformer_flops_per_token(n, 24, 896, 1024, causal=False)
    assert full - flops == 6 * 24 * 896 * 1024  # causal counts half of the 12·L·d·T square
    assert hf_flops_per_token(model, context=1024) == flops


def test_untied_head_is_excluded_like_the_embedding() -> None:
    tied, untied = slam_model(tie=True), slam_model(tie=False)
    assert count_params(untied) == count_params(tied)
    assert count_params(untied, exclude_embeddings=False) == count_params(tied) + 2 * 502 * 896


@pytest.mark.parametrize(
    "name, dtype, expected",
    [
        ("NVIDIA H200", torch.bfloat16, 989e12),
        ("NVIDIA H200 NVL", torch.bfloat16, 836e12),
        ("NVIDIA GH200 480GB", torch.bfloat16, 989e12),
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989e12),
        ("NVIDIA H100 PCIe", torch.float16, 756e12),
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),
        ("NVIDIA A100 80GB PCIe", torch.float32, 19.5e12),
        ("NVIDIA A10", torch.bfloat16, 125e12),  # not matched by "a100"
        ("NVIDIA RTX A5000", torch.bfloat16, 111.1e12),
        ("NVIDIA RTX A5000", torch.float32, 27.8e12),
        ("NVIDIA L4", torch.bfloat16, 121e12),
        ("NVIDIA L40S", torch.bfloat16, 362.05e12),  # not matched by "l4"
        ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165.2e12),
        ("Tesla T4", torch.bfloat16, None),  # Turing has no bf16 tensor cores
        ("NVIDIA A10G", torch.bfloat16, None),  # deliberately not in the table
        ("Some Future GPU", torch.bfloat16, None),
    ],
)
def test_peak_table_lookup(name: str, dtype: torch.dtype, expected: float | None) -> None:
    assert peak_flops_for_device_name(name, dtype) == expected


def test_precision_flags_map_to_matmul_dtypes() -> None:
    assert precision_to_dtype("bf16-true") is torch.bfloat16
    assert precision_to_dtype("bf16-mixed") is torch.bfloat16
    assert precision_to_dtype("16-mixed") is torch.float16
    assert precision_to_dtype("32-true") is torch.float32


def test_cpu_peak_is_measured_once_and_plausible() -> None:
    first = measure_cpu_peak_flops(torch.float32, size=256, repeats=3)
    # A laptop/server CPU core does 1e9–1e11 FLOP/s; a handful of cores stays far below 1e13.
    assert 1e8 < first < 1e13
    assert measure_cpu_peak_flops(torch.float32, size=256, repeats=3) == first  # cached, not re-timed
    assert peak_flops(torch.device("cpu"), torch.float32) == measure_cpu_peak_flops(torch.float32)
    assert peak_flops(torch.device("meta"), torch.float32) is None


def test_attention_width_follows_head_dim_when_it_differs_from_hidden_size() -> None:
    config = Qwen2Config(
        vocab_size=10,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        head_dim=32,
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    # q and o project 64 ↔ 4 heads × 32 = 128, so the attention square is 128 wide, not 64.
    expected = transformer_flops_per_token(count_params(model), n_layers=2, d_model=128, context=256)
    assert hf_flops_per_token(model, context=256) == expected


def test_cuda_peak_uses_the_device_name_and_tf32_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    cuda = torch.device("cuda", 0)
    assert peak_flops(cuda, torch.bfloat16) == 312e12
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert peak_flops(cuda, torch.float32) == 19.5e12
        torch.set_float32_matmul_precision("high")  # fp32 matmuls then run as TF32 on tensor cores
        assert peak_flops(cuda, torch.float32) == 156e12
    finally:
        torch.set_float32_matmul_precision(previous)


class _StepClock:
    """A perf_counter that advances a fixed step per call (two calls time one GEMM)."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize(
    ("gemm_seconds", "expected_side"),
    [(0.25, 256), (0.001, 1024)],  # slow dtype: stop at the first side; fast: grow to the maximum
)
def test_cpu_peak_gemm_grows_only_while_a_gemm_is_quick(
    monkeypatch: pytest.MonkeyPatch, gemm_seconds: float, expected_side: int
) -> None:
    from slamming.models import flops

    monkeypatch.setattr(flops, "_CPU_PEAK_CACHE", {})
    monkeypatch.setattr(flops, "time", _StepClock(gemm_seconds))
    peak = flops.measure_cpu_peak_flops(torch.float32, size=1024, repeats=3, target_seconds=0.05)
    assert peak == 2.0 * expected_side**3 / gemm_seconds
