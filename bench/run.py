"""``make bench``: CPU ratio benchmarks of slamming's pretraining path (perf-anchors §8a).

From one process, with ``torch.set_num_threads(2)`` and fp32:

* tokens/s of our ``lightning.pytorch.Trainer.fit(NextUnitPretraining, UnitDataModule)`` ÷ a plain
  ``transformers.Trainer`` doing identical work, interleaved ours/HF × 5, median of the per-pair
  ratios (goal ≥ 1.0; see ``pretrain_bench.py`` for how both sides are timed the same way);
* the packed batches' real-id fraction (goal ≥ 0.99) and trained-target fraction over ≥ 200
  batches, with pad-to-longest and pad-to-context baselines over the same documents;
* the data-wait fraction of our fit from the Throughput callback (goal ≤ 2 %);
* HuBERT unit extraction (``extract_bench.py``, rows C11/C12): real-time factor of a random-init
  hubert-base-shaped model at full depth, stopping at layer 11 and at layer 9 (50 Hz, and a 25 Hz
  variant), k-means assignment's share of extraction time (goal ≤ 2 %), and ``KMeans.assign`` ÷
  scikit-learn ``predict`` frames/s (goal ≥ 1.0) with the fraction of equal labels;
* DPO (``dpo_bench.py``, rows C8/C9): step time with a precomputed ÷ a live reference (goal ≤ 0.80),
  and reference-precompute ÷ training tokens/s (goal ≥ 2.5), interleaved × 5, median ratios;
* attention for packed documents (``attention_bench.py``): tokens/s and step memory of FlexAttention,
  sdpa with the 4-D mask and eager, side by side, each in its own process, same losses;
* bf16 update loss (``bf16_bench.py``): the share of a Qwen-shaped layer's parameters one AdamW step
  changes under bf16-true vs bf16-mixed at the DPO and pretraining learning rates;
* audio decoding (``audio_bench.py``): decode + resample throughput with fairseq2's native decoder
  vs soundfile in ``map``, and that both give the same samples.

Each part prints its table, writes ``bench/results/<timestamp>.json`` (extraction:
``<timestamp>-extract.json``; the others ``<timestamp>-<part>.json``) and appends a dated section to
``docs/perf-log.md``. ``--quick`` runs the same code at a toy size (for tests) and logs nothing;
``--only`` runs one part.

Usage::

    .venv/bin/python bench/run.py            # all parts (~15 min on 2 cores)
    .venv/bin/python bench/run.py --only extract
    .venv/bin/python bench/run.py --only dpo
    .venv/bin/python bench/run.py --quick --results-dir /tmp/b --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_bench import attention_log_section, attention_rows, run_attention_bench  # noqa: E402
from audio_bench import audio_log_section, audio_rows, run_audio_bench  # noqa: E402
from bench_corpus import packing_stats, write_bench_corpus  # noqa: E402
from bench_report import Row, append_perf_log, machine, perf_log_section, table, versions, write_json  # noqa: E402
from bf16_bench import bf16_log_section, bf16_rows, run_bf16_bench  # noqa: E402
from dpo_bench import QUICK_DPO, DPOBenchConfig, dpo_log_section, dpo_rows, run_dpo_bench  # noqa: E402
from extract_bench import QUICK_EXTRACT, ExtractConfig, extract_log_section, extract_rows, run_extract_bench  # noqa: E402
from pretrain_bench import BenchConfig, RunRecord, quiet_frameworks, run_hf, run_ours  # noqa: E402

#: Parts run by ``run_measured``: name → (measure(quick) → dict, rows(result), log section(result, json path)).
MEASURED_PARTS: dict[str, tuple[Any, Any, Any]] = {
    "attention": (run_attention_bench, attention_rows, attention_log_section),
    "bf16": (run_bf16_bench, bf16_rows, bf16_log_section),
    "audio": (run_audio_bench, audio_rows, audio_log_section),
}
PARTS = ("pretrain", "extract", "dpo", *MEASURED_PARTS)

REPO = Path(__file__).resolve().parent.parent
QUICK = BenchConfig(
    num_units=20, layers=1, hidden=64, ffn=128, context=64, batch_size=4, warmup_steps=1, steps=3
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy size: 1-layer model, 2 repeats of 3 steps")
    parser.add_argument(
        "--only",
        choices=("all", *PARTS),
        default="all",
        help="run one part: the pretraining comparison, HuBERT extraction + k-means, DPO, the attention "
        "paths, bf16 update loss or audio decoding (default all)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved pairs (pretrain: default 5; dpo: 5; quick 2)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per run (pretrain: default 20; dpo: 10; quick 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="warm-up steps per run (pretrain: default 3; dpo: 2; quick 1)",
    )
    parser.add_argument(
        "--stats-batches", type=int, default=None, help="batches for packing stats (default 200)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 for benchmarks, 1 in tests)")
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--log", type=Path, default=None, help="perf log to append to (default docs/perf-log.md)"
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not append to the perf log (implied by --quick)"
    )
    return parser.parse_args(argv)


def gemm_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` timed ``size``² fp32 GEMMs at the current thread count.

    Measured before every repeat and the maximum kept: one measurement taken while another process
    holds a core can read half the true peak (seen here: 82 vs 182 GFLOP/s), which would inflate
    MFU past 1. Throughput's own figure is measured once per process, so it is not used for the row.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def corpus_shape(cfg: BenchConfig, stats_batches: int) -> tuple[int, int, int]:
    """(documents, min_len, max_len): enough ids for the stats batches and for one run's steps."""
    min_len, max_len = max(2, round(cfg.context * 50 / 512)), max(4, round(cfg.context * 600 / 512))
    windows = max(stats_batches, cfg.total_steps) * cfg.batch_size
    mean_ids = (min_len + max_len) / 2 + 2
    return int(1.2 * windows * cfg.context / mean_ids) + 16, min_len, max_len


def record_dict(r: RunRecord) -> dict[str, Any]:
    keep = {k: v for k, v in asdict(r).items() if k not in ("crcs", "losses", "fit_summary")}
    keep["first_loss"], keep["last_loss"] = r.losses[0], r.losses[-1]
    if r.fit_summary:
        keep["fit_summary"] = {
            k: r.fit_summary.get(k)
            for k in ("tokens_per_sec", "data_wait_frac", "mfu", "flops_per_token", "peak_flops")
        }
    return keep


def build_rows(
    repeats: list[dict[str, Any]], ours: list[RunRecord], hf: list[RunRecord], stats: Any, peak: float
) -> list[Row]:
    """The table: throughput ratio, packing, data wait, and the identical-work guards."""
    ratios = [p["ratio"] for p in repeats]
    waits = [r.data_wait_frac for r in ours if r.data_wait_frac is not None]
    fit_waits = [
        r.fit_summary.get("data_wait_frac") for r in ours if r.fit_summary.get("data_wait_frac") is not None
    ]
    loss_diff = max(
        max(abs(a - b) for a, b in zip(o.losses, h.losses, strict=True))
        for o, h in zip(ours, hf, strict=True)
    )
    same = all(o.crcs == h.crcs for o, h in zip(ours, hf, strict=True))
    threads_ok = all(len(r.threads) == 1 for r in ours + hf)
    fpt = ours[0].fit_summary.get("flops_per_token")
    ours_tps = statistics.median(r.tokens_per_s for r in ours)
    return [
        Row("tokens/s ours ÷ HF Trainer (median ratio)", statistics.median(ratios), (">=", 1.0)),
        Row(
            "same, from median step times (robust to spikes)",
            statistics.median(
                o.median_step_tokens_per_s / h.median_step_tokens_per_s for o, h in zip(ours, hf, strict=True)
            ),
            None,
        ),
        Row("tokens/s ours (median)", ours_tps, None, ".0f"),
        Row("tokens/s HF Trainer (median)", statistics.median(r.tokens_per_s for r in hf), None, ".0f"),
        Row(
            f"packed: real-id fraction ({stats.batches} batches)", stats.packed_real_frac, (">=", 0.99), ".4f"
        ),
        Row("packed: trained-target fraction", stats.packed_target_frac, None, ".4f"),
        Row("pad-to-longest: real fraction (baseline)", stats.padded_longest_frac, None, ".4f"),
        Row("pad-to-context: real fraction (baseline)", stats.padded_context_frac, None, ".4f"),
        Row(
            "data-wait fraction, timed steps (median)",
            statistics.median(waits) if waits else None,
            ("<=", 0.02),
            ".4f",
        ),
        Row(
            "data-wait fraction, whole fit (median)",
            statistics.median(fit_waits) if fit_waits else None,
            None,
            ".4f",
        ),
        Row(
            "CPU MFU of our fit vs best measured GEMM",
            fpt * ours_tps / peak if fpt and peak else None,
            None,
            ".3f",
        ),
        Row("same batches on both sides (CRC)", same, ("==", True)),
        Row("max loss difference ours vs HF, any step", loss_diff, ("<=", 1e-4), ".2e"),
        Row("one torch thread count throughout", threads_ok, ("==", True)),
    ]


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the selected parts; returns their JSON results keyed ``pretrain`` / ``extract`` / ``dpo``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, Any]] = {}
    if args.only in ("all", "pretrain"):
        results["pretrain"] = run_pretrain(args)
    if args.only in ("all", "extract"):
        results["extract"] = run_extract(args)
    if args.only in ("all", "dpo"):
        results["dpo"] = run_dpo(args)
    for name, (measure, rows_of, section_of) in MEASURED_PARTS.items():
        if args.only in ("all", name):
            results[name] = run_measured(args, name, measure, rows_of, section_of)
    return results


def run_measured(
    args: argparse.Namespace, name: str, measure: Any, rows_of: Any, section_of: Any
) -> dict[str, Any]:
    """A part whose module measures, tabulates and writes its log section itself (``measure(quick)``)."""
    started = datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "date": started.strftime("%a %b %d %H:%M:%S %Z %Y"),
        "quick": args.quick,
        "environment": {"machine": machine(), **versions()},
        **measure(args.quick),
    }
    result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    result["elapsed_s"] = time.perf_counter() - t0
    result["notes"] = _load_notes(args, result, load_before, "absolute figures")
    rows = rows_of(result)
    result["rows"] = [r.as_dict() for r in rows]
    _report(args, result, rows, started, f"-{name}", lambda shown: section_of(result, shown))
    return result


def _report(
    args: argparse.Namespace,
    result: dict[str, Any],
    rows: list[Row],
    started: datetime,
    suffix: str,
    section: Any,
) -> None:
    """Write one part's JSON (``<stamp><suffix>.json``), print its table, notes and path, and log it."""
    json_path = write_json(result, args.results_dir, started, suffix)
    print(table(rows))
    for n in result["notes"]:
        print(f"note: {n}")
    print(f"results: {json_path} ({result['elapsed_s']:.0f} s)")
    _log(args, json_path, section)


def _log(args: argparse.Namespace, json_path: Path, section: Any) -> None:
    """Append ``section(shown_json_path)`` to the perf log unless ``--quick`` / ``--no-log``."""
    if args.quick or args.no_log:
        return
    log_path = args.log or REPO / "docs" / "perf-log.md"
    try:
        shown = json_path.relative_to(REPO)
    except ValueError:
        shown = json_path
    append_perf_log(log_path, section(shown))
    print(f"appended to {log_path}")


def _result(
    args: argparse.Namespace,
    cfg: Any,
    measured: dict[str, Any],
    started: datetime,
    load_before: tuple,
    t0: float,
) -> dict[str, Any]:
    """The JSON record of one benchmark part: date, environment, config, measurements, load, time."""
    return {
        "date": started.strftime("%a %b %d %H:%M:%S %Z %Y"),
        "quick": args.quick,
        "environment": {"machine": machine(), **versions()},
        "config": {**asdict(cfg), "threads": args.threads},
        **measured,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "elapsed_s": time.perf_counter() - t0,
    }


def _load_notes(args: argparse.Namespace, result: dict[str, Any], load_before: tuple, what: str) -> list[str]:
    """A note when other processes loaded the CPU during the part (its absolute figures are then depressed)."""
    if max(load_before[0], result["load_average"]["after"][0]) > args.threads + 0.5:
        return [
            f"load average above the {args.threads} benchmark threads (other processes were using the CPU); "
            f"{what} are depressed, the interleaved ratios less so"
        ]
    return []


def run_extract(args: argparse.Namespace) -> dict[str, Any]:
    """HuBERT extraction real-time factor and k-means assignment rows (``extract_bench.py``)."""
    cfg = QUICK_EXTRACT if args.quick else ExtractConfig()
    started = datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    measured = run_extract_bench(cfg, args.threads)
    result = _result(args, cfg, measured, started, load_before, t0)
    notes = _load_notes(args, result, load_before, "real-time factors")
    spread = max(max(t) / min(t) for t in result["hz50"]["seconds"].values())
    if spread > 1.25:
        notes.append(
            f"one depth's 50 Hz pass times spread by {spread:.2f}×: disturbed run, the medians are kept"
        )
    result["notes"] = notes
    rows = extract_rows(result)
    result["rows"] = [r.as_dict() for r in rows]
    _report(
        args,
        result,
        rows,
        started,
        "-extract",
        lambda shown: extract_log_section(result, rows, table(rows), shown),
    )
    return result


def run_dpo(args: argparse.Namespace) -> dict[str, Any]:
    """DPO step time with a live vs a precomputed reference, and precompute throughput (``dpo_bench.py``)."""
    quiet_frameworks()
    cfg = QUICK_DPO if args.quick else DPOBenchConfig()
    cfg = replace(
        cfg,
        steps=args.steps or cfg.steps,
        warmup_steps=args.warmup or cfg.warmup_steps,
        repeats=args.repeats or cfg.repeats,
    )
    started = datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slamming-bench-dpo-") as tmp:
        measured = run_dpo_bench(cfg, Path(tmp))
    result = _result(args, cfg, measured, started, load_before, t0)
    notes = _load_notes(args, result, load_before, "step times and tokens/s")
    ratios = [r["ratio"] for r in result["repeats"]]
    if max(ratios) / min(ratios) > 1.25:
        notes.append(
            f"per-repeat step-time ratios spread {min(ratios):.3f}–{max(ratios):.3f}: disturbed run, the median is kept"
        )
    result["notes"] = notes
    rows = dpo_rows(result)
    result["rows"] = [r.as_dict() for r in rows]
    _report(
        args, result, rows, started, "-dpo", lambda shown: dpo_log_section(result, rows, table(rows), shown)
    )
    return result


def run_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    """Our fit vs transformers.Trainer, packing and data-wait rows (``pretrain_bench.py``)."""
    quiet_frameworks()
    cfg = QUICK if args.quick else BenchConfig()
    cfg = replace(
        cfg,
        steps=args.steps or cfg.steps,
        warmup_steps=args.warmup or cfg.warmup_steps,
    )
    n_repeats = args.repeats or (2 if args.quick else 5)
    stats_batches = args.stats_batches or (20 if args.quick else 200)
    started = datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="slamming-bench-") as tmp:
        work = Path(tmp)
        n_docs, min_len, max_len = corpus_shape(cfg, stats_batches)
        corpus = write_bench_corpus(work / "corpus", n_docs, cfg.num_units, min_len, max_len, seed=cfg.seed)
        stats = packing_stats(corpus, cfg.context, cfg.batch_size, stats_batches, seed=cfg.seed)
        ours: list[RunRecord] = []
        hf: list[RunRecord] = []
        repeats: list[dict[str, Any]] = []
        peaks: list[float] = []
        for i in range(n_repeats):
            peaks.append(gemm_peak_flops(size=512 if args.quick else 2048))
            ours.append(run_ours(cfg, corpus, work / f"ours-{i}"))
            hf.append(run_hf(cfg, corpus, work / f"hf-{i}"))
            ratio = ours[-1].tokens_per_s / hf[-1].tokens_per_s
            repeats.append({"ratio": ratio, "ours": record_dict(ours[-1]), "hf": record_dict(hf[-1])})
            print(
                f"repeat {i + 1}/{n_repeats}: ours {ours[-1].tokens_per_s:.0f} tok/s, "
                f"HF {hf[-1].tokens_per_s:.0f} tok/s, ratio {ratio:.3f}",
                flush=True,
            )

    rows = build_rows(repeats, ours, hf, stats, max(peaks))
    load_after = os.getloadavg()
    notes = []
    ratios = [p["ratio"] for p in repeats]
    if max(load_before[0], load_after[0]) > args.threads + 0.5:
        notes.append(
            f"load average above the {args.threads} benchmark threads (other processes were using the CPU); "
            "absolute tokens/s are depressed, the interleaved ratios less so"
        )
    if max(ratios) / min(ratios) > 1.25:
        notes.append(
            f"per-repeat ratios spread {min(ratios):.3f}–{max(ratios):.3f}: disturbed run, the median is kept"
        )
    result: dict[str, Any] = {
        "date": started.strftime("%a %b %d %H:%M:%S %Z %Y"),
        "quick": args.quick,
        "environment": {"machine": machine(), **versions()},
        "config": {
            **asdict(cfg),
            "repeats": n_repeats,
            "threads": args.threads,
            "stats_batches": stats_batches,
        },
        "corpus": {"documents": n_docs, "min_len": min_len, "max_len": max_len},
        "rows": [r.as_dict() for r in rows],
        "repeats": repeats,
        "packing": asdict(stats),
        "gemm_peak_flops": peaks,
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "notes": notes,
        "elapsed_s": time.perf_counter() - t0,
    }
    _report(args, result, rows, started, "", lambda shown: perf_log_section(result, rows, shown))
    return result


if __name__ == "__main__":
    main()
