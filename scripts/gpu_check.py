#!/usr/bin/env python3
"""``make gpu-check``: ``slamming fit --config configs/pretrain.yaml`` on one GPU for 3–4 minutes.

Runs the paper's pretraining config through the real LightningCLI with overrides only for what a
check must change: random weights of the 358M Slam architecture (Qwen2.5-0.5B shapes, no
download), a synthetic 500-unit corpus written here (speech-like document lengths), a few hundred
steps, a 4-minute compute budget, and a scratch output folder. Everything else is as shipped:
precision, ``compile``, ``attn_implementation: auto``, micro-batch 8 × 16 accumulation at context
1024, fused AdamW, clipping, the budget and throughput callbacks.

It prints and writes ``$OUT/gpu_check.json`` (``./gpu_check.json`` without ``$OUT``): non-pad
tokens/s and MFU (from the Throughput callback, against the device's dense bf16 peak), peak CUDA
memory, the attention path ``auto`` chose, the graphs ``torch.compile`` built and the recompiles
after the first step, and on CUDA the loss of one batch through every attention path that runs there
(flash varlen, FlexAttention, sdpa with the 4-D mask), which must agree.

The GPU machine has its own torch and transformers; Lightning, jsonargparse and tensorboardX come
as wheels made here with ``make gpu-wheels`` (carried as ``.gpu-wheels``; ``make gpu-check``
installs them there). ``--dry-run``: CPU, a tiny model in fp32, context 64, 4 steps, compile off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: What `slamming fit` needs beyond torch, numpy and transformers (the GPU machine's own): the wheel
#: to install (`make gpu-wheels` downloads them here into .gpu-wheels) unless one of the modules imports.
FIT_PACKAGES = {
    "lightning": ("lightning",), "lightning_utilities": ("lightning_utilities",),
    "torchmetrics": ("torchmetrics",), "jsonargparse": ("jsonargparse",),
    "docstring_parser": ("docstring_parser",), "typeshed_client": ("typeshed_client",),
    "tensorboardx": ("tensorboard", "tensorboardX"), "protobuf": ("google.protobuf",), "soundfile": ("soundfile",),
}  # fmt: skip


def install_missing(wheels: Path = REPO / ".gpu-wheels") -> list[str]:
    """Install, from the carried wheels and without dependencies, the fit packages this Python lacks."""
    import importlib.util
    import subprocess

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ModuleNotFoundError:
            return True

    names = [wheel for wheel, modules in FIT_PACKAGES.items() if all(missing(m) for m in modules)]
    files = [f for name in names for f in sorted(wheels.glob(f"{name}-*.whl"), key=lambda p: p.name.lower())]
    if names and len(files) < len(names):
        sys.exit(f"gpu-check: {', '.join(names)} not installed and not all in {wheels}; run `make gpu-wheels` "
                 "where PyPI is reachable and carry .gpu-wheels")  # fmt: skip
    if files:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", *map(str, files)], check=True
        )
    return names


NUM_UNITS = 500
# The paper's model: the Qwen2.5-0.5B architecture with random weights, RoPE θ 10,000 (set by the config).
# fmt: off
SLAM_ARCH = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=32768,
                 rms_norm_eps=1e-6)
# fmt: on
TINY_ARCH = dict(SLAM_ARCH, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
GOALS = {"tokens_per_s": 175_000.0, "mfu": 0.40}  # an H200 (perf-anchors §8b G1/G2)
IDENTITY = {"kind": "synthetic", "name": "gpu-check", "k": NUM_UNITS, "frame_rate": 25.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run slamming fit on the paper config for a few minutes.")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, context 64, 4 steps, compile off")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (GPU 250, dry run 4)")
    p.add_argument("--minutes", type=float, default=4.0, help="compute budget of the fit (GPU)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json)")
    return p.parse_args(argv)


def write_corpus(path: Path, tokens: int, context: int, seed: int) -> Path:
    """Random unit documents with LibriSpeech-like lengths (50–1200 units at context 1024, Beta(2,2))."""
    from slamming.data.corpus.writer import CorpusWriter

    rng = np.random.default_rng(seed)
    lo, hi = max(2, round(50 * context / 1024)), max(4, round(1200 * context / 1024))
    with CorpusWriter(path, tokenizer=IDENTITY, num_units=NUM_UNITS) as writer:
        written = 0
        while written < tokens:
            length = lo + int(round((hi - lo) * rng.beta(2.0, 2.0)))
            units = np.cumsum(rng.integers(1, NUM_UNITS, size=length)) % NUM_UNITS  # no repeats in a row
            writer.add(units, durations=np.ones(length, dtype=np.int64))
            written += length
    return path


def fit_args(work: Path, dry: bool, steps: int, minutes: float) -> list[str]:
    """``slamming fit`` arguments: the shipped config plus the check's overrides."""
    import yaml

    config = REPO / "configs" / "pretrain.yaml"
    backbone = yaml.safe_load(config.read_text())["model"]["init_args"]["backbone"]
    # The shipped builder (RoPE θ, dropout, attention, dtype) with random weights of the same shapes.
    backbone["init_args"].update(base=None, config=TINY_ARCH if dry else SLAM_ARCH)
    if dry:
        backbone["init_args"]["dtype"] = "float32"
    args = ["fit", "--config", str(config), "--model.init_args.backbone", json.dumps(backbone)]
    args += ["--model.init_args.export", "false"]
    args += ["--data.init_args.train", json.dumps([str(work / "train")])]
    args += ["--data.init_args.val", json.dumps([str(work / "val")])]
    args += ["--data.init_args.tokenizer_dir", "null"]  # synthetic units: no tokeniser made them
    args += ["--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "4"]
    args += ["--trainer.logger.init_args.save_dir", str(work / "runs")]
    args += ["--budget.max_gpu_hours", str(minutes / 60.0)]
    if dry:
        args += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]
        args += ["--model.init_args.compile", "false"]
        args += ["--data.init_args.context_length", "64", "--data.init_args.batch_size", "2"]
        args += ["--data.init_args.num_workers", "0", "--trainer.accumulate_grad_batches", "2"]
        args += ["--trainer.log_every_n_steps", "1", "--throughput.log_every_n_steps", "1"]
    return args


def attention_losses(module: Any, batch: dict[str, torch.Tensor], bf16: bool) -> dict[str, float]:
    """One batch's loss through every attention path that runs on this device (eager model, no grad)."""
    from slamming.models.attention import FLEX, flash_available
    from slamming.tasks.losses import next_unit_loss

    config = module.hf_model.config
    chosen, compiled = config._attn_implementation, module.model
    paths = ["sdpa", "eager", FLEX] + (["flash_attention_2"] if flash_available() else [])
    losses = {}
    module.model = module.hf_model  # switching kernels under torch.compile would recompile per path
    try:
        for path in paths:
            config._attn_implementation = path
            with torch.no_grad(), torch.autocast(module.device.type, torch.bfloat16, enabled=bf16):
                losses[path] = float(next_unit_loss(module(batch), batch["labels"])[0])
    finally:
        config._attn_implementation, module.model = chosen, compiled
    return losses


def run(args: argparse.Namespace) -> dict[str, Any]:
    from slamming.callbacks.throughput import Throughput
    from slamming.cli.lightning import run_lightning

    steps = args.steps or (4 if args.dry_run else 250)
    context = 64 if args.dry_run else 1024
    report: dict[str, Any] = {"dry_run": args.dry_run, "steps_asked": steps}
    with tempfile.TemporaryDirectory(prefix="slamming-gpu-check-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        write_corpus(work / "train", tokens=(20_000 if args.dry_run else 6_000_000), context=context, seed=0)
        write_corpus(work / "val", tokens=(2_000 if args.dry_run else 100_000), context=context, seed=1)
        report["corpus_s"] = time.monotonic() - started
        report["command"] = "slamming " + shlex.join(fit_args(work, args.dry_run, steps, args.minutes))
        cli = run_lightning(fit_args(work, args.dry_run, steps, args.minutes))
        summary = next(cb for cb in cli.trainer.callbacks if isinstance(cb, Throughput)).summary
        module = cli.model
        batch = next(iter(cli.datamodule.val_dataloader()))
        batch = {k: v.to(module.device) for k, v in batch.items()}
        report.update(
            steps=cli.trainer.global_step,
            precision=str(cli.trainer.precision),
            compile=bool(module.hparams.compile),
            attention_path=summary.get("attention"),
            tokens_per_s=summary.get("tokens_per_sec"),
            mfu=summary.get("mfu"),
            peak_flops=summary.get("peak_flops"),
            peak_memory_bytes=summary.get("peak_memory_bytes"),
            graphs_compiled=summary.get("graphs_compiled"),
            recompiles=summary.get("recompiles"),
            wall_s=summary.get("wall_s"),
            data_wait_frac=summary.get("data_wait_frac"),
            attention_losses=attention_losses(module, batch, bf16=not args.dry_run),
        )
    return report


def environment() -> dict[str, Any]:
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "gpu": gpu}  # fmt: skip


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """PASS/MISS against the H200 goals; ``n/a`` in a dry run or where nothing was measured."""
    goals = {}
    for key, bound in GOALS.items():
        value = report.get(key)
        status = "n/a" if report["dry_run"] or value is None else ("PASS" if value >= bound else "MISS")
        goals[key] = {"goal": bound, "value": value, "status": status}
    return goals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    installed = install_missing()
    out = args.out or Path(os.environ.get("OUT") or ".") / "gpu_check.json"
    report = {"environment": environment(), "installed_from_wheels": installed}
    report.update(run(args))
    report["goals"] = judge(report)
    losses = report["attention_losses"]
    report["attention_loss_spread"] = max(losses.values()) - min(losses.values()) if losses else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    memory = report["peak_memory_bytes"]
    print(
        f"gpu-check: {report['steps']} steps, attention {report['attention_path']}, precision {report['precision']}, "
        f"compile {report['compile']} ({report['graphs_compiled']} graphs, {report['recompiles']} recompiles); "
        f"tokens/s {report['tokens_per_s']:.0f}, MFU {report['mfu'] if report['mfu'] is None else round(report['mfu'], 3)}, "
        f"peak memory {'n/a' if memory is None else f'{memory / 2**30:.1f} GiB'}; "
        f"one batch's loss per attention path {json.dumps({k: round(v, 5) for k, v in losses.items()})}"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
