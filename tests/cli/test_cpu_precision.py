"""A bf16-mixed CPU run trains in fp32 where the CPU emulates bf16, and says so in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from slamming.cli import main
from slamming.cli.lightning import KEEP_PRECISION_ENV, cpu_precision
from slamming.models import flops
from tests.conftest import fit_config


def test_bf16_autocast_is_kept_only_where_bf16_gemms_are_faster() -> None:
    assert cpu_precision("bf16-mixed", bf16_flops=1.7e9, fp32_flops=68e9) == "32-true"  # AVX2: emulated
    assert cpu_precision("bf16-mixed", bf16_flops=300e9, fp32_flops=180e9) == "bf16-mixed"  # AVX-512-bf16
    assert cpu_precision("bf16", bf16_flops=1e9, fp32_flops=2e9) == "32-true"
    # bf16-true asks for bf16 weights, and fp32 stays fp32, whatever the rates.
    assert cpu_precision("bf16-true", bf16_flops=1e9, fp32_flops=2e9) == "bf16-true"
    assert cpu_precision("32-true", bf16_flops=1e9, fp32_flops=2e9) == "32-true"


def _fit(tmp_path: Path, unit_corpora: dict[str, Path], monkeypatch: pytest.MonkeyPatch, bf16: float) -> str:
    """A 2-step bf16-mixed CPU fit with the CPU's GEMM rates given; returns the precision it ran with."""
    threads = torch.get_num_threads()
    # The measured rates, as measure_cpu_peak_flops caches them (dtype, largest side, threads).
    rates = {(torch.bfloat16, 2048, threads): bf16, (torch.float32, 2048, threads): 68e9}
    monkeypatch.setattr(flops, "_CPU_PEAK_CACHE", rates)
    cfg = fit_config(tmp_path, unit_corpora, trainer={"max_steps": 2, "precision": "bf16-mixed"})
    main(["fit", "--config", str(cfg)])
    saved = yaml.safe_load(next((tmp_path / "runs").rglob("config.yaml")).read_text())
    return saved["trainer"]["precision"]


def test_an_emulating_cpu_trains_in_fp32_and_says_why(
    tmp_path: Path,
    unit_corpora: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(KEEP_PRECISION_ENV, raising=False)
    assert _fit(tmp_path, unit_corpora, monkeypatch, bf16=1.7e9) == "32-true"
    lines = [line for line in capsys.readouterr().err.splitlines() if "trainer.precision" in line]
    assert lines == [
        "INFO slamming.cli.lightning: trainer.precision bf16-mixed -> 32-true: this CPU multiplies bf16 at "
        "1.7 GFLOP/s against 68.0 GFLOP/s in fp32 (no native bf16), so bf16 autocast would slow every step; "
        "SLAMMING_KEEP_PRECISION=1 keeps bf16-mixed"
    ]


def test_a_native_bf16_cpu_keeps_bf16_mixed(
    tmp_path: Path, unit_corpora: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEEP_PRECISION_ENV, raising=False)
    assert _fit(tmp_path, unit_corpora, monkeypatch, bf16=300e9) == "bf16-mixed"


def test_the_environment_keeps_the_configured_precision(
    tmp_path: Path, unit_corpora: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEEP_PRECISION_ENV, "1")
    assert _fit(tmp_path, unit_corpora, monkeypatch, bf16=1.7e9) == "bf16-mixed"
