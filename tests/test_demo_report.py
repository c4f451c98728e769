"""The demo report's benchmark table: accuracies with 95 % intervals and DPO's paired difference."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slamming.eval.intervals import accuracy_interval, encode_outcomes, paired_difference
from slamming.eval.likelihood import summarize_pairs

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "demo_report.py"


def _report_module():
    spec = importlib.util.spec_from_file_location("demo_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(
    run: Path, outcomes: dict[str, np.ndarray], score: str = "mean log-likelihood per phoneme"
) -> None:
    benchmarks = {}
    for name, values in outcomes.items():
        summary = summarize_pairs(values, [str(i) for i in range(len(values))], [""] * len(values), False)
        benchmarks[name] = {**summary, "outcomes": encode_outcomes(values)}
    (run / "hf_model").mkdir(parents=True)
    (run / "hf_model" / "eval-results.json").write_text(
        json.dumps({"benchmarks": benchmarks, "score": score})
    )


def test_table_prints_intervals_and_marks_a_difference_that_excludes_zero(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    before = {
        "topic": (rng.random(1000) < 0.6).astype(float),
        "spoken": (rng.random(1000) < 0.5).astype(float),
    }
    after = {name: values.copy() for name, values in before.items()}
    after["topic"][np.flatnonzero(before["topic"] == 0)[:150]] = 1.0  # 150 wrong pairs put right
    after["spoken"][:5] = 1 - before["spoken"][:5]  # five pairs flipped either way
    _results(tmp_path / "pre", before)
    _results(tmp_path / "dpo", after)
    _report_module().report_benchmarks({"pretrained": tmp_path / "pre", "after DPO": tmp_path / "dpo"})
    out = capsys.readouterr().out
    assert "[95 % interval], mean log-likelihood per phoneme; chance 50)" in out  # the score the files name
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for name in ("topic", "spoken"):
        low, high = accuracy_interval(before[name])
        assert f"{100 * before[name].mean():.2f} [{100 * low:.1f}, {100 * high:.1f}]" in lines[name]
        mean, low, high = paired_difference(before[name], after[name])
        assert f"{100 * mean:+.2f} [{100 * low:+.1f}, {100 * high:+.1f}]" in lines[name]
    assert after["topic"].mean() == pytest.approx(before["topic"].mean() + 0.15)
    assert lines["topic"].endswith("*") and not lines["spoken"].endswith("*")


def test_stage_times_are_recorded_and_reported(tmp_path: Path, capsys) -> None:
    stage = SCRIPT.parent / "stage.sh"
    subprocess.run(["bash", str(stage), "evaluation (pretrained)", "sleep", "1"], cwd=tmp_path, check=True)
    subprocess.run(["bash", str(stage), "dpo", "true"], cwd=tmp_path, check=True)
    # A failing stage fails `make demo` and records nothing.
    failed = subprocess.run(["bash", str(stage), "broken", "false"], cwd=tmp_path)
    assert failed.returncode != 0
    tsv = tmp_path / "runs" / "demo-stages.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert [name for name, _ in rows] == ["evaluation (pretrained)", "dpo"]
    assert int(rows[0][1]) >= 1 and int(rows[1][1]) >= 0  # whole seconds: a 1-second sleep shows 1 or more
    tsv.write_text("setup\t65\npretraining\t535\nnot a row\n")
    _report_module().report_stages(tsv)
    out = capsys.readouterr().out
    assert "setup         1 min 05 s   11 %" in out
    assert "pretraining   8 min 55 s   89 %" in out
    assert "total        10 min 00 s" in out
