"""``BenchmarkEvaluation``: score pair benchmarks during training and log them to TensorBoard.

Validation loss alone misleads for speech LMs (reference/embedded-units.md: frame-level units
reached a low loss with no topic learning at all), so a researcher wants to watch tStoryCloze or
sWUGGY rise while pretraining runs. This callback reads the chosen benchmarks once
(:func:`slamming.data.benchmarks.readers.load_benchmarks`), turns every file into units once with the model's
tokeniser (each file alone, as ``slamming test`` does), and every ``every_n_steps`` optimizer steps —
and before the first — scores them with the model being trained
(:mod:`slamming.eval.likelihood`), logging ``bench/<name>/accuracy`` (and the ZeroSpeech
aggregation when the layout has one) at the global step.

Under DDP every rank shares the work, so no rank waits at a collective (the next step's gradient
all-reduce, or this callback's gather) for longer than one shard of it, far below the collective
timeout: when training starts each rank tokenises every ``world_size``-th file and the units are
gathered (:func:`torch.distributed.all_gather_object`); at each scoring the sequences are cut into
the batches a single process would run (sorted by length, ``batch_size`` at a time) and each rank
scores every ``world_size``-th batch, then the scores are gathered. Each batch is padded exactly as
in one process, so the scores equal the single-process ones bit for bit, on every rank; only rank 0
logs them. An error on one rank (an unreadable file) is raised on every rank after the gather,
instead of leaving the others waiting.

The scoring runs in eval mode without gradients, and its time is excluded from the compute budget
like validation. It scores in fp32 by default, as the authors and ``slamming test``
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
from collections.abc import Callable
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
from slamming.eval.likelihood import join_units, pair_outcomes, score_units, summarize_pairs
from slamming.eval.precision import SCORING_DTYPE, check_dtype, scoring_model
from slamming.speech.audio import read_audio
from slamming.speech.tokenizers import check_identity, load_tokenizer, unit_spans
from slamming.vocab import document_ids

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
        self._spans: np.ndarray | None = None  # phonemes per unit, where the tokeniser merges units
        #: This rank's share of the latest work: files tokenised, sequences and batches scored.
        self.shard_work: dict[str, int] = {"files": 0, "sequences": 0, "batches": 0}
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

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Read the benchmarks and tokenise every file once: each rank its share, then gathered."""
        started = time.perf_counter()
        tokenizer = load_tokenizer(self._tokenizer_dir(pl_module), device=pl_module.device)
        expected = pl_module.tokenizer_identity if isinstance(pl_module, TokenizerRecord) else None
        if expected:
            check_identity(
                expected, tokenizer.identity, what="BenchmarkEvaluation's tokeniser (vs the model's)"
            )
        benchmarks: list[PairBenchmark] = []
        for spec in self.specs:
            for bench in load_benchmarks(spec):
                pairs = bench.pairs[: self.max_pairs] if self.max_pairs else bench.pairs
                benchmarks.append(
                    PairBenchmark(bench.name, bench.kind, bench.path, list(pairs), bench.skipped)
                )
        # Every file once, in a fixed order: each benchmark's positives, its negatives, then the
        # prefixes of the pairs that have one (their units go in front of both sides').
        paths = [
            path
            for bench in benchmarks
            for side in ("positive", "negative", "prefix")
            for path in _sides(bench, side)
        ]
        rank, world = _rank_and_world(trainer)
        mine = range(rank, len(paths), world)
        self.shard_work = {"files": len(mine), "sequences": 0, "batches": 0}
        shards = _gather_or_raise(
            trainer,
            lambda: [np.asarray(tokenizer.encode(read_audio(paths[i], 16000))[0]) for i in mine],
            "tokenising the benchmarks",
        )
        units: list[np.ndarray] = [np.empty(0)] * len(paths)
        for shard_rank, shard in enumerate(shards):
            for i, unit in zip(range(shard_rank, len(paths), world), shard, strict=True):
                units[i] = unit
        self._units = []
        offset = 0
        dedup = bool(tokenizer.identity.get("dedup", True))
        self._spans = unit_spans(tokenizer)
        for bench in benchmarks:
            n = len(bench.pairs)
            positives, negatives = units[offset : offset + n], units[offset + n : offset + 2 * n]
            offset += 2 * n
            for i, pair in enumerate(bench.pairs):
                if pair.prefix is not None:
                    head = units[offset]
                    offset += 1
                    positives[i] = join_units(head, positives[i], dedup)
                    negatives[i] = join_units(head, negatives[i], dedup)
            self._units.append((bench, positives, negatives))
        sizes = ", ".join(f"{b.name} {len(b.pairs)}" for b, _, _ in self._units)
        share = f" (this rank {len(mine)} of {len(paths)} files)" if world > 1 else ""
        rank_zero_info(
            f"BenchmarkEvaluation: tokenised {sizes} pairs in {time.perf_counter() - started:.1f} s{share}; "
            f"scoring every {self.every_n_steps} steps"
        )

    # -- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict[str, Any]]:
        """Score every benchmark with the current weights and log the accuracies.

        Under DDP every rank must call it at the same step: each scores its share of the batches and
        the scores are gathered, so every rank returns (and keeps) the same results.
        """
        if self._units is None:
            self._prepare(trainer, pl_module)
        assert self._units is not None
        model = pl_module.hf_model if isinstance(pl_module, HFModelHolder) else pl_module.model
        max_length = getattr(model.config, "max_position_embeddings", None)
        # The batches one process would run: each benchmark's sides (positives, then negatives) sorted
        # by document length, batch_size at a time, as score_units does; each rank takes every
        # world_size-th batch over all benchmarks.
        batches: list[tuple[int, list[int]]] = []
        for index, (_, positives, negatives) in enumerate(self._units):
            lengths = [_document_length(u, max_length) for u in positives + negatives]
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            batches += [
                (index, order[i : i + self.batch_size]) for i in range(0, len(order), self.batch_size)
            ]
        rank, world = _rank_and_world(trainer)
        mine = batches[rank::world]
        self.shard_work.update(sequences=sum(len(rows) for _, rows in mine), batches=len(mine))
        precision = trainer.precision_plugin.forward_context() if self.dtype is None else nullcontext()

        def score_mine() -> list[np.ndarray]:
            if not mine:  # fewer batches than ranks: nothing to copy or score here
                return []
            with scoring_model(model, self.dtype) as scorer, precision:
                out = []
                for index, rows in mine:
                    _, positives, negatives = self._units[index]
                    sides = positives + negatives
                    # One forward per batch (batch_size=None): padded exactly as in one process.
                    values, _ = score_units(
                        scorer, [sides[i] for i in rows], self.mean, None, max_length, self._spans
                    )
                    out.append(values.numpy())
                return out

        shards = _gather_or_raise(trainer, score_mine, "scoring the benchmarks")
        scores = [np.empty(2 * len(positives), dtype=np.float32) for _, positives, _ in self._units]
        for shard_rank, shard in enumerate(shards):
            for (index, rows), values in zip(batches[shard_rank::world], shard, strict=True):
                scores[index][rows] = values
        metrics: dict[str, float] = {}
        for (bench, positives, _), values in zip(self._units, scores, strict=True):
            n = len(positives)
            self.scores[bench.name] = np.stack([values[:n], values[n:]], axis=1)
            outcomes = pair_outcomes(values[:n], values[n:])
            pairs = bench.pairs
            summary = summarize_pairs(
                outcomes, [p.id for p in pairs], [p.group for p in pairs], bench.zerospeech
            )
            self.results[bench.name] = summary
            metrics[f"bench/{bench.name}/accuracy"] = summary["accuracy"]
            if "zerospeech_accuracy" in summary:
                metrics[f"bench/{bench.name}/zerospeech_accuracy"] = summary["zerospeech_accuracy"]
        self.scored_step = trainer.global_step
        if trainer.is_global_zero:
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
        # global_step moves identically on every rank, so all ranks score (a collective) together.
        if step == self._last_step or step % self.every_n_steps:
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
        if self._units is None:
            # Every rank tokenises its share now, while no rank waits at any collective.
            budget = next((cb for cb in trainer.callbacks if isinstance(cb, ComputeBudget)), None)
            with budget.validation_time() if budget is not None else nullcontext():
                self._prepare(trainer, pl_module)
        self._maybe_score(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_score(trainer, pl_module)


def _sides(bench: PairBenchmark, side: str) -> list[Path]:
    """The audio files of one side (``positive``, ``negative`` or ``prefix``) of every pair that has
    it, in pair order."""
    return [path for pair in bench.pairs if (path := getattr(pair, side)) is not None]


def _document_length(units: np.ndarray, max_length: int | None) -> int:
    """Length of the document :func:`~slamming.eval.likelihood.score_units` makes of ``units``."""
    length = len(document_ids(np.asarray(units)))
    return length if max_length is None else min(length, max_length)


def _rank_and_world(trainer: pl.Trainer) -> tuple[int, int]:
    """This process's rank and the number of processes that share the work."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        return trainer.global_rank, trainer.world_size
    return 0, 1


def _gather_or_raise(trainer: pl.Trainer, work: Callable[[], Any], what: str) -> list[Any]:
    """Run ``work`` on every rank and return every rank's result, in rank order.

    An exception on one rank is gathered like a result and raised on every rank, so no rank is left
    waiting for one that failed; the failing rank raises its own exception, the others one line.
    """
    rank, world = _rank_and_world(trainer)
    error: BaseException | None = None
    try:
        result: Any = ("ok", work())
    except Exception as caught:  # reported to the other ranks, then raised again below
        error, result = caught, ("error", f"{type(caught).__name__}: {caught}")
    if world == 1:
        results = [result]
    else:
        results = [None] * world
        torch.distributed.all_gather_object(results, result)
    if error is not None:
        raise error
    failed = [
        (shard_rank, message) for shard_rank, (status, message) in enumerate(results) if status == "error"
    ]
    if failed:
        shard_rank, message = failed[0]
        raise SlammingError(f"BenchmarkEvaluation: rank {shard_rank} failed while {what}: {message}")
    return [payload for _, payload in results]
