"""A chain of CPU DDP fits (gloo) of a tiny model through ``UnitDataModule``, each resumed on another world size.

Imported by the tests for :func:`tiny_corpus` and the run's constants. Run as a script it fits
:class:`WindowRecorder` once per link of ``CHAIN`` (a JSON list of ``[world size, max_steps]``;
``max_steps`` counts all steps so far, ``-1`` runs to the end of the first epoch), each on
``devices=W`` CPU processes with ``DDPStrategy`` over gloo, each resumed from the previous link's
checkpoint. Each fit saves ``OUT_DIR/run{i}/out.ckpt`` at its last step (mid-epoch, as
``ModelCheckpoint`` does; at the end of the epoch for ``-1``), and every rank writes
``OUT_DIR/run{i}/rank{N}.json``: the input ids of every window it trained on, in order, and its steps::

    python tests/data/sampling/ddp_resume_script.py OUT_DIR CORPUS CHAIN

The processes are forked (``start_method="fork"``) from this one, so the whole chain imports torch
and Lightning once: the data module, the sampler and the gloo collectives are those of any DDP run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

#: Context length of the recorded runs: windows hold ``CONTEXT + 1`` ids.
CONTEXT = 16
#: Windows per rank and step.
BATCH = 2
#: Seed of the window order.
SEED = 3
#: Units of the tiny corpus.
K = 20


def tiny_corpus(path: Path) -> Path:
    """A corpus of 24 documents whose ``24 * 2 + 721 = 769`` ids pack into exactly 48 windows of 17."""
    from slamming.data.corpus.writer import CorpusWriter

    rng = np.random.default_rng(11)
    identity = {"kind": "test", "k": K, "frame_rate": 25, "dedup": True, "settings_hash": "t0"}
    with CorpusWriter(path, tokenizer=identity, num_units=K) as writer:
        for i in range(24):
            writer.add(rng.integers(0, K, size=31 if i == 0 else 30))
    return path


class WindowRecorder(pl.LightningModule):
    """A tiny embedding regression that records the input ids of every window it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(K + 2, 4)
        self.head = torch.nn.Linear(4, 1)
        self.windows: list[list[int]] = []
        self.steps: list[int] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.windows.extend(batch["input_ids"].tolist())
        self.steps.append(self.global_step)
        return self.head(self.embed(batch["input_ids"])).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SaveAndRecord(Callback):
    """Saves ``run_dir/out.ckpt`` at step ``step`` (or at the epoch's end when None); each rank writes
    what it trained on into ``run_dir/rank{N}.json`` when training ends."""

    def __init__(self, run_dir: Path, step: int | None) -> None:
        self.run_dir, self.step = run_dir, step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.run_dir / "out.ckpt")

    def on_train_epoch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.step is None:
            trainer.save_checkpoint(self.run_dir / "out.ckpt")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, WindowRecorder)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "steps": pl_module.steps,
            "windows": pl_module.windows,
        }
        (self.run_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def fit(run_dir: Path, corpus: str, world: int, max_steps: int, ckpt_in: Path | None) -> None:
    """One DDP fit on ``world`` forked CPU processes, resumed from ``ckpt_in`` when given."""
    from lightning.pytorch.strategies import DDPStrategy

    from slamming.data.pretrain.datamodule import UnitDataModule

    run_dir.mkdir()
    os.environ.pop("MASTER_PORT", None)  # a fresh free port for every group
    model = WindowRecorder()
    data = UnitDataModule(train=corpus, context_length=CONTEXT, batch_size=BATCH, seed=SEED, pin_memory=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=DDPStrategy(process_group_backend="gloo", start_method="fork"),
        max_steps=max_steps,
        max_epochs=1 if max_steps < 0 else None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
        callbacks=[SaveAndRecord(run_dir, max_steps if max_steps > 0 else None)],
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_in)


def main(out_dir: str, corpus: str, chain: list[list[int]]) -> None:
    """Run the chain of fits (see the module docstring)."""
    import warnings

    warnings.filterwarnings(
        "ignore", message=".*resuming from a checkpoint that ended before the epoch ended"
    )
    torch.set_num_threads(1)
    ckpt = None
    for i, (world, max_steps) in enumerate(chain):
        run_dir = Path(out_dir) / f"run{i}"
        fit(run_dir, corpus, world, max_steps, ckpt)
        ckpt = run_dir / "out.ckpt"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
