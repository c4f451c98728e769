"""Attention paths for packed documents side by side on CPU: tokens/s and peak memory (issue 11 item 5).

Each path (FlexAttention with a document ``BlockMask``, ``sdpa`` with the 4-D boolean mask,
``eager`` with the additive float mask) runs in its own child process, so that its peak resident
memory is its own: the child builds the model, records its resident set, runs the forward +
backward steps of ``NextUnitPretraining`` on the same packed batches and reports tokens/s of the
timed steps, the growth of the peak resident set over the level before the first step, and each
step's loss (equal across paths: identical work). Flash-attn varlen needs CUDA (``make gpu-check``
measures it there).

Usage: ``.venv/bin/python bench/attention_bench.py`` (standalone) or ``bench/run.py --only attention``.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_report import Row, table  # noqa: E402

PATHS = ("slamming_flex", "sdpa", "eager")


@dataclass(frozen=True)
class AttentionBenchConfig:
    """Model and batch sizes (default: a 4-layer model at the paper's context 1024)."""

    layers: int = 4
    hidden: int = 256
    ffn: int = 768
    heads: int = 4
    kv_heads: int = 2
    context: int = 1024
    batch_size: int = 4
    warmup_steps: int = 1
    steps: int = 3
    threads: int = 2


QUICK_ATTENTION = AttentionBenchConfig(
    layers=1, hidden=32, ffn=64, context=128, batch_size=2, steps=2, threads=1
)


def _batches(cfg: AttentionBenchConfig) -> list[dict[str, torch.Tensor]]:
    from slamming.data.pretrain.packing import build_window, collate_packed, num_windows

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 500, size=int(n)) for n in rng.integers(20, 600, size=4000)]
    starts = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) + 2 for d in docs], out=starts[1:])
    count = (cfg.warmup_steps + cfg.steps) * cfg.batch_size
    assert num_windows(int(starts[-1]), cfg.context) >= count
    windows = [build_window(k, starts, lambda j: docs[j], cfg.context) for k in range(count)]
    return [collate_packed(windows[i : i + cfg.batch_size]) for i in range(0, count, cfg.batch_size)]


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_one(path: str, cfg: AttentionBenchConfig) -> dict[str, Any]:
    """Run in the child: time ``cfg.steps`` forward + backward steps of one attention path."""
    from slamming.models.unit_lm import UnitLMBuilder
    from slamming.tasks.losses import next_unit_loss
    from slamming.tasks.pretrain import NextUnitPretraining

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    arch = dict(
        hidden_size=cfg.hidden, intermediate_size=cfg.ffn, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.context,
    )  # fmt: skip
    module = NextUnitPretraining(
        UnitLMBuilder(config=arch, attn_implementation=path), num_units=500, context_length=cfg.context
    ).train()
    batches = _batches(cfg)
    losses, times = [], []
    rss_before = _rss_bytes()  # model built, before the first step
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss, tokens = next_unit_loss(module(batch), batch["labels"])
        loss.backward()
        module.zero_grad(set_to_none=True)
        if i >= cfg.warmup_steps:
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
    tokens_per_step = int((batches[-1]["labels"] != -100).sum())
    return {
        "path": module.attention,
        "tokens_per_s": tokens_per_step / statistics.median(times),
        "step_s": statistics.median(times),
        "peak_rss_bytes": _rss_bytes(),
        "step_peak_rss_growth_bytes": _rss_bytes() - rss_before,
        "losses": losses,
    }


def run_attention_bench(quick: bool) -> dict[str, Any]:
    """Measure every path, each in a fresh child process; the result holds one entry per path."""
    cfg = QUICK_ATTENTION if quick else AttentionBenchConfig()
    results = {}
    for path in PATHS:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", path, "--config", json.dumps(asdict(cfg))],
            capture_output=True,
            text=True,
            check=True,
        )
        results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"config": asdict(cfg), "paths": results}


def attention_rows(result: dict[str, Any]) -> list[Row]:
    """Tokens/s, peak memory and the identical-work guard of each path."""
    paths = result["paths"]
    rows = []
    for name in PATHS:
        r = paths[name]
        rows.append(Row(f"{name}: tokens/s (median step)", r["tokens_per_s"], None, ".0f"))
        rows.append(
            Row(
                f"{name}: step memory MiB (peak RSS growth)",
                r["step_peak_rss_growth_bytes"] / 2**20,
                None,
                ".0f",
            )
        )
    rows.append(
        Row(
            "FlexAttention ÷ sdpa tokens/s",
            paths["slamming_flex"]["tokens_per_s"] / paths["sdpa"]["tokens_per_s"],
            None,
        )
    )
    spread = max(
        abs(a - b)
        for name in PATHS
        for a, b in zip(paths[name]["losses"], paths["sdpa"]["losses"], strict=True)
    )
    rows.append(Row("max loss difference of any path vs sdpa, any step", spread, ("<=", 1e-4), ".2e"))
    return rows


def attention_log_section(result: dict[str, Any], json_path: Any) -> str:
    """The dated Markdown section for docs/perf-log.md."""
    cfg, rows = result["config"], attention_rows(result)
    return "\n".join(
        [
            f"## {result['date']} — `make bench` (attention): packed-document attention paths on CPU",
            "",
            f"Machine: {result['environment']['machine']}; torch {result['environment']['torch']}. "
            f"Model {cfg['layers']} layers × {cfg['hidden']} (heads {cfg['heads']}/{cfg['kv_heads']}), "
            f"context {cfg['context']}, batch {cfg['batch_size']}, {cfg['steps']} timed forward + backward "
            f"steps after {cfg['warmup_steps']} warm-up, {cfg['threads']} threads, fp32; each path in its "
            "own process (peak RSS is the process's). Flash varlen needs CUDA: see `make gpu-check`.",
            "",
            "```",
            table(rows),
            "```",
            "",
            f"JSON: `{json_path}`",
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        config = AttentionBenchConfig(**json.loads(sys.argv[4]))
        print(json.dumps(measure_one(sys.argv[2], config)))
    else:
        outcome = run_attention_bench(quick="--quick" in sys.argv)
        print(table(attention_rows(outcome)))
