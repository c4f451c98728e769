"""``bench/run.py --quick``: the benchmark's building blocks at a toy size (not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_corpus import packing_stats, synthetic_documents, write_bench_corpus  # noqa: E402
from bench_report import Row  # noqa: E402


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
