"""``make bench`` rows C8/C9 (perf-anchors §7, §8a): DPO with a live vs a precomputed reference.

One randomly initialised Qwen2 unit LM (:class:`slamming.models.unit_lm.UnitLMBuilder`) is exported
to a temporary folder, and every run builds a fresh :class:`slamming.tasks.dpo.DPOAlignment` from it
(so every run starts from the same weights), once with ``reference="live"`` (a frozen copy runs a
no-grad forward each step) and once with ``reference="precomputed"`` (a lookup in log-probs computed
beforehand by :func:`slamming.tasks.reference.compute_reference_logps`, as the module does in
``on_fit_start``). Both train on the same list of batches of a synthetic preference corpus
(``PreferenceDataModule.reference_loader``, index order), fp32.

* **Step time** (C8, goal ≤ 0.80; theory 6N ÷ 8N = 0.75): one step = ``module._evaluate(batch,
  "train")`` (the policy's concatenated chosen + rejected forward and the reference), ``backward`` of
  the loss, ``AdamW.step``, ``zero_grad``, each step timed by ``time.perf_counter``; the warm-up steps
  are excluded. The two sides are interleaved *step by step* (step ``i`` of live, step ``i`` of
  precomputed, the order rotating every step), so a change of machine load — this 2-core machine is
  shared — hits both alike; the ratio of a repeat is Σ precomputed ÷ Σ live timed step seconds, and
  the row is the median over the repeats (each repeat starts both modules afresh).
* **Precompute vs training throughput** (C9, goal ≥ 2.5; theory ~3 = 6N ÷ 2N): real (non-pad)
  tokens of both sides per second of :func:`compute_reference_logps` (its ``tokens ÷ seconds``) at
  the module's default reference batch of twice the training batch, ÷ real tokens per second of
  the timed precomputed-reference steps. The precompute of the split is run in chunks of one
  reference batch, placed among the timed training rounds (same rotation), by the live module's
  frozen reference. The whole-split call (``reference_loader`` included) that fills the precomputed
  side's lookup is timed too and reported as information: it runs alone, so load changes bias it.

Each ratio is also given from every step's (and chunk's) fastest time over the repeats: another
process only adds time, so on a shared machine that is the least disturbed estimate (information).

Guards: both sides saw the same batches (CRC of every ``input_ids``), their losses agree (the
precomputed reference equals the live one), and one torch thread count held throughout.
"""

from __future__ import annotations

import gc
import statistics
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_report import Row

from slamming.data.preference.corpus import PreferenceCorpusWriter
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.tasks.dpo import DPOAlignment
from slamming.tasks.reference import ReferenceLogps, compute_reference_logps

BENCH_IDENTITY_KIND = "bench"


@dataclass(frozen=True)
class DPOBenchConfig:
    """Sizes of the DPO benchmark (defaults: the tiny demo's model shape and DPO context)."""

    num_units: int = 100
    layers: int = 4
    hidden: int = 256
    ffn: int = 768
    heads: int = 4
    kv_heads: int = 2
    context: int = 384
    max_prompt: int = 256
    prompt_len: tuple[int, int] = (40, 160)  # units, uniform
    completion_len: tuple[int, int] = (30, 200)
    batch_size: int = 4  # ~2.6k positions per step: ~0.5 s, above the 100 ms framework-overhead floor
    warmup_steps: int = 2
    steps: int = 10
    repeats: int = 5
    lr: float = 5e-5
    beta: float = 0.1
    seed: int = 0

    @property
    def total_steps(self) -> int:
        """Optimizer steps of one run: warm-up plus timed."""
        return self.warmup_steps + self.steps

    @property
    def num_triples(self) -> int:
        """Triples of the split: one batch per step, so each run sees every triple once."""
        return self.total_steps * self.batch_size

    @property
    def reference_batch_size(self) -> int:
        """The module's default precompute batch: twice the training batch."""
        return 2 * self.batch_size

    def identity(self) -> dict[str, Any]:
        return {
            "kind": BENCH_IDENTITY_KIND,
            "k": self.num_units,
            "frame_rate": 25,
            "dedup": True,
            "settings_hash": "bench",
        }


QUICK_DPO = DPOBenchConfig(
    num_units=20,
    layers=1,
    hidden=32,
    ffn=64,
    heads=2,
    kv_heads=1,
    context=64,
    max_prompt=32,
    prompt_len=(5, 25),
    completion_len=(5, 30),
    batch_size=4,
    warmup_steps=1,
    steps=3,
    repeats=2,
)


@dataclass
class DPORun:
    """What one training run measured."""

    side: str
    step_times: list[float] = field(default_factory=list)  # seconds of each timed step
    timed_s: float = 0.0
    timed_tokens: int = 0  # real tokens (attention_mask) of both sides in the timed steps
    computed_positions: int = 0  # positions the concatenated forward ran on (common padding included)
    losses: list[float] = field(default_factory=list)
    crcs: list[int] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)

    @property
    def step_ms(self) -> float:
        return 1000.0 * self.timed_s / len(self.step_times)

    @property
    def median_step_ms(self) -> float:
        return 1000.0 * statistics.median(self.step_times)

    @property
    def tokens_per_s(self) -> float:
        return self.timed_tokens / self.timed_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "step_ms": self.step_ms,
            "median_step_ms": self.median_step_ms,
            "timed_s": self.timed_s,
            "timed_tokens": self.timed_tokens,
            "tokens_per_s": self.tokens_per_s,
            "computed_positions": self.computed_positions,
            "step_times": self.step_times,
            "first_loss": self.losses[0],
            "last_loss": self.losses[-1],
            "threads": sorted(self.threads),
        }


def write_preference_corpus(path: Path, cfg: DPOBenchConfig) -> Path:
    """``cfg.num_triples`` random triples with uniform prompt and completion lengths."""
    rng = np.random.default_rng(cfg.seed)
    with PreferenceCorpusWriter(path, cfg.identity(), cfg.num_units) as writer:
        for i in range(cfg.num_triples):
            prompt = rng.integers(0, cfg.num_units, size=int(rng.integers(*cfg.prompt_len, endpoint=True)))
            chosen, rejected = (
                rng.integers(0, cfg.num_units, size=int(rng.integers(*cfg.completion_len, endpoint=True)))
                for _ in range(2)
            )
            writer.add(prompt, chosen, rejected, source=f"bench-{i}")
    return path


def export_model(path: Path, cfg: DPOBenchConfig) -> Path:
    """A random-init Qwen2 unit LM (fp32, sdpa) saved as a folder DPOAlignment starts from."""
    builder = UnitLMBuilder(
        config={
            "hidden_size": cfg.hidden,
            "intermediate_size": cfg.ffn,
            "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads,
            "max_position_embeddings": cfg.context,
        },
        rope_theta=10000.0,
    )
    torch.manual_seed(cfg.seed)
    return export_hf(builder.build(cfg.num_units), path, cfg.identity())


def make_module(folder: Path, cfg: DPOBenchConfig, reference: str) -> DPOAlignment:
    return DPOAlignment(
        str(folder),
        num_units=cfg.num_units,
        context_length=cfg.context,
        beta=cfg.beta,
        reference=reference,  # type: ignore[arg-type]
        lr=cfg.lr,
        export=False,
        progress=False,
    )


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-pad tokens of both sides (what ``compute_reference_logps`` counts too)."""
    return int(batch["chosen"]["attention_mask"].sum() + batch["rejected"]["attention_mask"].sum())


class SideTrainer:
    """One side's training loop, driven one step at a time so both sides can alternate steps."""

    def __init__(self, module: DPOAlignment, side: str) -> None:
        self.module, self.run = module, DPORun(side)
        self.opt = module._make_optimizer()
        module.train()

    def step(self, batch: dict[str, Any], timed: bool) -> None:
        """Forward (policy + reference), backward, AdamW step, zero_grad; the four are timed."""
        crc = zlib.crc32(batch["chosen"]["input_ids"].numpy().tobytes())
        self.run.crcs.append(zlib.crc32(batch["rejected"]["input_ids"].numpy().tobytes(), crc))
        self.run.threads.add(torch.get_num_threads())
        start = time.perf_counter()
        loss = self.module._evaluate(batch, "train")["loss"]
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        self.run.losses.append(float(loss.detach()))
        if timed:
            self.run.step_times.append(seconds)
            self.run.timed_s += seconds
            self.run.timed_tokens += real_tokens(batch)
            length = max(batch["chosen"]["input_ids"].shape[1], batch["rejected"]["input_ids"].shape[1])
            self.run.computed_positions += 2 * batch["index"].shape[0] * length


def precompute(module: DPOAlignment, dm: PreferenceDataModule, batch_size: int) -> ReferenceLogps:
    """The module's reference log-probs of the train split, as ``DPOAlignment._prepare_reference`` makes them."""
    return compute_reference_logps(
        module.hf_model,
        dm.reference_loader("train", batch_size),
        dm.num_triples("train"),
        torch.device("cpu"),
        progress=False,
    )


def chunk_rounds(chunks: int, warmup: int, steps: int) -> dict[int, list[int]]:
    """Round (training step index) → the precompute chunks run in it, spread over the timed rounds."""
    rounds: dict[int, list[int]] = {}
    for j in range(chunks):
        rounds.setdefault(warmup + (j * steps) // chunks, []).append(j)
    return rounds


def run_repeat(
    cfg: DPOBenchConfig,
    folder: Path,
    dm: PreferenceDataModule,
    batches: list[dict[str, Any]],
    ref_batches: list[dict[str, Any]],
    repeat: int,
) -> dict[str, Any]:
    """Fresh live and precomputed modules, trained step by step in alternation, with precompute chunks.

    Round ``i`` runs training step ``i`` of both sides and, in the timed rounds, some chunks of the
    reference precompute (``compute_reference_logps`` on one reference batch of 2 × the training
    batch, run by the live module's frozen reference). The order of the three rotates every round,
    so a change of machine load hits all of them alike.
    """
    sides = {side: SideTrainer(make_module(folder, cfg, side), side) for side in ("live", "precomputed")}
    whole = precompute(sides["precomputed"].module, dm, cfg.reference_batch_size)
    sides["precomputed"].module._reference_logps["train"] = whole
    reference = sides["live"].module._reference
    rounds = chunk_rounds(len(ref_batches), cfg.warmup_steps, cfg.steps)
    chunk_tokens = 0
    chunk_seconds: list[float] = []
    for i, batch in enumerate(batches):
        timed = i >= cfg.warmup_steps
        jobs: list[Any] = [("live", None), ("precomputed", None)] + [("chunk", j) for j in rounds.get(i, [])]
        shift = (i + repeat) % len(jobs)
        for kind, j in jobs[shift:] + jobs[:shift]:
            if kind == "chunk":
                ref_batch = ref_batches[j]
                n = int(ref_batch["index"].shape[0])
                logps = compute_reference_logps(
                    reference,
                    [{**ref_batch, "index": torch.arange(n)}],
                    n,
                    torch.device("cpu"),
                    progress=False,
                )
                chunk_tokens += logps.tokens
                chunk_seconds.append(logps.seconds)
            else:
                sides[kind].step(batch, timed)
    live, cached = sides["live"].run, sides["precomputed"].run
    step_ratios = [p / q for p, q in zip(cached.step_times, live.step_times, strict=True)]
    pre_tps = chunk_tokens / sum(chunk_seconds)
    return {
        "first": "live" if repeat % 2 == 0 else "precomputed",
        "ratio": cached.timed_s / live.timed_s,
        "median_step_ratio": statistics.median(step_ratios),
        "step_ratios": step_ratios,
        "precompute": {
            "tokens": chunk_tokens,
            "seconds": sum(chunk_seconds),
            "tokens_per_s": pre_tps,
            "chunk_seconds": chunk_seconds,
            "whole_split": {
                "tokens": whole.tokens,
                "seconds": whole.seconds,
                "tokens_per_s": whole.tokens / whole.seconds,
            },
        },
        "precompute_ratio": pre_tps / cached.tokens_per_s,
        "whole_split_precompute_ratio": (whole.tokens / whole.seconds) / cached.tokens_per_s,
        "live": live.as_dict(),
        "precomputed": cached.as_dict(),
        "same_batches": live.crcs == cached.crcs,
        "max_loss_diff": max(abs(a - b) for a, b in zip(live.losses, cached.losses, strict=True)),
        "first_loss_diff": abs(live.losses[0] - cached.losses[0]),
        "threads": sorted(live.threads | cached.threads),
    }


def run_dpo_bench(cfg: DPOBenchConfig, work: Path) -> dict[str, Any]:
    """Build the data and model under ``work`` and run the repeats."""
    corpus = write_preference_corpus(work / "prefs", cfg)
    folder = export_model(work / "model", cfg)
    dm = PreferenceDataModule(
        train=str(corpus),
        context_length=cfg.context,
        max_prompt_length=cfg.max_prompt,
        batch_size=cfg.batch_size,
        pin_memory=False,
    )
    dm.setup("fit")
    batches = list(dm.reference_loader("train", cfg.batch_size))
    ref_batches = list(dm.reference_loader("train", cfg.reference_batch_size))
    assert len(batches) == cfg.total_steps
    repeats: list[dict[str, Any]] = []
    for i in range(cfg.repeats):
        repeats.append(run_repeat(cfg, folder, dm, batches, ref_batches, i))
        gc.collect()
        r = repeats[-1]
        print(
            f"dpo repeat {i + 1}/{cfg.repeats}: step live {r['live']['step_ms']:.0f} ms, precomputed "
            f"{r['precomputed']['step_ms']:.0f} ms, ratio {r['ratio']:.3f}; precompute "
            f"{r['precompute']['tokens_per_s']:.0f} tok/s ÷ training {r['precomputed']['tokens_per_s']:.0f} tok/s "
            f"= {r['precompute_ratio']:.2f}",
            flush=True,
        )
    params = sum(p.numel() for p in make_module(folder, cfg, "precomputed").hf_model.parameters())
    real = sum(real_tokens(b) for b in batches[cfg.warmup_steps :])
    return {
        "triples": cfg.num_triples,
        "params": params,
        "timed_real_fraction": real / repeats[0]["precomputed"]["computed_positions"],
        "repeats": repeats,
    }


def best_of_repeats(result: dict[str, Any]) -> dict[str, float]:
    """Step-time and precompute ratios from each step's (chunk's) fastest time over the repeats.

    Another process can only add time to a step, so the minimum over repeats of the same batch is the
    estimate least disturbed by a shared machine (the same batch, so the same work, in every repeat).
    """
    reps = result["repeats"]

    def fastest(get: Any) -> list[float]:
        return [min(times) for times in zip(*(get(r) for r in reps), strict=True)]

    live = fastest(lambda r: r["live"]["step_times"])
    cached = fastest(lambda r: r["precomputed"]["step_times"])
    chunks = fastest(lambda r: r["precompute"]["chunk_seconds"])
    train_tps = reps[0]["precomputed"]["timed_tokens"] / sum(cached)
    pre_tps = reps[0]["precompute"]["tokens"] / sum(chunks)
    return {"step_ratio": sum(cached) / sum(live), "precompute_ratio": pre_tps / train_tps}


def dpo_rows(result: dict[str, Any]) -> list[Row]:
    """The table rows of C8/C9 (plus the identical-work guards) from :func:`run_dpo_bench`'s result."""
    reps = result["repeats"]
    med = statistics.median
    b, rb = result["config"]["batch_size"], 2 * result["config"]["batch_size"]
    best = best_of_repeats(result)
    return [
        Row(
            "DPO step time precomputed ÷ live ref (median ratio)", med(r["ratio"] for r in reps), ("<=", 0.80)
        ),
        Row("same, median of per-step ratios (all repeats)", med(x for r in reps for x in r["step_ratios"])),
        Row("same, each step's fastest over the repeats", best["step_ratio"]),
        Row("step ms, live reference (median)", med(r["live"]["step_ms"] for r in reps), None, ".0f"),
        Row(
            "step ms, precomputed reference (median)",
            med(r["precomputed"]["step_ms"] for r in reps),
            None,
            ".0f",
        ),
        Row(
            f"precompute tok/s (batch {rb}) ÷ training tok/s (batch {b}), median",
            med(r["precompute_ratio"] for r in reps),
            (">=", 2.5),
        ),
        Row("same, each step's and chunk's fastest over the repeats", best["precompute_ratio"]),
        Row(
            "same, whole-split precompute call (not interleaved)",
            med(r["whole_split_precompute_ratio"] for r in reps),
        ),
        Row("precompute tokens/s (median)", med(r["precompute"]["tokens_per_s"] for r in reps), None, ".0f"),
        Row(
            "training tokens/s, precomputed ref (median)",
            med(r["precomputed"]["tokens_per_s"] for r in reps),
            None,
            ".0f",
        ),
        Row(
            "training tokens/s, live ref (median)", med(r["live"]["tokens_per_s"] for r in reps), None, ".0f"
        ),
        Row("real ÷ computed positions, timed training batches", result["timed_real_fraction"]),
        Row("same batches on both sides (CRC)", all(r["same_batches"] for r in reps), ("==", True)),
        Row(
            "loss difference live vs precomputed, first step",
            max(r["first_loss_diff"] for r in reps),
            ("<=", 1e-5),
            ".2e",
        ),
        Row(
            "max loss difference live vs precomputed, any step",
            max(r["max_loss_diff"] for r in reps),
            None,
            ".2e",
        ),
        Row("one torch thread count throughout", all(len(r["threads"]) == 1 for r in reps), ("==", True)),
    ]


def dpo_log_section(result: dict[str, Any], rows: list[Row], table_text: str, json_path: Any) -> str:
    """The dated Markdown section appended to docs/perf-log.md for the DPO part."""
    cfg, env = result["config"], result["environment"]
    reps = result["repeats"]
    per_rep = " ".join(
        f"({i}) live {r['live']['step_ms']:.0f} ms, precomputed "
        f"{r['precomputed']['step_ms']:.0f} ms → {r['ratio']:.3f}; precompute {r['precompute']['tokens_per_s']:.0f} "
        f"÷ training {r['precomputed']['tokens_per_s']:.0f} tok/s → {r['precompute_ratio']:.2f}"
        for i, r in enumerate(reps, start=1)
    )
    lines = [
        f"## {result['date']} — `make bench` (dpo): DPO step with a live vs a precomputed reference",
        "",
        f"- Machine: {env['machine']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"python {env['python']}; `torch.set_num_threads({cfg['threads']})`, fp32, eager.",
        f"- Model: random-init Qwen2 from UnitLMBuilder, {cfg['layers']} layers, hidden {cfg['hidden']}, FFN "
        f"{cfg['ffn']}, {cfg['heads']} heads / {cfg['kv_heads']} KV heads, vocab {cfg['num_units'] + 2} "
        f"({result['params'] / 1e6:.2f}M parameters), sdpa; exported once, every run a fresh `DPOAlignment` "
        f"from it (β {cfg['beta']}, AdamW lr {cfg['lr']}).",
        f"- Data: {result['triples']} synthetic triples (prompt {cfg['prompt_len'][0]}–{cfg['prompt_len'][1]} units, "
        f"completions {cfg['completion_len'][0]}–{cfg['completion_len'][1]}, uniform), context {cfg['context']}, "
        f"max prompt {cfg['max_prompt']}; the same {cfg['warmup_steps'] + cfg['steps']} batches of "
        f"{cfg['batch_size']} triples in the same order for every run (`reference_loader`).",
        f"- Method: step = `_evaluate(batch, 'train')` + backward + AdamW step + zero_grad, each timed; "
        f"{cfg['warmup_steps']} warm-up + {cfg['steps']} timed steps per side per repeat; the two sides "
        "alternate step by step (order rotating each step), fresh modules each repeat; ratio of a repeat = "
        f"Σ precomputed ÷ Σ live step seconds, median over {cfg['repeats']} repeats. Precompute = "
        f"`compute_reference_logps` at the module's default batch ({2 * cfg['batch_size']} triples = 2 × "
        "training), run over the split in one-batch chunks placed among the timed steps (same rotation), "
        "real tokens of both sides ÷ its seconds; training tokens/s = real tokens of both sides of the timed "
        "precomputed-reference steps ÷ their seconds. The whole-split precompute (one call, data loader "
        "included, not interleaved) is reported for information. "
        "Theory: 6N ÷ 8N = 0.75 and 6N ÷ 2N = 3.",
        f"- Load average (1 min) before / after: {result['load_average']['before'][0]:.2f} / "
        f"{result['load_average']['after'][0]:.2f}. Wall time {result['elapsed_s']:.0f} s.",
        f"- Per repeat: {per_rep}.",
        "",
        table_text,
        "",
    ]
    lines += [f"- Note: {n}" for n in result.get("notes") or []]
    if json_path is not None:
        lines.append(f"- JSON: `{json_path}`")
    return "\n".join(lines) + "\n\n"
