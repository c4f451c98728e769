"""Check and summarise a finished pretraining run: loss drop, TensorBoard files, export fidelity.

Usage: ``python scripts/demo_report.py [RUN_DIR]`` (default: the newest ``runs/tiny/version_*``).
Prints the validation loss at step 0 and at the end, the relative drop, the TensorBoard event
files, and whether the exported Hugging Face folder gives the same logits as the final checkpoint.
Exits 1 if an artifact is missing or the logits differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from slamming.models.unit_lm import unit_lm_from_checkpoint


def newest_run(root: Path = Path("runs/tiny")) -> Path:
    runs = sorted(root.glob("version_*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit(f"no run under {root}: run `make demo` first")
    return runs[-1]


def final_checkpoint(run: Path) -> Path:
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        sys.exit(f"no checkpoint in {run / 'checkpoints'}")
    return ckpts[-1]


def main() -> int:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else newest_run()
    events = sorted(run.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run))
    acc.Reload()
    val = {e.step: e.value for e in acc.Scalars("val/loss")}
    start, end_step = val.get(0), max(val)
    end = val[end_step]
    print(f"run                 {run}")
    print(f"tensorboard events  {len(events)} file(s): {', '.join(e.name for e in events)}")
    if start is not None:
        print(
            f"val/loss            step 0: {start:.4f}  ->  step {end_step}: {end:.4f}  ({100 * (1 - end / start):.1f} % lower)"
        )
    ckpt = final_checkpoint(run)
    hf = AutoModelForCausalLM.from_pretrained(run / "hf_model").eval()
    ref, _ = unit_lm_from_checkpoint(ckpt)
    ids = torch.randint(0, hf.config.vocab_size, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(ids).logits - ref(ids).logits).abs().max().item()
    same = diff == 0.0
    print(
        f"export              {run / 'hf_model'} vs {ckpt.name}: max |logit diff| = {diff:.3g} ({'identical' if same else 'DIFFERENT'})"
    )
    return 0 if events and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
