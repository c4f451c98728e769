"""Rows of the benchmark table, the machine description, the JSON result and the perf-log section."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Row:
    """One line of the table: ``goal`` is ``(op, bound)`` with op ``>=``/``<=``/``==``, or None (info)."""

    name: str
    value: float | bool | None
    goal: tuple[str, float | bool] | None = None
    fmt: str = ".3f"

    @property
    def status(self) -> str:
        """PASS / MISS against the goal, ``info`` without one, ``n/a`` when nothing was measured."""
        if self.goal is None:
            return "info"
        if self.value is None:
            return "n/a"
        op, bound = self.goal
        ok = {">=": self.value >= bound, "<=": self.value <= bound, "==": self.value == bound}[op]
        return "PASS" if ok else "MISS"

    def value_text(self) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, bool):
            return "yes" if self.value else "no"
        return format(self.value, self.fmt)

    def goal_text(self) -> str:
        if self.goal is None:
            return "-"
        op, bound = self.goal
        if isinstance(bound, bool):
            return "yes" if bound else "no"
        return f"{op.replace('>=', '≥').replace('<=', '≤')} {format(bound, self.fmt)}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "goal": None if self.goal is None else list(self.goal), "status": self.status}


def cpu_model() -> str:
    """The ``model name`` of the first CPU in /proc/cpuinfo (the processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """E.g. ``x86_64, 2 cores, no GPU, CPU AMD EPYC``."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {gpu}, CPU {cpu_model()}"


def versions() -> dict[str, str]:
    """Versions of the libraries whose speed is measured."""
    import lightning
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
    }


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows (also readable as plain text)."""
    width = max(len(r.name) for r in rows)
    lines = [
        f"| {'metric':<{width}} | {'value':>10} | {'goal':<10} | status |",
        f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 12}|--------|",
    ]
    for r in rows:
        lines.append(f"| {r.name:<{width}} | {r.value_text():>10} | {r.goal_text():<10} | {r.status:<6} |")
    return "\n".join(lines)


def write_json(result: dict[str, Any], results_dir: Path, stamp: datetime, suffix: str = "") -> Path:
    """Write ``result`` to ``results_dir/<timestamp><suffix>.json`` and return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp.strftime('%Y%m%dT%H%M%S')}{suffix}.json"
    path.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def perf_log_section(result: dict[str, Any], rows: list[Row], json_path: Path | None) -> str:
    """The dated Markdown section appended to docs/perf-log.md for one ``make bench``."""
    cfg, env = result["config"], result["environment"]
    ratios = ", ".join(f"{r['ratio']:.3f}" for r in result["repeats"])
    ours = ", ".join(f"{r['ours']['tokens_per_s']:.0f}" for r in result["repeats"])
    hf = ", ".join(f"{r['hf']['tokens_per_s']:.0f}" for r in result["repeats"])
    load = result["load_average"]
    notes = result.get("notes") or []
    lines = [
        f"## {result['date']} — `make bench`: our fit vs transformers.Trainer, packing, data wait",
        "",
        f"- Machine: {env['machine']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"lightning {env['lightning']}, python {env['python']}; `torch.set_num_threads({cfg['threads']})`, fp32.",
        f"- Model: Qwen2 from UnitLMBuilder, {cfg['layers']} layers, hidden {cfg['hidden']}, FFN {cfg['ffn']}, "
        f"{cfg['heads']} heads / {cfg['kv_heads']} KV heads, vocab {cfg['num_units'] + 2}; context {cfg['context']}, "
        f"batch {cfg['batch_size']}; AdamW lr {cfg['lr']}, cosine to {cfg['min_lr']}, clip 0.5.",
        f"- Data: {result['corpus']['documents']} synthetic deduplicated unit documents, lengths "
        f"{result['corpus']['min_len']}–{result['corpus']['max_len']} (Beta(2,2)), one corpus on disk; packed "
        "windows (PackedWindowDataset + ResumableSampler + collate_packed) on both sides.",
        f"- Method: one process, interleaved ours/HF × {cfg['repeats']}, {cfg['warmup_steps']} warm-up + "
        f"{cfg['steps']} timed steps per run; timed span = end of the last warm-up step to the end of the last "
        "step, stamped by a callback on both sides; tokens = trained targets; median of per-pair ratios.",
        f"- Load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}.",
        f"- Per-repeat ratios: {ratios}; ours tokens/s: {ours}; HF tokens/s: {hf}.",
        "",
        table(rows),
        "",
    ]
    lines += [f"- Note: {n}" for n in notes]
    if json_path is not None:
        lines.append(f"- JSON: `{json_path}`")
    return "\n".join(lines) + "\n\n"


def append_perf_log(log_path: Path, section: str) -> None:
    """Append a section to the perf log, creating the file with a title if needed."""
    if not log_path.exists():
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("# Performance log\n\n")
    with log_path.open("a") as f:
        f.write(section)
