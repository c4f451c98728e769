"""``bench/run.py --quick``: the benchmark's building blocks at a toy size (not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_corpus import packing_stats, synthetic_documents, write_bench_corpus  # noqa: E402
from bench_report import Row  # noqa: E402
from bf16_bench import bf16_log_section, bf16_rows, run_bf16_bench  # noqa: E402


def test_synthetic_documents_are_deduplicated_and_in_range() -> None:
    docs = synthetic_documents(50, num_units=7, min_len=5, max_len=40, seed=3)
    assert all(5 <= len(d) <= 40 for d in docs)
    assert all(int(d.min()) >= 0 and int(d.max()) < 7 for d in docs)
    assert all(np.all(d[1:] != d[:-1]) for d in docs)


def test_packing_stats_counts(tmp_path: Path) -> None:
    corpus = write_bench_corpus(tmp_path / "c", num_documents=200, num_units=10, min_len=5, max_len=60)
    stats = packing_stats(corpus, context=32, batch_size=4, num_batches=10)
    assert stats.packed_real_frac == 1.0  # packed windows hold no PAD at all
    # Targets lost: one per document boundary inside a window, so a little below 1.
    assert 0.85 < stats.packed_target_frac < 1.0
    assert 0.0 < stats.padded_context_frac <= stats.padded_longest_frac <= 1.0


def test_row_status() -> None:
    assert Row("r", 1.2, (">=", 1.0)).status == "PASS"
    assert Row("r", 0.03, ("<=", 0.02)).status == "MISS"
    assert Row("r", True, ("==", True)).status == "PASS"
    assert Row("r", 5.0).status == "info"
    assert Row("r", None, (">=", 1.0)).status == "n/a"


def _run_quick(part: str, results_dir: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """``bench/run.py --quick --only PART --threads 1``; asserts that it exits 0."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", part, "--threads", "1",
         "--results-dir", str(results_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_quick_benchmark_result(tmp_path: Path) -> None:
    log = REPO / "docs" / "perf-log.md"
    before = log.read_text() if log.exists() else None
    proc = _run_quick("pretrain", tmp_path, timeout=600)
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert result["quick"] is True and result["config"]["layers"] == 1
    rows = {r["name"]: r for r in result["rows"]}
    ratio = rows["tokens/s ours ÷ HF Trainer (median ratio)"]
    assert ratio["value"] > 0 and ratio["status"] in ("PASS", "MISS") and ratio["goal"] == [">=", 1.0]
    real = next(r for name, r in rows.items() if name.startswith("packed: real-id fraction"))
    assert 0 < real["value"] <= 1
    assert 0 <= rows["data-wait fraction, timed steps (median)"]["value"] < 1
    # Identical work on both sides: same batches, same losses, one thread count.
    assert rows["same batches on both sides (CRC)"]["value"] is True
    assert rows["max loss difference ours vs HF, any step"]["value"] <= 1e-4
    assert rows["one torch thread count throughout"]["value"] is True
    assert len(result["repeats"]) == 2
    for rep in result["repeats"]:
        assert rep["ours"]["tokens_per_s"] > 0 and rep["hf"]["tokens_per_s"] > 0
        assert rep["ours"]["threads"] == [1] and rep["hf"]["threads"] == [1]
        assert rep["ours"]["timed_tokens"] == rep["hf"]["timed_tokens"] > 0
    for name in ("tokens/s ours ÷ HF Trainer (median ratio)", "same batches on both sides (CRC)"):
        assert name in proc.stdout  # the printed table
    assert (log.read_text() if log.exists() else None) == before  # --quick logs nothing


def test_quick_extract_benchmark_result(tmp_path: Path) -> None:
    """``--quick --only extract``: every C11/C12 row is there, plausible, and nothing is logged."""
    log = REPO / "docs" / "perf-log.md"
    before = log.read_text() if log.exists() else None
    proc = _run_quick("extract", tmp_path, timeout=600)  # a hang guard: its speed is not tested here
    (path,) = tmp_path.glob("*-extract.json")
    assert not [p for p in tmp_path.glob("*.json") if p != path]  # the pretraining part did not run
    result = json.loads(path.read_text())
    assert result["quick"] is True and result["config"]["layers"] == 12
    rows = {r["name"]: r for r in result["rows"]}
    for hz in ("50 Hz", "25 Hz"):
        rtf = [
            rows[f"{hz} extraction × real time, {d}"]["value"]
            for d in ("full depth", "stop at layer 11", "stop at layer 9")
        ]
        assert all(0 < v < 1e5 for v in rtf)
        for depth in ("L11", "L9"):
            assert 0.3 < rows[f"{hz} speed-up {depth} ÷ full (median ratio)"]["value"] < 5
        assert 0 < rows[f"{hz} k-means share of L11 extraction"]["value"] < 0.5
    assert rows["50 Hz speed-up L11 ÷ full (median ratio)"]["goal"] == [">=", 1.05]
    assert rows["50 Hz speed-up L9 ÷ full (median ratio)"]["goal"] == [">=", 1.15]
    share = rows["50 Hz k-means share of L11 extraction"]
    assert share["goal"] == ["<=", 0.02] and share["status"] in ("PASS", "MISS")
    ratio = rows["k-means assign ÷ sklearn predict (median ratio)"]
    assert ratio["value"] > 0 and ratio["goal"] == [">=", 1.0] and ratio["status"] in ("PASS", "MISS")
    assert rows["k-means frames/s: KMeans.assign (torch, median)"]["value"] > 0
    assert rows["k-means frames/s: sklearn predict (median)"]["value"] > 0
    # Same centroids on both sides: float32 near-ties aside, the labels agree.
    assert rows["k-means labels equal to sklearn (fraction)"]["value"] >= 0.99
    assert len(result["hz50"]["seconds"]["full"]) == 2 and len(result["assign"]["ratios"]) == 2
    assert result["hz50"]["frames"]["full"] == result["hz50"]["frames"]["L9"] > 0
    assert "k-means assign ÷ sklearn predict (median ratio)" in proc.stdout
    assert (log.read_text() if log.exists() else None) == before  # --quick logs nothing


def test_quick_dpo_benchmark_result(tmp_path: Path) -> None:
    """``--quick --only dpo``: the C8/C9 rows are there, plausible, identical work, nothing logged."""
    log = REPO / "docs" / "perf-log.md"
    before = log.read_text() if log.exists() else None
    proc = _run_quick("dpo", tmp_path, timeout=600)  # a hang guard: its speed is not tested here
    (path,) = tmp_path.glob("*-dpo.json")
    assert not [p for p in tmp_path.glob("*.json") if p != path]  # no other part ran
    result = json.loads(path.read_text())
    assert result["quick"] is True and result["config"]["layers"] == 1
    rows = {r["name"]: r for r in result["rows"]}
    ratio = rows["DPO step time precomputed ÷ live ref (median ratio)"]
    assert 0 < ratio["value"] < 2 and ratio["goal"] == ["<=", 0.8] and ratio["status"] in ("PASS", "MISS")
    pre = next(
        r
        for name, r in rows.items()
        if name.startswith("precompute tok/s (batch 8) ÷ training tok/s (batch 4)")
    )
    assert pre["value"] > 0 and pre["goal"] == [">=", 2.5] and pre["status"] in ("PASS", "MISS")
    for name in ("step ms, live reference (median)", "step ms, precomputed reference (median)"):
        assert rows[name]["value"] > 0
    assert 0 < rows["real ÷ computed positions, timed training batches"]["value"] <= 1
    # Identical work on both sides: same batches, the precomputed reference equals the live one.
    assert rows["same batches on both sides (CRC)"]["value"] is True
    assert rows["loss difference live vs precomputed, first step"]["value"] <= 1e-5
    assert rows["one torch thread count throughout"]["value"] is True
    assert len(result["repeats"]) == 2
    assert [r["first"] for r in result["repeats"]] == ["live", "precomputed"]  # the order alternates
    for rep in result["repeats"]:
        assert rep["live"]["timed_tokens"] == rep["precomputed"]["timed_tokens"] > 0
        assert len(rep["live"]["step_times"]) == len(rep["precomputed"]["step_times"]) == 3
        assert result["config"]["steps"] == 3
        assert len(rep["step_ratios"]) == 3 and all(x > 0 for x in rep["step_ratios"])
        # The chunked precompute covers the split exactly as the whole-split call does.
        assert rep["precompute"]["tokens"] == rep["precompute"]["whole_split"]["tokens"] > 0
        assert rep["live"]["threads"] == rep["precomputed"]["threads"] == [1]
    assert "DPO step time precomputed ÷ live ref (median ratio)" in proc.stdout
    assert (log.read_text() if log.exists() else None) == before  # --quick logs nothing


def test_quick_bf16_rounding_benchmark() -> None:
    """fp32 master weights keep every AdamW update; bf16 weights lose most of the small ones."""
    result = run_bf16_bench(quick=True)
    runs = {(r["precision"], r["lr"]): r for r in result["runs"]}
    assert set(runs) == {(p, lr) for p in ("bf16-true", "bf16-mixed") for lr in (5e-6, 1.75e-5, 5e-5, 1e-3)}
    for (precision, _), run in runs.items():
        dtype = "bfloat16" if precision == "bf16-true" else "float32"
        assert run["param_dtype"] == run["state_dtype"] == dtype
        # Embedding 502 x 64 = 32,128; q 64 x 64 + 64, k and v 64 x 32 + 32 (2 KV heads of 16),
        # o 64 x 64, MLP 3 x 64 x 256, three norms of 64: 93,888 elements in all.
        assert run["elements"] == 93_888 and len(run["losses"]) == 4
    assert all(runs[("bf16-mixed", lr)]["fraction_changed"] >= 0.99 for lr in (5e-6, 1.75e-5, 5e-5, 1e-3))
    true = [runs[("bf16-true", lr)]["fraction_changed"] for lr in (5e-6, 1.75e-5, 5e-5, 1e-3)]
    assert true == sorted(true) and true[0] < 0.2 and true[-1] > 0.8  # fewer weights move at lower rates
    # Every run starts from the same weights and sees the same batches: the first losses agree.
    first = [r["losses"][0] for r in runs.values()]
    assert max(first) - min(first) < 0.05  # bf16 and fp32 forwards of one initial model
    rows = {r.name: r for r in bf16_rows(result)}
    assert rows["lr 5e-06: bf16-true ÷ bf16-mixed"].value == pytest.approx(
        true[0] / runs[("bf16-mixed", 5e-6)]["fraction_changed"]
    )
    assert rows["lr 5e-06: fraction changed by one step, bf16-mixed"].status == "PASS"
    section = bf16_log_section(result, "bench/results/x-bf16.json")
    assert "bf16 rounding" in section and "lr 0.001: bf16-true ÷ bf16-mixed" in section


def test_quick_audio_benchmark_result() -> None:
    """``audio_bench.run_audio_bench(quick=True)``: both decoders gave the same samples, every row is there."""
    from audio_bench import audio_log_section, audio_rows, run_audio_bench

    log = REPO / "docs" / "perf-log.md"
    before = log.read_text() if log.exists() else None
    result = run_audio_bench(quick=True)
    assert result["quick"] is True and sum(result["files"].values()) == 5
    rows = {r.name: r for r in audio_rows(result)}
    # Identical work: the same samples from both decoders, before and after mixing and resampling.
    for name in (
        "max |Δ| decoded samples, AudioDecoder vs soundfile",
        "max |Δ| 16 kHz waveforms, fairseq2 path vs read_audio",
    ):
        assert rows[name].value == 0.0 and rows[name].status == "PASS"
    assert rows["same frame and channel counts, every file"].status == "PASS"
    assert result["equivalence"]["files"] == 5
    for key in ("mix", "decode", *result["files"]):
        for side in ("soundfile", "fairseq2"):
            assert len(result["seconds"][key][side]) == len(result["cpu_seconds"][key][side]) == 2
            assert all(s > 0 for s in result["seconds"][key][side])
    assert 0.1 < rows["mix: fairseq2 ÷ soundfile, wall (median ratio)"].value < 10
    assert rows["mix × real time (wall), soundfile read_audio"].value > 0
    section = audio_log_section(result, None)
    assert section.startswith("## ") and "| mix: fairseq2 ÷ soundfile, CPU time (median ratio)" in section
    assert (log.read_text() if log.exists() else None) == before  # nothing is logged by the bench itself


def test_quick_attention_benchmark_through_run(tmp_path: Path) -> None:
    """`bench/run.py --only attention --quick`: every path measured in its own process, same losses."""
    proc = _run_quick("attention", tmp_path, timeout=300)
    (json_path,) = tmp_path.glob("*-attention.json")
    result = json.loads(json_path.read_text())
    paths = result["paths"]
    assert set(paths) == {"slamming_flex", "sdpa", "eager"}
    assert all(p["tokens_per_s"] > 0 and p["step_peak_rss_growth_bytes"] >= 0 for p in paths.values())
    assert all(paths[name]["path"] == name for name in paths)  # each child ran the path it was asked for
    (guard,) = [r for r in result["rows"] if r["name"].startswith("max loss difference")]
    assert guard["status"] == "PASS" and "FlexAttention ÷ sdpa tokens/s" in proc.stdout
