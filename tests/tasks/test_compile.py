"""``compile: true`` on the packed path: no recompiles as document boundaries change; eager without a compiler."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from slamming.callbacks.throughput import Throughput
from slamming.cli.lightning import run_lightning
from tests.conftest import fit_config


def _summary(cli) -> dict:
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, Throughput)).summary


def test_compiled_fit_recompiles_at_most_twice_over_50_steps(tmp_path: Path, unit_corpora: dict) -> None:
    """50 optimizer steps of packed windows (every batch has other document boundaries, a validation
    in the middle): dynamo's graph count after the first step may grow by at most 2."""
    cfg = fit_config(
        tmp_path,
        unit_corpora,
        trainer={"max_steps": 50, "val_check_interval": 25, "limit_val_batches": 2},
        model={"init_args": {"compile": True}},
    )
    cli = run_lightning(["fit", "--config", str(cfg)])
    module = cli.model
    assert isinstance(module.model, torch._dynamo.eval_frame.OptimizedModule)
    summary = _summary(cli)
    assert summary["global_step"] == 50 and summary["attention"] == "sdpa"
    assert summary["graphs_compiled"] >= 1  # it really compiled
    assert summary["recompiles"] <= 2, summary


def test_compile_without_a_cpp_compiler_trains_eagerly(
    tmp_path: Path, unit_corpora: dict, caplog: pytest.LogCaptureFixture
) -> None:
    from torch._inductor import config

    cfg = fit_config(tmp_path, unit_corpora, trainer={"max_steps": 3}, model={"init_args": {"compile": True}})
    # inductor's own setting (what $CXX sets at import), patched and restored by torch itself
    with config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-g++"))}):
        with caplog.at_level(logging.WARNING, logger="slamming.models.compiling"):
            cli = run_lightning(["fit", "--config", str(cfg)])
    assert not isinstance(cli.model.model, torch._dynamo.eval_frame.OptimizedModule)
    assert cli.trainer.global_step == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "slamming.models.compiling"]
    assert len(lines) == 1 and "no C++ compiler" in lines[0] and "training eagerly" in lines[0]
