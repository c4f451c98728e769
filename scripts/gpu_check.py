#!/usr/bin/env python3
"""``make gpu-check``: pretraining throughput of the paper's 358M unit LM on one GPU (≤ 5 minutes).

Builds the Slam model (Qwen2.5-0.5B *architecture*, random weights, vocabulary 502) with
``UnitLMBuilder`` and times real steps on packed synthetic unit windows at context 1024: forward
with document isolation, ``next_unit_loss``, backward, clipping at 0.5, fused AdamW. Numerics are
**bf16-true** (bf16 parameters and AdamW states, as the paper's HF ``bf16=True`` on a bf16-loaded
model); ``next_unit_loss`` computes the loss in fp32.

Attention: ``flash_attention_2`` when flash-attn imports on a CUDA device, with varlen boundaries
precomputed per batch (``cu_seq_lens_*`` padded to one length, ``max_length_*`` = context, so
compiled graphs see static shapes), and its logits checked against ``sdpa`` + mask and no mask;
otherwise ``sdpa`` with slamming's 4-D block-diagonal causal mask. Phases: eager, ``torch.compile``
of forward + loss (first loss checked against eager), and eager ``sdpa`` when flash-attn ran; each
timed between CUDA synchronisations after its warm-up. Prints and writes ``$OUT/gpu_check.json``
(``./gpu_check.json`` without ``$OUT``; rewritten after every phase): non-pad tokens/s (trained
targets per second), MFU against the device's dense bf16 peak (``slamming.models.flops``), peak
memory (``torch.cuda.max_memory_allocated``) and the attention path.

Imports only torch, numpy, transformers and four light slamming modules (no Lightning, fairseq2,
soundfile or torchaudio): the GPU machine has its own torch/transformers and installs nothing.
``--dry-run``: CPU, a tiny model in fp32, context 64, eager only (< 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from slamming.data.pretrain.packing import build_window, collate_packed, document_attention_mask  # noqa: E402
from slamming.models.flops import count_params, peak_flops_for_device_name, transformer_flops_per_token  # noqa: E402
from slamming.models.unit_lm import UnitLMBuilder  # noqa: E402
from slamming.tasks.losses import next_unit_loss  # noqa: E402

HEAVY_MODULES = ("fairseq2", "soundfile", "torchaudio", "lightning")
# None may be loaded by the slamming imports above. (Building the model imports transformers' Qwen2
# code, whose audio_utils imports soundfile if installed: transformers' doing, reported separately.)
HEAVY_AFTER_SLAMMING_IMPORTS = sorted(m for m in HEAVY_MODULES if sys.modules.get(m) is not None)
NUM_UNITS = 500  # vocabulary 502
# The paper's model: the Qwen2.5-0.5B architecture (random weights; no download), RoPE θ 10,000.
# fmt: off
SLAM_ARCH = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000,
                 max_position_embeddings=32768, rms_norm_eps=1e-6)
# fmt: on
TINY_ARCH = dict(SLAM_ARCH, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
GOALS = {"tokens_per_s": 175_000.0, "mfu": 0.40}  # perf-anchors §8b G1/G2 target on an H200
FLASH = "flash_attention_2"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time pretraining steps of the 358M Slam model on a GPU.")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, context 64, a few eager steps")
    p.add_argument("--batch", type=int, default=None, help="windows per micro-batch (GPU 16, dry run 4)")
    p.add_argument("--context", type=int, default=None, help="context length (GPU 1024, dry run 64)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per phase (GPU 30, dry run 4)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per phase (GPU 3, dry run 2)")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="GPU: on; dry run: off"
    )
    p.add_argument("--attention", choices=("auto", "sdpa", FLASH), default="auto")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the dry run (tests share 2 cores)")
    p.add_argument("--budget-s", type=float, default=270.0, help="skip the optional phases past this time")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json)")
    return p.parse_args(argv)


def flash_status() -> tuple[bool, str]:
    """Whether flash-attn 2 can run here, and why (its version or the import error)."""
    try:
        import flash_attn  # noqa: F401
    except Exception as err:  # ImportError, or a broken build raising anything at import
        return False, f"flash_attn not importable: {type(err).__name__}: {err}"
    if not torch.cuda.is_available():
        return False, f"flash_attn {flash_attn.__version__} installed but no CUDA device"
    return True, f"flash_attn {flash_attn.__version__}"


def speech_like_documents(n: int, context: int, seed: int = 0) -> list[np.ndarray]:
    """Deduplicated random unit sequences, lengths 50–1200 (Beta(2,2)) scaled to ``context`` / 1024."""
    rng = np.random.default_rng(seed)
    lo, hi = max(2, round(50 * context / 1024)), max(4, round(1200 * context / 1024))
    docs = []
    for length in lo + np.rint((hi - lo) * rng.beta(2.0, 2.0, size=n)).astype(np.int64):
        steps = rng.integers(1, NUM_UNITS, size=int(length))  # never the same unit twice in a row
        docs.append(np.cumsum(steps) % NUM_UNITS)
    return docs


def make_batches(count: int, batch: int, context: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """``count`` distinct packed batches (pinned on CUDA), each with padded varlen boundaries.

    ``cu_seqlens`` holds the start of every piece in the flattened ``batch × context`` tokens (a
    piece starts where its position id is 0), padded with the total so all batches share one length.
    """
    need = count * batch * context
    docs = speech_like_documents(int(1.3 * need / (625 * context / 1024)) + 8, context)
    starts = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) + 2 for d in docs], out=starts[1:])
    out = []
    for b in range(count):
        windows = [build_window(b * batch + i, starts, docs.__getitem__, context) for i in range(batch)]
        out.append(collate_packed(windows))
    cu_list = [torch.nonzero(x["position_ids"].reshape(-1) == 0).reshape(-1) for x in out]
    width = max(len(c) for c in cu_list) + 1
    for x, cu in zip(out, cu_list, strict=True):
        x["cu_seqlens"] = torch.full((width,), batch * context, dtype=torch.int32)
        x["cu_seqlens"][: len(cu)] = cu.to(torch.int32)
        if device.type == "cuda":
            for key in x:
                x[key] = x[key].pin_memory()
    return out


def forward_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], attn: str) -> torch.Tensor:
    """Logits ``(B, L, V)`` of a packed batch, documents isolated by ``attn`` ("none": not isolated)."""
    kwargs: dict[str, Any] = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
    if attn == FLASH:
        length = batch["input_ids"].shape[1]
        kwargs.update(cu_seq_lens_q=batch["cu_seqlens"], cu_seq_lens_k=batch["cu_seqlens"])
        kwargs.update(max_length_q=length, max_length_k=length)  # an upper bound keeps shapes static
    else:  # sdpa, or "none" (isolation check only); attention_mask=None would NOT mean "none": see to_device
        kwargs["attention_mask"] = batch["mask"]
    return model(**kwargs, use_cache=False).logits


def forward_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], attn: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-unit loss and target count of a packed batch (what one training step optimises)."""
    return next_unit_loss(forward_logits(model, batch, attn), batch["labels"])


def to_device(batch: dict[str, torch.Tensor], device: torch.device, attn: str) -> dict[str, torch.Tensor]:
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if attn in ("sdpa", "none"):  # built on the device each step, outside compiled code, as in training
        # "none": one segment = plain causal attention across documents. (Omitting the mask is not the
        # same: transformers 4.57 then infers packed documents from the restarting position ids.)
        seg = moved["segment_ids"] if attn == "sdpa" else torch.zeros_like(moved["segment_ids"])
        moved["mask"] = document_attention_mask(seg)
    return moved


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(arch: dict[str, Any], attn: str, dtype: str, device: torch.device) -> torch.nn.Module:
    """The unit LM, initialised directly on ``device`` (random init of 358M weights is slow on CPU)."""
    torch.manual_seed(0)
    builder = UnitLMBuilder(config=arch, rope_theta=10000.0, attn_implementation=attn, dtype=dtype)
    with device:
        model = builder.build(NUM_UNITS)
    return model.to(device).train()


def run_phase(name: str, model: torch.nn.Module, attn: str, compiled: bool, batches: list, cfg: dict) -> dict:
    """Warm up, then time ``cfg['steps']`` full training steps; returns the phase's measurements."""
    device = cfg["device"]
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        fused=device.type == "cuda" or None,
    )
    loss_fn = torch.compile(forward_loss) if compiled else forward_loss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {"name": name, "attention": attn, "compiled": compiled}
    if compiled:  # reference twin: eager loss of the first batch with the same weights
        with torch.no_grad():
            result["eager_loss_first_batch"] = float(
                forward_loss(model, to_device(batches[0], device, attn), attn)[0]
            )

    def step(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = to_device(batches[i % len(batches)], device, attn)
        loss, n = loss_fn(model, batch, attn)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach(), n

    t0 = time.perf_counter()
    first_loss, _ = step(0)
    sync(device)
    result["first_step_s"] = time.perf_counter() - t0  # includes compilation when compiled
    result["first_loss"] = float(first_loss)
    for i in range(1, cfg["warmup"]):
        step(i)
    sync(device)
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    t0 = time.perf_counter()
    for i in range(cfg["steps"]):
        loss, n = step(cfg["warmup"] + i)
        tokens += n
    sync(device)
    elapsed = time.perf_counter() - t0
    ids = cfg["steps"] * cfg["batch"] * cfg["context"]
    result.update(
        steps=cfg["steps"],
        warmup=cfg["warmup"],
        step_time_s=elapsed / cfg["steps"],
        last_loss=float(loss),
        tokens_per_s=int(tokens) / elapsed,
        ids_per_s=ids / elapsed,
        non_pad_fraction=int(tokens) / ids,
    )
    if compiled:
        result["compile_loss_diff"] = abs(result["first_loss"] - result["eager_loss_first_batch"])
    if cfg["peak"]:
        result["mfu"] = cfg["flops_per_token"] * result["tokens_per_s"] / cfg["peak"]
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    return result


def isolation_check(
    model: torch.nn.Module, other: torch.nn.Module, batch: dict, device: torch.device
) -> dict:
    """Logits of one batch via flash varlen vs sdpa + 4-D mask (same weights) vs no document mask.

    Compared at the positions after a window's first piece, the only ones where isolation matters:
    flash-vs-masked should be bf16 noise, far below masked-vs-unmasked.
    """
    with torch.no_grad():
        flash = forward_logits(model, to_device(batch, device, FLASH), FLASH).float()
        masked = forward_logits(other, to_device(batch, device, "sdpa"), "sdpa").float()
        unmasked = forward_logits(other, to_device(batch, device, "none"), "none").float()
    later = batch["segment_ids"].to(device) > 0
    a, b = (flash - masked).abs()[later].mean().item(), (masked - unmasked).abs()[later].mean().item()
    return {
        "positions": int(later.sum()),
        "mean_abs_logit_diff_flash_vs_masked": a,
        "mean_abs_logit_diff_masked_vs_unmasked": b,
        "isolated": a < 0.1 * b,
    }


def environment(flash_reason: str) -> dict[str, Any]:
    """Versions and the device: the GPU machine has its own torch and transformers."""
    import transformers

    env = dict(
        python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__
    )
    env.update(cuda=str(torch.version.cuda), flash_attn=flash_reason, platform=platform.platform())
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
    return env


def summarize(report: dict[str, Any]) -> None:
    """Fill the headline fields from the best completed phase and judge the goals."""
    done = [p for p in report["phases"] if "tokens_per_s" in p]
    best = max(done, key=lambda p: p["tokens_per_s"], default=None)
    report["best_phase"] = best["name"] if best else None
    report["tokens_per_s"] = best["tokens_per_s"] if best else None
    report["mfu"] = best.get("mfu") if best else None
    peaks = [p["peak_memory_bytes"] for p in done if "peak_memory_bytes" in p]
    report["peak_memory_bytes"] = max(peaks) if peaks else None
    report["peak_memory_gib"] = max(peaks) / 2**30 if peaks else None
    eager = next((p for p in done if not p["compiled"] and p["attention"] == report["attention_path"]), None)
    comp = next((p for p in done if p["compiled"]), None)
    report["compile_speedup"] = comp["tokens_per_s"] / eager["tokens_per_s"] if comp and eager else None
    gpu = not report["dry_run"]
    report["goals"] = {}
    for key, goal in GOALS.items():
        value = report[key]
        status = "n/a" if not gpu or value is None else ("PASS" if value >= goal else "MISS")
        report["goals"][key] = {"goal": goal, "value": value, "status": status}


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.dry_run:
        print("gpu_check: no CUDA device; running the dry run instead", flush=True)
    if dry:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu" if dry else "cuda")
    flash_ok, flash_reason = flash_status()
    attn = args.attention if args.attention != "auto" else (FLASH if flash_ok and not dry else "sdpa")
    if attn == FLASH and not flash_ok:
        print(f"gpu_check: {flash_reason}; using sdpa", flush=True)
        attn = "sdpa"
    out = args.out or Path(os.environ.get("OUT") or ".") / "gpu_check.json"
    cfg: dict[str, Any] = {
        "device": device,
        "batch": args.batch or (4 if dry else 16),
        "context": args.context or (64 if dry else 1024),
        "steps": args.steps or (4 if dry else 30),
        "warmup": args.warmup or (2 if dry else 3),
    }
    compile_on = args.compile if args.compile is not None else not dry
    arch, dtype = (TINY_ARCH, "float32") if dry else (SLAM_ARCH, "bfloat16")
    model = build_model(arch, attn, dtype, device)
    cfg["flops_per_token"] = transformer_flops_per_token(
        count_params(model), arch["num_hidden_layers"], arch["hidden_size"], cfg["context"], causal=True
    )
    cfg["peak"] = None if dry else peak_flops_for_device_name(torch.cuda.get_device_name(), torch.bfloat16)
    no_peak = "CPU dry run: no datasheet peak for a CPU" if dry else "device not in flops.PEAK_FLOPS"
    report: dict[str, Any] = {
        "dry_run": dry,
        "attention_path": model.config._attn_implementation,
        "flash_attn": flash_reason,
        "numerics": "fp32 (CPU dry run)" if dry else "bf16-true: bf16 params and AdamW states, fp32 loss",
        "config": {k: v for k, v in cfg.items() if k != "device"}
        | {"device": str(device), "compile": compile_on},
        "params": sum(p.numel() for p in model.parameters()),
        "params_non_embedding": count_params(model),
        "mfu_reason": None if cfg["peak"] else no_peak,
        "env": environment(flash_reason),
        "phases": [],
        "errors": [],
        "heavy_modules_loaded": HEAVY_AFTER_SLAMMING_IMPORTS,
        "heavy_modules_after_model_build": sorted(m for m in HEAVY_MODULES if sys.modules.get(m) is not None),
    }
    print(
        f"gpu_check: {report['env'].get('device', 'CPU')}, attention {report['attention_path']}, "
        f"{report['params'] / 1e6:.1f}M params, {report['numerics']}",
        flush=True,
    )
    batches = make_batches(8 if not dry else 3, cfg["batch"], cfg["context"], device)
    attn = report["attention_path"]
    plan = [("eager", attn, False)] + ([("compiled", attn, True)] if compile_on else [])
    models = {attn: model}
    if attn == FLASH:
        models["sdpa"] = build_model(arch, "sdpa", dtype, device)
        models["sdpa"].load_state_dict(model.state_dict())
        try:
            report["isolation_check"] = isolation_check(model, models["sdpa"], batches[0], device)
        except Exception as err:
            report["errors"].append({"phase": "isolation_check", "error": repr(err)})
        plan.append(("eager_sdpa", "sdpa", False))
    while plan:
        name, path, compiled = plan.pop(0)
        if name not in ("eager", "compiled") and time.perf_counter() - started > args.budget_s:
            report["errors"].append({"phase": name, "error": f"skipped: past --budget-s {args.budget_s}"})
            continue
        try:
            phase = run_phase(name, models[path], path, compiled, batches, cfg)
            report["phases"].append(phase)
            print(
                f"  {name:<10} {path:<17} {phase['tokens_per_s']:>11,.0f} tok/s  step {phase['step_time_s']:.3f} s  "
                f"mfu {phase['mfu'] if 'mfu' in phase else 'n/a':.4}  first step {phase['first_step_s']:.1f} s",
                flush=True,
            )
        except Exception as err:  # keep measuring the other phases; the JSON says what failed
            trace = traceback.format_exc()[-2000:]
            report["errors"].append({"phase": name, "error": repr(err), "trace": trace})
            print(f"  {name}: FAILED {err!r}", flush=True)
            if path == FLASH and compiled:  # the compiled sdpa path is the fallback worth timing
                plan.insert(0, ("compiled_sdpa", "sdpa", True))
        report["elapsed_s"] = time.perf_counter() - started
        summarize(report)
        write(report, out)
    report["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report["elapsed_s"] = time.perf_counter() - started
    summarize(report)
    write(report, out)
    mem = "n/a (CPU)" if report["peak_memory_gib"] is None else f"{report['peak_memory_gib']:.1f} GiB"
    mfu = "n/a" if report["mfu"] is None else f"{100 * report['mfu']:.1f} %"
    print(
        f"gpu_check: best {report['best_phase']}: {report['tokens_per_s'] or 0:,.0f} non-pad tok/s, MFU {mfu}, "
        f"peak memory {mem}, attention {attn}, compile speedup {report['compile_speedup'] or 'n/a':.4}"
    )
    for key, g in report["goals"].items():
        print(f"  goal {key} >= {g['goal']}: {g['status']}")
    print(f"gpu_check: wrote {out} ({report['elapsed_s']:.0f} s)")
    return 0 if report["phases"] else 1


if __name__ == "__main__":
    sys.exit(main())
