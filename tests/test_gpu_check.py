"""``make gpu-check`` runs ``slamming fit`` on the paper config; its CPU dry run end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_runs_slamming_fit_and_writes_sane_json(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["command"].startswith(f"slamming fit --config {REPO / 'configs' / 'pretrain.yaml'}")
    assert "slamming fit done:" in proc.stdout and "gpu-check: 4 steps, attention sdpa" in proc.stdout
    assert report["dry_run"] is True and report["steps"] == 4 and report["attention_path"] == "sdpa"
    assert report["precision"] == "32-true" and report["compile"] is False
    assert report["tokens_per_s"] > 0 and report["peak_memory_bytes"] is None  # CUDA-only measurement
    assert report["graphs_compiled"] == 0 and report["recompiles"] == 0
    losses = report["attention_losses"]
    assert set(losses) == {"sdpa", "eager", "slamming_flex"}
    assert abs(losses["sdpa"] - math.log(502)) < 0.5  # random init over 502 ids, 4 steps
    assert report["attention_loss_spread"] <= 1e-5  # every path isolates documents the same way
    assert {g["status"] for g in report["goals"].values()} == {"n/a"}  # judged on a GPU only


def test_gpu_run_keeps_every_shipped_setting_but_hardware_and_sizes(tmp_path: Path) -> None:
    """On a GPU only the weights (random, same shapes), data, steps, budget and output folder change."""
    gpu_check = load_script()
    args = gpu_check.fit_args(tmp_path, dry=False, steps=250, minutes=4.0)
    flags = [a for a in args if a.startswith("--")]
    assert flags == [
        "--config", "--model.init_args.backbone", "--model.init_args.export", "--data.init_args.train",
        "--data.init_args.val", "--data.init_args.tokenizer_dir", "--trainer.max_steps", "--trainer.limit_val_batches",
        "--trainer.logger.init_args.save_dir", "--budget.max_gpu_hours",
    ]  # fmt: skip
    shipped = yaml.safe_load((REPO / "configs" / "pretrain.yaml").read_text())["model"]["init_args"][
        "backbone"
    ]
    backbone = json.loads(args[args.index("--model.init_args.backbone") + 1])
    assert (
        backbone["init_args"].pop("base") is None and shipped["init_args"].pop("base") == "Qwen/Qwen2.5-0.5B"
    )
    arch = backbone["init_args"].pop("config")
    assert arch["hidden_size"] == 896 and arch["num_hidden_layers"] == 24 and arch["num_key_value_heads"] == 2
    assert backbone == shipped
