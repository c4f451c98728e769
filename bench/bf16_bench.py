"""How many weights one AdamW step changes in pure bf16 vs fp32 master weights (bf16 rounding, not speed).

A bf16 number has 8 significant bits: for ``|w|`` in ``[2^e, 2^(e+1))`` one unit in the last place is
``2^(e-7)``, so an update smaller than half of it (``2^(e-8)``; 6e-5 for ``|w|`` ≈ 0.02) rounds back
to the same weight. An AdamW update is about the learning rate in size, so at DPO's lr (5e-5, and
5e-6 for a finer step) or pretraining's cosine tail (min_lr 5e-5) bf16 weights of normal size stop
moving, while fp32 master weights (``bf16-mixed``: fp32 parameters and optimizer state, bf16 autocast
forward) keep every update.

Measured on a Qwen2.5-0.5B-shaped block: ``Qwen2ForCausalLM`` with one decoder layer (hidden 896,
intermediate 4864, 14 heads, 2 KV heads, q/k/v biases), a tied 502 × 896 embedding (500 units +
2 specials) and the final norm, initialised by transformers (``initializer_range`` 0.02: weights
N(0, 0.02), biases 0, norms 1). For each learning rate and precision a fresh copy of the same
initial weights takes ``warm_steps`` AdamW steps (betas 0.9/0.999, eps 1e-8, weight decay 0, fused
kernel) on a synthetic next-token loss (the same random unit sequences for every run) so that Adam's
moments are realistic, then one more; the row is the fraction of parameter elements (count, not
bytes) whose stored value differs after that last step.

* ``bf16-true``: parameters and optimizer state in bf16 (Lightning ``precision: bf16-true`` over a
  bf16 model), forward and backward in bf16.
* ``bf16-mixed``: fp32 parameters and optimizer state, forward under ``torch.autocast(bfloat16)``
  (Lightning ``precision: bf16-mixed`` over an fp32 model).

Also reported: the fraction changed since the initial weights after all ``warm_steps + 1`` steps
(weights bf16 freezes for good stay unchanged however many steps run).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from bench_report import Row, append_perf_log, machine, table, versions, write_json

#: The precisions compared, as Lightning names them.
PRECISIONS = ("bf16-true", "bf16-mixed")


@dataclass(frozen=True)
class BF16BenchConfig:
    """Shapes and steps of the measurement (defaults: Qwen2.5-0.5B's layer shapes, 500 units)."""

    vocab: int = 502
    hidden: int = 896
    intermediate: int = 4864
    heads: int = 14
    kv_heads: int = 2
    seq: int = 32  # tokens per step: bf16 matmuls are emulated on AVX2 CPUs (~40x slower than fp32)
    batch: int = 1
    warm_steps: int = 10
    # DPO: 5e-6 (a finer step), 1.75e-5 (the inverse sqrt at step 813), 5e-5 (its peak; also
    # pretraining's cosine floor min_lr); 1e-3 is pretraining's peak.
    lrs: tuple[float, ...] = (5e-6, 1.75e-5, 5e-5, 1e-3)
    init_range: float = 0.02
    seed: int = 0


QUICK_BF16 = BF16BenchConfig(hidden=64, intermediate=256, heads=4, kv_heads=2, seq=16, warm_steps=3)


def build_model(cfg: BF16BenchConfig) -> torch.nn.Module:
    """The Qwen2-shaped one-layer LM, fp32, initialised by transformers from ``cfg.seed``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=1,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.seq,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        initializer_range=cfg.init_range,
        attn_implementation="sdpa",
    )
    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(config).train()


def batches(cfg: BF16BenchConfig) -> list[torch.Tensor]:
    """``warm_steps + 1`` batches of random unit sequences (``seq + 1`` ids), the same for every run."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    return [
        torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq + 1), generator=gen)
        for _ in range(cfg.warm_steps + 1)
    ]


def _loss(model: torch.nn.Module, ids: torch.Tensor, autocast: bool) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids[:, :-1], use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())


def run_one(cfg: BF16BenchConfig, precision: str, lr: float, data: list[torch.Tensor]) -> dict[str, Any]:
    """Warm steps, then one measured AdamW step; what fraction of the elements it changed."""
    model = build_model(cfg)
    if precision == "bf16-true":
        model = model.to(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    initial = [p.detach().clone() for p in params]
    losses: list[float] = []
    before: list[torch.Tensor] = []
    start = time.perf_counter()
    for i, ids in enumerate(data):
        if i == len(data) - 1:
            before = [p.detach().clone() for p in params]
        loss = _loss(model, ids, autocast=precision == "bf16-mixed")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    total = sum(p.numel() for p in params)
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(params, before, strict=True))
    since_init = sum(int((p.detach() != b).sum()) for p, b in zip(params, initial, strict=True))
    matrices = [(p, b) for p, b in zip(params, before, strict=True) if p.ndim == 2]
    return {
        "precision": precision,
        "lr": lr,
        "param_dtype": str(params[0].dtype).removeprefix("torch."),
        "state_dtype": str(opt.state[params[0]]["exp_avg"].dtype).removeprefix("torch."),
        "elements": total,
        "changed": changed,
        "fraction_changed": changed / total,
        "fraction_changed_since_init": since_init / total,
        "matrix_fraction_changed": sum(int((p.detach() != b).sum()) for p, b in matrices)
        / sum(p.numel() for p, _ in matrices),
        "losses": losses,
        "seconds": seconds,
    }


def run_bf16_bench(quick: bool) -> dict[str, Any]:
    """Every (learning rate, precision) of the config (:data:`QUICK_BF16` when ``quick``)."""
    cfg = QUICK_BF16 if quick else BF16BenchConfig()
    started = datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    data = batches(cfg)
    runs = []
    for lr in cfg.lrs:
        for precision in PRECISIONS:
            run = run_one(cfg, precision, lr, data)
            runs.append(run)
            print(
                f"bf16 bench: lr {lr:g} {precision}: {100 * run['fraction_changed']:.2f} % of "
                f"{run['elements']:,} elements changed by step {cfg.warm_steps + 1} ({run['seconds']:.0f} s)",
                flush=True,
            )
    return {
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "quick": quick,
        "environment": {
            "machine": machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **versions(),
            "threads": torch.get_num_threads(),
        },
        "config": asdict(cfg),
        "runs": runs,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "elapsed_s": time.perf_counter() - t0,
    }


def _fraction(result: dict[str, Any], precision: str, lr: float, key: str = "fraction_changed") -> float:
    return next(r[key] for r in result["runs"] if r["precision"] == precision and r["lr"] == lr)


def bf16_rows(result: dict[str, Any]) -> list[Row]:
    """Per learning rate: the fraction changed by one step in each precision and their ratio."""
    rows: list[Row] = []
    for lr in result["config"]["lrs"]:
        true, mixed = _fraction(result, "bf16-true", lr), _fraction(result, "bf16-mixed", lr)
        rows += [
            Row(f"lr {lr:g}: fraction changed by one step, bf16-true", true, None, ".4f"),
            Row(f"lr {lr:g}: fraction changed by one step, bf16-mixed", mixed, (">=", 0.99), ".4f"),
            Row(f"lr {lr:g}: bf16-true ÷ bf16-mixed", true / mixed),
            Row(
                f"lr {lr:g}: bf16-true, changed since init ({result['config']['warm_steps'] + 1} steps)",
                _fraction(result, "bf16-true", lr, "fraction_changed_since_init"),
            ),
        ]
    return rows


def bf16_log_section(result: dict[str, Any], json_path: Any) -> str:
    """The dated Markdown section for docs/perf-log.md."""
    cfg, env = result["config"], result["environment"]
    elements = result["runs"][0]["elements"]
    lines = [
        f"## {result['date']} — bf16 rounding: the share of weights one AdamW step changes",
        "",
        f"- Machine: {env['machine']} (capability {env.get('cpu_capability', '?')}); torch {env['torch']}, "
        f"transformers {env['transformers']}, {env['threads']} torch threads. The figures are about "
        "rounding, not speed.",
        f"- Model: `Qwen2ForCausalLM`, 1 decoder layer, hidden {cfg['hidden']}, intermediate "
        f"{cfg['intermediate']}, {cfg['heads']} heads / {cfg['kv_heads']} KV heads, tied {cfg['vocab']} × "
        f"{cfg['hidden']} embedding ({elements:,} parameter elements); transformers' init "
        f"(N(0, {cfg['init_range']}) weights, zero biases, unit norms), the same initial weights in every run.",
        f"- Method: AdamW (0.9, 0.999, eps 1e-8, wd 0, fused), {cfg['warm_steps']} steps at the learning "
        f"rate on a synthetic next-token loss ({cfg['batch']} × {cfg['seq']} random units per step, the same "
        "batches for every run), then one more: the share of elements whose stored value differs after it. "
        "bf16-true: bf16 parameters and AdamW state; bf16-mixed: fp32 parameters and state, bf16 autocast "
        "forward. `bench/bf16_bench.py`.",
        f"- Wall time {result['elapsed_s']:.0f} s; load average (1 min) before / after "
        f"{result['load_average']['before'][0]:.2f} / {result['load_average']['after'][0]:.2f}.",
        "",
        table(bf16_rows(result)),
        "",
    ]
    lines += [f"- Note: {n}" for n in result.get("notes") or []]
    if json_path is not None:
        lines.append(f"- JSON: `{json_path}`")
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurement, print the table, write the JSON; append to a perf log only if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy shapes (hidden 64), 3 warm steps")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--log", type=Path, default=None, help="append the dated section to this perf log")
    args = parser.parse_args(argv)
    started = datetime.now().astimezone()
    result = run_bf16_bench(quick=args.quick)
    rows = bf16_rows(result)
    result["rows"] = [r.as_dict() for r in rows]
    json_path = write_json(result, args.results_dir, started, "-bf16")
    print(table(rows))
    print(f"results: {json_path} ({result['elapsed_s']:.0f} s)")
    if args.log is not None:
        append_perf_log(args.log, bf16_log_section(result, json_path))
        print(f"appended to {args.log}")
    return result


if __name__ == "__main__":
    main()
