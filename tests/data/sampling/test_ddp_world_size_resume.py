"""Resume on another number of ranks: real gloo DDP fits through ``UnitDataModule`` (issue 12, item 2).

One chain of CPU DDP fits on one 48-window epoch, each resumed from the previous one's mid-epoch
checkpoint on another world size: 4 ranks → 2 → 1 → 2 (to the end of the epoch), so the transitions
4→2, 2→1 and 1→2 each happen once. Every rank records the windows it trained on; together the runs
must have trained on every window of the epoch exactly once, each run on the next slice of the
epoch's order, and each checkpoint must record where that slice ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from slamming.data.corpus.format import UnitCorpus
from slamming.data.pretrain.windows import PackedWindowDataset

from .ddp_resume_script import BATCH, CONTEXT, SEED, tiny_corpus

SCRIPT = Path(__file__).with_name("ddp_resume_script.py")
WINDOWS = 48


def _run_chain(out: Path, corpus: Path, chain: list[tuple[int, int]]) -> None:
    """Run the script's chain of DDP fits (one invocation; the ranks are forked per fit)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env.pop("MASTER_PORT", None)  # let Lightning pick a free port
    # A hang in a collective would block forever: the timeout turns it into a failure.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(corpus), json.dumps(chain)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _position(ckpt: Path) -> dict[str, Any]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["UnitDataModule"]
    return {key: state[key] for key in ("epoch", "position", "world_size", "epoch_items")}


def test_resuming_on_4_2_1_2_ranks_trains_on_one_epoch_exactly(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    reference = PackedWindowDataset([UnitCorpus(corpus)], CONTEXT, None, SEED, shuffle=True)
    assert len(reference) == WINDOWS
    # Window k of epoch 0's order, by its input ids (all 48 differ, so the ids name the window).
    index = {tuple(reference[(0, k)][0][:CONTEXT].tolist()): k for k in range(WINDOWS)}
    assert len(index) == WINDOWS

    # (world size, max_steps in all; -1 = to the end of the epoch) and the slice of the order each
    # run must train on: 2 steps × 2 windows × 4 ranks, then 2 × 2 × 2, 3 × 2 × 1, and the rest.
    assert BATCH == 2
    chain = [(4, 2, 0, 16), (2, 4, 16, 24), (1, 7, 24, 30), (2, -1, 30, 48)]
    out = tmp_path / "runs"
    out.mkdir()
    _run_chain(out, corpus, [(world, max_steps) for world, max_steps, _, _ in chain])
    seen: list[int] = []
    for i, (world, _, start, stop) in enumerate(chain):
        ranks = [json.loads((out / f"run{i}" / f"rank{rank}.json").read_text()) for rank in range(world)]
        ckpt = out / f"run{i}" / "out.ckpt"
        for rank, record in enumerate(ranks):
            assert record["world_size"] == world
            windows = [index[tuple(ids)] for ids in record["windows"]]
            # Rank r of W takes items start + r, start + r + W, ... of the epoch's order.
            assert windows == list(range(start + rank, stop, world)), (i, rank)
            seen += windows
        first_step = 0 if i == 0 else chain[i - 1][1]
        last_step = chain[i][1] if chain[i][1] > 0 else first_step + 5  # 9 windows per rank, batches of 2
        assert all(r["steps"] == list(range(first_step, last_step)) for r in ranks)  # every rank, every step
        expected = (1, 0) if stop == WINDOWS else (0, stop)  # a finished epoch moves to the next one
        assert _position(ckpt) == {
            "epoch": expected[0],
            "position": expected[1],
            "world_size": world,
            "epoch_items": WINDOWS,
        }
    assert ranks[0]["global_step"] == 12
    # The union over the four runs is one uninterrupted epoch: every window once, none twice.
    assert sorted(seen) == list(range(WINDOWS))
