"""BenchmarkEvaluation under DDP: every rank tokenises and scores its share, no rank waits on rank 0
alone, and the scores equal one process's exactly (issue 12, item 8).

A real 2-process gloo fit (tests/callbacks/ddp_benchmark_script.py) on a synthetic speech corpus
built here first, scored at steps 0 and 2 on three spoken benchmarks.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from slamming.data.pretrain import SyntheticSpeechDataModule
from tests.conftest import TINY_BACKBONE
from tests.tasks.test_evaluate import SMALL_SPEECH, K, _specs, benchmarks, engine  # noqa: F401 (fixtures)

BATCH = 3


def _run(tmp_path: Path, specs: list[dict], name: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the 2-process fit on ``specs``; returns the finished process and its output folder."""
    cache = tmp_path / "cache"
    data = SyntheticSpeechDataModule(
        cache_dir=str(cache), progress=False, context_length=64, batch_size=4, **SMALL_SPEECH["init_args"]
    )
    data.prepare_data()  # built once here; both ranks reuse it
    out = tmp_path / name
    out.mkdir()
    settings = {
        "cache_dir": str(cache),
        "data": SMALL_SPEECH["init_args"],
        "backbone": TINY_BACKBONE["init_args"],
        "num_units": K,
        "specs": specs,
        "every_n_steps": 2,
        "batch_size": BATCH,
        "max_steps": 2,
    }
    (out / "settings.json").write_text(json.dumps(settings))
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "src"), env.get("PYTHONPATH", "")])
    env.pop("MASTER_PORT", None)  # let Lightning pick a free port
    script = Path(__file__).with_name("ddp_benchmark_script.py")
    # A rank left waiting in a collective would block for ever: the timeout makes that a failure.
    result = subprocess.run(
        [sys.executable, str(script), str(out), str(out / "settings.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result, out


def test_two_ranks_share_the_work_and_score_exactly_as_one_process(
    tmp_path: Path,
    benchmarks: tuple,  # noqa: F811
) -> None:
    root, _ = benchmarks
    specs = _specs(root)[:3]  # sWUGGY, sBLIMP, sSC
    result, out = _run(tmp_path, specs, "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    pairs = ranks[0]["steps"]["0"]["pairs"]
    assert sorted(pairs) == ["sBLIMP", "sSC", "sWUGGY"] and all(n > 0 for n in pairs.values())
    files = 2 * sum(pairs.values())
    # Tokenising: every other file on each rank.
    assert [r["prepared_files"] for r in ranks] == [math.ceil(files / 2), files // 2]
    # Scoring: the batches one process would run (each benchmark's 2n sides, BATCH at a time), in
    # benchmark order, dealt out in turn; names are in the callback's order (the specs' order).
    order = [name for name in ranks[0]["steps"]["0"]["scores"]]
    sizes = [min(BATCH, 2 * pairs[name] - i) for name in order for i in range(0, 2 * pairs[name], BATCH)]
    expected_work = [
        {"files": ranks[0]["prepared_files"], "sequences": sum(sizes[0::2]), "batches": len(sizes[0::2])},
        {"files": ranks[1]["prepared_files"], "sequences": sum(sizes[1::2]), "batches": len(sizes[1::2])},
    ]
    assert sizes[1::2] and abs(sum(sizes[0::2]) - sum(sizes[1::2])) <= BATCH  # about half each
    for step in ("0", "2"):
        assert sorted(ranks[0]["steps"]) == sorted(ranks[1]["steps"]) == ["0", "2"]
        assert [r["steps"][step]["work"] for r in ranks] == expected_work
        reference = ranks[0]["steps"][step]["reference"]
        for name in order:
            # Bit for bit: the gathered scores on both ranks equal one process's.
            for rank in ranks:
                assert np.array_equal(
                    np.asarray(rank["steps"][step]["scores"][name]), np.asarray(reference[name])
                )
    # Trained between the two scorings: the step-2 scores differ from the step-0 ones.
    assert any(ranks[0]["steps"]["0"]["scores"][n] != ranks[0]["steps"]["2"]["scores"][n] for n in order)
    assert ranks[0]["results"] == ranks[1]["results"]
    assert result.stderr.count("BenchmarkEvaluation: tokenised ") == 1  # rank 0 says it, once


def test_a_file_that_fails_on_one_rank_stops_both(tmp_path: Path, benchmarks: tuple) -> None:  # noqa: F811
    """A non-audio file in rank 1's share: rank 1 raises its error, rank 0 one line naming rank 1
    and the file, and the run ends instead of leaving rank 0 waiting in the gather."""
    root, _ = benchmarks
    folder = tmp_path / "tSC"
    folder.mkdir()
    noise = np.random.default_rng(0).normal(0.0, 0.1, size=(2, 2, 8000)).astype(np.float32)
    for index in range(2):
        for column, side in enumerate(("correct", "incorrect")):
            sf.write(folder / f"s{index}_{side}.wav", noise[index, column], 16000)
    # Files in order: positives (s0, s1), then negatives (s0, s1): index 1 is rank 1's.
    bad = folder / "s1_correct.wav"
    bad.write_text("not audio")
    result, out = _run(tmp_path, [{"kind": "storycloze", "path": str(folder), "name": "broken"}], "broken")
    assert result.returncode != 0
    assert not list(out.glob("rank*.json"))
    lines = [line for line in result.stderr.splitlines() if "failed while tokenising the benchmarks" in line]
    assert lines and all("rank 1 failed" in line and str(bad) in line for line in lines), result.stderr[
        -3000:
    ]
