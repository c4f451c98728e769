"""``BenchmarkEvaluation``: score pair benchmarks during training and log them to TensorBoard.

Validation loss alone misleads for speech LMs (reference/embedded-units.md: frame-level units
reached a low loss with no topic learning at all), so a researcher wants to watch tStoryCloze or
sWUGGY rise while pretraining runs. This callback reads the chosen benchmarks once
(:func:`slamming.data.benchmarks.readers.load_benchmarks`), turns every file into units once with the model's
tokeniser (each file alone, as ``slamming test`` does), and every ``every_n_steps`` optimizer steps —
and before the first — scores them with the model being trained
(:mod:`slamming.eval.likelihood`), logging ``bench/<name>/accuracy`` (and the ZeroSpeech
aggregation when the layout has one) at the global step.

The scoring runs on rank 0 only, in eval mode without gradients, and its time is excluded from the
compute budget like validation. It scores in fp32 by default, as the authors and ``slamming test``
do, whatever the training precision: ``bf16-mixed`` trains fp32 weights, which are scored in place
with autocast off; ``bf16-true`` trains bf16 weights, which are scored through a temporary fp32
copy (4 bytes per parameter while scoring, released after; :func:`slamming.eval.precision.scoring_model`
says why a copy rather than casting the training model and back). Either way the training model's
weights, dtype, train/eval flags and random state are untouched. The numbers equal what
``slamming test`` reports for the same weights and pairs.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from slamming.callbacks.budget import ComputeBudget
from slamming.contracts import HFModelHolder, TokenizerRecord, require
from slamming.data.benchmarks.readers import PairBenchmark, load_benchmarks
from slamming.errors import SlammingError
from slamming.eval.likelihood import pair_outcomes, score_units, summarize_pairs
from slamming.eval.precision import SCORING_DTYPE, check_dtype, scoring_model
from slamming.speech.audio import read_audio
from slamming.speech.tokenizers import check_identity, load_tokenizer

log = logging.getLogger(__name__)


class BenchmarkEvaluation(Callback):
    """Score pair benchmarks every N optimizer steps of a fit.

    Args:
        benchmarks: Benchmark specs as in ``configs/eval.yaml`` (``kind``, ``path``, optional
            ``name``, ``split``, ``parts``).
        every_n_steps: Score after every this many optimizer steps (and before the first).
        tokenizer: Folder of the units' tokeniser; None: the one the module records
            (``pl_module.tokenizer_dir``, set by the pretraining and DPO modules).
        max_pairs: Score at most this many pairs per benchmark (the first ones), to keep the
            in-training check cheap; None scores all.
        batch_size: Sequences per forward pass.
        mean: Mean per-token log-likelihood (the paper's metric) instead of the sum.
        dtype: Score with weights of this dtype and autocast off: ``float32`` (the default, the
            authors'), ``bfloat16`` or ``float16``; null scores the model as it trains, under the
            trainer's precision.
    """

    def __init__(
        self,
        benchmarks: list[dict[str, Any]],
        every_n_steps: int = 500,
        tokenizer: str | None = None,
        max_pairs: int | None = 200,
        batch_size: int = 32,
        mean: bool = True,
        dtype: str | None = SCORING_DTYPE,
    ) -> None:
        if every_n_steps < 1:
            raise SlammingError(f"BenchmarkEvaluation: every_n_steps must be >= 1, got {every_n_steps}")
        if not benchmarks:
            raise SlammingError("BenchmarkEvaluation: give at least one benchmark")
        check_dtype(dtype, "BenchmarkEvaluation: dtype")
        self.specs = [dict(spec) for spec in benchmarks]
        self.every_n_steps = int(every_n_steps)
        self.tokenizer_path = tokenizer
        self.max_pairs = max_pairs
        self.batch_size = int(batch_size)
        self.mean = mean
        self.dtype = dtype
        self._units: list[tuple[PairBenchmark, list[np.ndarray], list[np.ndarray]]] | None = None
        self._last_step: int | None = None
        #: The latest results: ``{benchmark name: summarize_pairs(...) dict}``.
        self.results: dict[str, dict[str, Any]] = {}
        #: The latest scores: ``{benchmark name: (pairs, 2) array}``, positive then negative side.
        self.scores: dict[str, np.ndarray] = {}
        #: The global step of the latest scoring, None before the first.
        self.scored_step: int | None = None

    # -- preparation ------------------------------------------------------------------------------
    def _tokenizer_dir(self, pl_module: pl.LightningModule) -> Path:
        if self.tokenizer_path:
            return Path(self.tokenizer_path)
        require(pl_module, TokenizerRecord, "BenchmarkEvaluation", "set the callback's tokenizer folder")
        found = pl_module.tokenizer_dir
        if not found:
            raise SlammingError(
                "BenchmarkEvaluation: the model records no tokeniser folder; set the callback's tokenizer "
                "to the folder of the tokeniser its units come from"
            )
        return Path(found)

    def _prepare(self, pl_module: pl.LightningModule) -> None:
        """Read the benchmarks and tokenise every file once (rank 0)."""
        started = time.perf_counter()
        tokenizer = load_tokenizer(self._tokenizer_dir(pl_module), device=pl_module.device)
        expected = pl_module.tokenizer_identity if isinstance(pl_module, TokenizerRecord) else None
        if expected:
            check_identity(
                expected, tokenizer.identity, what="BenchmarkEvaluation's tokeniser (vs the model's)"
            )
        self._units = []
        for spec in self.specs:
            for bench in load_benchmarks(spec):
                pairs = bench.pairs[: self.max_pairs] if self.max_pairs else bench.pairs
                sides: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
                for pair in pairs:
                    for side, path in zip(sides, (pair.positive, pair.negative), strict=True):
                        side.append(np.asarray(tokenizer.encode(read_audio(path, 16000))[0]))
                bench = PairBenchmark(bench.name, bench.kind, bench.path, list(pairs), bench.skipped)
                self._units.append((bench, *sides))
        sizes = ", ".join(f"{b.name} {len(b.pairs)}" for b, _, _ in self._units)
        rank_zero_info(
            f"BenchmarkEvaluation: tokenised {sizes} pairs in {time.perf_counter() - started:.1f} s; "
            f"scoring every {self.every_n_steps} steps"
        )

    # -- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict[str, Any]]:
        """Score every benchmark with the current weights and log the accuracies."""
        if self._units is None:
            self._prepare(pl_module)
        assert self._units is not None
        model = pl_module.hf_model if isinstance(pl_module, HFModelHolder) else pl_module.model
        max_length = getattr(model.config, "max_position_embeddings", None)
        metrics: dict[str, float] = {}
        precision = trainer.precision_plugin.forward_context() if self.dtype is None else nullcontext()
        with scoring_model(model, self.dtype) as scorer, precision:
            for bench, positives, negatives in self._units:
                scores, _ = score_units(scorer, positives + negatives, self.mean, self.batch_size, max_length)
                n = len(positives)
                self.scores[bench.name] = np.stack([scores[:n].numpy(), scores[n:].numpy()], axis=1)
                outcomes = pair_outcomes(scores[:n], scores[n:])
                pairs = bench.pairs
                summary = summarize_pairs(
                    outcomes, [p.id for p in pairs], [p.group for p in pairs], bench.zerospeech
                )
                self.results[bench.name] = summary
                metrics[f"bench/{bench.name}/accuracy"] = summary["accuracy"]
                if "zerospeech_accuracy" in summary:
                    metrics[f"bench/{bench.name}/zerospeech_accuracy"] = summary["zerospeech_accuracy"]
        self.scored_step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        rank_zero_info(
            f"step {trainer.global_step}: "
            + ", ".join(
                f"{name.split('/')[1]} {value:.3f}"
                for name, value in metrics.items()
                if name.endswith("/accuracy")
            )
        )
        return self.results

    def _maybe_score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        budget = next((cb for cb in trainer.callbacks if isinstance(cb, ComputeBudget)), None)
        if budget is None:
            self.score(trainer, pl_module)
            return
        with budget.validation_time():
            self.score(trainer, pl_module)

    # -- hooks ----------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_score(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_score(trainer, pl_module)
