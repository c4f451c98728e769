"""Check and summarise the demo's runs: pretraining (loss drop) and DPO (held-out preference accuracy).

Usage: ``python scripts/demo_report.py [PRETRAIN_RUN] [--dpo DPO_RUN]``. Defaults: the newest
``runs/tiny/version_*`` and, when there is one, the newest ``runs/tiny-dpo/version_*``.

For the pretraining run it prints the validation loss at step 0 and at the end with the relative
drop; for the DPO run, the held-out preference accuracy (chosen completion more likely per token than
the rejected one, on triples never trained on) of the pretrained model (step 0) and after DPO, with
the DPO loss and reward accuracy. For both: the TensorBoard event files, and whether the exported
Hugging Face folder gives the same logits as the final checkpoint. Then, where ``slamming test
--config configs/tiny/eval.yaml`` has written ``hf_model/eval-results.json``, the table of the
embedded benchmarks before and after DPO: each accuracy with its 95 % interval, and DPO's paired
difference on the same pairs with its 95 % interval (``*`` where it excludes zero). Exits 1 if an
artifact is missing or the logits differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from slamming.eval.intervals import decode_outcomes, paired_difference
from slamming.models.unit_lm import unit_lm_from_checkpoint


def newest_run(root: Path) -> Path | None:
    runs = sorted(root.glob("version_*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def final_checkpoint(run: Path) -> Path:
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        sys.exit(f"no checkpoint in {run / 'checkpoints'}")
    return ckpts[-1]


def scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return {}
    return {e.step: e.value for e in acc.Scalars(tag)}


def check_export(run: Path) -> bool:
    """Print and return whether ``run/hf_model`` gives the final checkpoint's logits exactly."""
    ckpt = final_checkpoint(run)
    ref, _ = unit_lm_from_checkpoint(ckpt)
    # The same attention kernel on both sides: eager and sdpa differ in the last bits.
    hf = AutoModelForCausalLM.from_pretrained(
        run / "hf_model", attn_implementation=ref.config._attn_implementation
    ).eval()
    ids = torch.randint(0, hf.config.vocab_size, (4, 128), generator=torch.Generator().manual_seed(0))
    # One thread: with two, the CPU kernels may split a reduction differently between the two
    # forwards, and identical weights then differ in the last bits (0.00092 seen once in ~10 runs).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            diff = (hf(ids).logits - ref(ids).logits).abs().max().item()
    finally:
        torch.set_num_threads(threads)
    same = diff == 0.0
    print(
        f"export              {run / 'hf_model'} vs {ckpt.name}: max |logit diff| = {diff:.3g} ({'identical' if same else 'DIFFERENT'})"
    )
    return same


def report_run(run: Path) -> bool:
    events = sorted(run.glob("events.out.tfevents.*"))
    print(f"run                 {run}")
    print(f"tensorboard events  {len(events)} file(s): {', '.join(e.name for e in events)}")
    return bool(events)


def report_pretraining(run: Path) -> bool:
    ok = report_run(run)
    val = scalars(run, "val/loss")
    if val and 0 in val:
        end_step = max(val)
        start, end = val[0], val[end_step]
        print(
            f"val/loss            step 0: {start:.4f}  ->  step {end_step}: {end:.4f}  ({100 * (1 - end / start):.1f} % lower)"
        )
    return check_export(run) and ok


def report_dpo(run: Path) -> bool:
    ok = report_run(run)
    accuracy = scalars(run, "val/pref_accuracy")
    if accuracy and 0 in accuracy:
        end_step = max(accuracy)
        print(
            f"held-out preference accuracy  pretrained (step 0): {accuracy[0]:.4f}  ->  after DPO (step {end_step}): "
            f"{accuracy[end_step]:.4f}  ({100 * (accuracy[end_step] - accuracy[0]):+.1f} points)"
        )
        per_unit = scalars(run, "val/pref_accuracy_per_token")
        if 0 in per_unit and end_step in per_unit:
            print(
                f"  the same per unit (mean log-likelihood, as the pair benchmarks): {per_unit[0]:.4f}  ->  "
                f"{per_unit[end_step]:.4f}  ({100 * (per_unit[end_step] - per_unit[0]):+.1f} points)"
            )
        # val/loss adds the RPO term when model.rpo_alpha > 0; val/dpo_loss is DPO's own.
        loss = scalars(run, "val/dpo_loss") or scalars(run, "val/loss")
        rewards = scalars(run, "val/rewards/accuracy")
        if end_step in loss and end_step in rewards:
            print(
                f"held-out DPO loss   step 0: {loss[0]:.4f}  ->  step {end_step}: {loss[end_step]:.4f};  "
                f"reward accuracy at step {end_step}: {rewards[end_step]:.4f}"
            )
    else:
        print("held-out preference accuracy: not logged (no validation data)")
    return check_export(run) and ok


def report_benchmarks(runs: dict[str, Path]) -> None:
    """The embedded benchmarks' table (``slamming test --config configs/tiny/eval.yaml`` results):
    each accuracy with its 95 % interval and, for two models scored on the same pairs, the paired
    difference (the second minus the first) with its 95 % interval."""
    results, scores = {}, set()
    for label, run in runs.items():
        path = run / "hf_model" / "eval-results.json"
        if path.is_file():
            payload = json.loads(path.read_text())
            results[label] = payload["benchmarks"]
            scores.add(payload.get("score", "mean log-likelihood per unit"))
    if not results:
        return
    names = [n for n in next(iter(results.values())) if all(n in r for r in results.values())]
    labels = list(results)
    paired = len(labels) == 2
    print()
    print(
        f"embedded benchmarks (held-out pairs, accuracy % [95 % interval], {' / '.join(sorted(scores))}; chance 50)"
    )
    header = f"  {'benchmark':<14} {'pairs':>6}  " + "  ".join(f"{label:>22}" for label in labels)
    print(header + (f"  {'difference [95 % interval]':>30}" if paired else ""))
    for name in names:
        pairs = next(iter(results.values()))[name]["pairs"]
        cells = "  ".join(_with_interval(r[name]) for r in results.values())
        line = f"  {name:<14} {pairs:>6}  {cells}"
        if paired:
            line += f"  {_difference(*(results[label][name] for label in labels)):>30}"
        print(line)


def _with_interval(summary: dict) -> str:
    accuracy = f"{100 * summary['accuracy']:.2f}"
    if "ci95" in summary:
        low, high = summary["ci95"]
        accuracy += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return f"{accuracy:>22}"


def _difference(before: dict, after: dict) -> str:
    """``+x.xx [low, high]`` points, marked ``*`` when the interval excludes zero; empty when the
    per-pair outcomes are missing or not of the same pairs."""
    if (
        "outcomes" not in before
        or "outcomes" not in after
        or len(before["outcomes"]) != len(after["outcomes"])
    ):
        return ""
    mean, low, high = paired_difference(
        decode_outcomes(before["outcomes"]), decode_outcomes(after["outcomes"])
    )
    mark = " *" if low > 0 or high < 0 else ""
    return f"{100 * mean:+.2f} [{100 * low:+.1f}, {100 * high:+.1f}]{mark}"


def report_stages(path: Path) -> None:
    """Print the seconds of each ``make demo`` stage recorded by scripts/stage.sh, and their sum."""
    if not path.is_file():
        return
    stages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, seconds = line.rpartition("\t")
        if name and seconds.isdigit():
            stages.append((name, int(seconds)))
    if not stages:
        return
    total = sum(seconds for _, seconds in stages)
    print(f"\nwhere the minutes went ({path}):")
    width = max(len(name) for name, _ in stages)
    for name, seconds in stages:
        print(
            f"  {name:<{width}}  {seconds // 60:2d} min {seconds % 60:02d} s  {100 * seconds / max(total, 1):3.0f} %"
        )
    print(f"  {'total':<{width}}  {total // 60:2d} min {total % 60:02d} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run", nargs="?", type=Path, help="pretraining run (default: newest runs/tiny/version_*)"
    )
    parser.add_argument("--dpo", type=Path, help="DPO run (default: newest runs/tiny-dpo/version_*, if any)")
    args = parser.parse_args(argv)
    run = args.run or newest_run(Path("runs/tiny"))
    if run is None:
        sys.exit("no run under runs/tiny: run `make demo` first")
    ok = report_pretraining(run)
    dpo = args.dpo or (None if args.run else newest_run(Path("runs/tiny-dpo")))
    if dpo is not None:
        print()
        ok = report_dpo(dpo) and ok
    report_benchmarks({"pretrained": run, **({"after DPO": dpo} if dpo is not None else {})})
    if args.run is None:  # the stages of `make demo`, which made the newest runs
        report_stages(Path("runs/demo-stages.tsv"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
