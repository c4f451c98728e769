"""A 2-process CPU DDP (gloo) pretraining fit under :class:`BenchmarkEvaluation`, for the sharding test.

Run as a script (Lightning re-runs it for rank 1)::

    python tests/callbacks/ddp_benchmark_script.py OUT_DIR SETTINGS_JSON

``SETTINGS_JSON`` holds ``cache_dir`` (a built synthetic speech corpus: both ranks reuse it),
``data`` (its SyntheticSpeechDataModule arguments), ``backbone`` (UnitLMBuilder arguments),
``num_units``, ``specs`` (the benchmarks), ``every_n_steps``, ``batch_size`` and ``max_steps``.
Each rank writes ``rank{N}.json``: at every scored step the callback's scores and this rank's share
of the work; rank 0 also the reference scores of the same weights by one process
(:func:`slamming.eval.likelihood.score_units` on every file, tokenised anew, as ``slamming test``
scores), and the files each benchmark has.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class Recorder(Callback):
    """Runs after :class:`BenchmarkEvaluation`: records its scores and work at each scored step."""

    def __init__(self, bench: Any) -> None:
        self.bench = bench
        self.steps: dict[int, dict[str, Any]] = {}
        self.prepared_files: int | None = None

    def _record(self, trainer: pl.Trainer, pl_module: Any) -> None:
        from slamming.data.benchmarks.readers import load_benchmarks
        from slamming.eval.likelihood import score_units
        from slamming.speech.audio import read_audio
        from slamming.speech.tokenizers import load_tokenizer

        if self.prepared_files is None:
            self.prepared_files = self.bench.shard_work["files"]
        step = trainer.global_step
        if self.bench.scored_step != step or step in self.steps:
            return
        record: dict[str, Any] = {
            "scores": {name: scores.tolist() for name, scores in self.bench.scores.items()},
            "work": dict(self.bench.shard_work),
        }
        if trainer.is_global_zero:
            # The reference: one process, every file tokenised anew, scored as `slamming test` does.
            tokenizer = load_tokenizer(pl_module.tokenizer_dir)
            model = copy.deepcopy(pl_module.hf_model).float().eval()
            length = model.config.max_position_embeddings
            record["reference"], record["pairs"] = {}, {}
            for spec in self.bench.specs:
                for bench in load_benchmarks(spec):
                    pairs = bench.pairs[: self.bench.max_pairs]
                    paths = [p.positive for p in pairs] + [p.negative for p in pairs]
                    units = [tokenizer.encode(read_audio(path, 16000))[0] for path in paths]
                    scores, _ = score_units(model, units, True, self.bench.batch_size, length)
                    n = len(pairs)
                    record["reference"][bench.name] = torch.stack([scores[:n], scores[n:]], dim=1).tolist()
                    record["pairs"][bench.name] = n
        self.steps[step] = record

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self._record(trainer, pl_module)


def main(out_dir: str, settings_path: str) -> None:
    """Fit on 2 gloo processes and write each rank's record."""
    from lightning.pytorch.strategies import DDPStrategy

    from slamming.callbacks.benchmark_eval import BenchmarkEvaluation
    from slamming.data.pretrain import SyntheticSpeechDataModule
    from slamming.models.unit_lm import UnitLMBuilder
    from slamming.tasks.pretrain import NextUnitPretraining

    with open(settings_path) as handle:
        settings = json.load(handle)
    torch.set_num_threads(1)  # both ranks and the reference compute with the same kernels
    torch.manual_seed(0)
    module = NextUnitPretraining(
        UnitLMBuilder(**settings["backbone"]),
        num_units=settings["num_units"],
        context_length=64,
        lr=3e-2,
        export=False,
    )
    data = SyntheticSpeechDataModule(
        cache_dir=settings["cache_dir"], progress=False, context_length=64, batch_size=4, **settings["data"]
    )
    bench = BenchmarkEvaluation(
        settings["specs"], every_n_steps=settings["every_n_steps"], batch_size=settings["batch_size"]
    )
    recorder = Recorder(bench)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo"),
        max_steps=settings["max_steps"],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
        callbacks=[bench, recorder],
    )
    trainer.fit(module, datamodule=data)
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "prepared_files": recorder.prepared_files,
        "steps": {str(step): record for step, record in recorder.steps.items()},
        "results": bench.results,
    }
    with open(os.path.join(out_dir, f"rank{trainer.global_rank}.json"), "w") as handle:
        json.dump(result, handle, default=lambda value: np.asarray(value).tolist())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
