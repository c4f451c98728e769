"""BenchmarkEvaluation: benchmarks scored during pretraining, logged, equal to slamming test (issue 5, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slamming.callbacks.benchmark_eval import BenchmarkEvaluation
from slamming.cli import main
from slamming.errors import SlammingError
from tests.conftest import TINY_BACKBONE, speech_fit_config
from tests.tasks.test_evaluate import SMALL_SPEECH, _specs, _test, benchmarks, engine  # noqa: F401 (fixtures)


def test_scores_every_n_steps_and_equals_slamming_test(tmp_path: Path, benchmarks: tuple) -> None:  # noqa: F811
    root, _ = benchmarks
    specs = _specs(root)[:3]  # sWUGGY, sBLIMP, sSC
    callback = {
        "class_path": "slamming.callbacks.BenchmarkEvaluation",
        "init_args": {"benchmarks": specs, "every_n_steps": 2, "batch_size": 3},
    }
    cfg = speech_fit_config(
        tmp_path,
        name="pre",
        trainer={"max_steps": 4, "val_check_interval": 2, "callbacks": [callback]},
        model={
            "class_path": "slamming.tasks.NextUnitPretraining",
            "init_args": {"backbone": TINY_BACKBONE, "lr": 3e-2},
        },
        data=SMALL_SPEECH,
    )
    main(["fit", "--config", str(cfg)])
    run = tmp_path / "runs" / "pre" / "version_0"
    events = EventAccumulator(str(run))
    events.Reload()
    logged = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for name in ("sWUGGY", "sBLIMP", "sSC"):
        assert sorted(logged[f"bench/{name}/accuracy"]) == [0, 2, 4], name
    assert sorted(logged["bench/sWUGGY/zerospeech_accuracy"]) == [0, 2, 4]
    # The last in-training score equals slamming test on the final checkpoint (same weights, pairs).
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    _test(tmp_path / "eval", ckpt, specs)
    results = json.loads((ckpt.parent / "eval-results.json").read_text())["benchmarks"]
    for name in ("sWUGGY", "sBLIMP", "sSC"):
        assert logged[f"bench/{name}/accuracy"][4] == pytest.approx(results[name]["accuracy"], abs=1e-6), name
    assert logged["bench/sWUGGY/zerospeech_accuracy"][4] == pytest.approx(
        results["sWUGGY"]["zerospeech_accuracy"], abs=1e-6
    )


def test_bad_arguments_are_one_clear_error() -> None:
    with pytest.raises(SlammingError, match="every_n_steps must be >= 1"):
        BenchmarkEvaluation([{"kind": "manifest", "path": "x.jsonl"}], every_n_steps=0)
    with pytest.raises(SlammingError, match="at least one benchmark"):
        BenchmarkEvaluation([])
