"""``PairEvaluation``: ``slamming test`` on pair benchmarks (sWUGGY, sBLIMP, sSC, tSC, SALMon).

The model comes from a slamming checkpoint, an exported folder, the authors' format or a hub id
(:func:`~slamming.models.loading.load_unit_lm`); its tokeniser from ``tokenizer`` or the folder the
model records. A batch's waveforms are tokenised together (``encode_batch``, which gives each
waveform what ``encode`` of it alone gives), so a score never depends on what else was in the
batch, and each distinct waveform once per tokeniser (``units_cache``); the two sides of every
pair of a batch are then scored in one forward (:mod:`slamming.eval.likelihood`). A pair with a
``prefix`` (a story's beginning, its sides two endings) is scored on the prefix's units followed by
each side's, as the units of one utterance: where the tokeniser collapses repeats, a side's first
unit that repeats the prefix's last is dropped. A sequence of units is scored once per run, however
many sides have it (the embedded topic and spoken cloze share their true endings).

At the end every benchmark's accuracies are logged as ``test/<benchmark>/accuracy`` (flat, the
authors'), ``test/<benchmark>/zerospeech_accuracy`` (ZeroSpeech's voice-then-id average) and
``test/<benchmark>/<group>/accuracy`` (sBLIMP types, sWUGGY in-vocabulary/oov), and written as
``eval-results.json`` and ``eval-results.md`` beside the model (see ``results_dir``). When that
folder is an export with slamming's model card (``README.md``), the card is rewritten with them.

The LM scores in fp32 by default (``dtype: float32``), as the authors do, even when it was trained
and stored in bf16 (the paper's model is): its weights are cast once when it loads, and autocast is
off while it scores (:func:`slamming.eval.precision.scoring_model`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from slamming.atomic import write_text_atomic
from slamming.errors import SlammingError
from slamming.eval.intervals import encode_outcomes
from slamming.eval.likelihood import join_units, pair_outcomes, score_units, summarize_pairs
from slamming.eval.precision import SCORING_DTYPE, check_dtype, scoring_model
from slamming.eval.units_cache import UnitsCache
from slamming.models.card import CARD_NAME, RESULTS_NAME, is_our_card, results_table, write_model_card
from slamming.models.loading import load_unit_lm, resolve_newest
from slamming.models.unit_lm import DTYPES
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers import check_identity, load_tokenizer, unit_spans
from slamming.speech.tokenizers.base import KMEANS_FILE

log = logging.getLogger(__name__)

_MARK = "slamming test"
_MD_HEADER = f"<!-- written by {_MARK}; a rerun overwrites this file -->"


class PairEvaluation(pl.LightningModule):
    """Score a unit LM on pair benchmarks given by a ``PairBenchmarkDataModule``.

    Run it with the trainer's default fp32 precision: mixed precision would also autocast the
    tokeniser and change its units. ``dtype`` casts the LM alone (fp32 by default).

    Args:
        model: A slamming ``.ckpt``, an exported folder, an authors'-format folder or a hub id; a glob
            picks its newest match.
        tokenizer: The tokeniser folder (``tokenizer.json`` + ``kmeans.safetensors``); None: the one
            the model records. When the model records a tokeniser identity, this one must match it.
        batch_size: Most sequences per forward pass; None: every side of a data batch at once.
        mean: Score by mean log-likelihood per predicted id (the paper's); False: the sum.
        results_dir: Folder of ``eval-results.{json,md}``; None: the checkpoint's folder, the model
            folder, or ``runs/eval/<hub id>``. Our own earlier results files there are overwritten;
            any other file of those names stops the run before it starts.
        num_units: K of the data (linked; None for audio benchmarks).
        context_length: Most ids per scored sequence (linked from the data); None: the model's
            ``max_position_embeddings``.
        dtype: Score with the LM in this dtype and autocast off: ``float32`` (the default, as the
            authors score), ``bfloat16`` or ``float16``; None keeps the stored dtype and scores
            under the trainer's precision.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``; None keeps the model's.
        units_cache: Folder of benchmark units per tokeniser (:class:`~slamming.eval.units_cache.UnitsCache`):
            a waveform tokenised by one run is not tokenised again by the next with the same
            tokeniser (e.g. scoring the aligned model after the pretrained one). None: units are
            shared within the run only.

    Raises:
        SlammingError: no model, no tokeniser known, a tokeniser folder without readable centroids,
            a tokeniser that does not match the model, or a results file we did not write in the
            way. All are found when the module is made, before the data module builds any data
            (the embedded benchmarks are spoken in its ``prepare_data``).
    """

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        batch_size: int | None = None,
        mean: bool = True,
        results_dir: str | None = None,
        num_units: int | None = None,
        context_length: int | None = None,
        dtype: str | None = SCORING_DTYPE,
        attn_implementation: str | None = None,
        units_cache: str | None = None,
    ) -> None:
        super().__init__()
        check_dtype(dtype, "model.init_args.dtype")
        self.save_hyperparameters()
        self.source = resolve_newest(model)
        loaded = load_unit_lm(self.source, dtype=dtype, attn_implementation=attn_implementation)
        self.model = loaded.model
        self.num_units = loaded.num_units
        if num_units is not None and num_units != loaded.num_units:
            raise SlammingError(
                f"the data has K={num_units} units but {self.source} reads K={loaded.num_units}"
            )
        self.tokenizer_dir = Path(tokenizer) if tokenizer else loaded.tokenizer_dir
        if self.tokenizer_dir is None:
            raise SlammingError(
                f"{self.source} records no tokeniser folder; set model.init_args.tokenizer to the folder of "
                "the tokeniser the model was trained with (tokenizer.json + kmeans.safetensors)"
            )
        self.tokenizer_identity = self._recorded_identity(self.tokenizer_dir)
        self._check_centroids(self.tokenizer_dir, self.tokenizer_identity)
        if loaded.tokenizer is not None:
            _check_against_model(
                loaded.tokenizer, self.tokenizer_identity, f"tokeniser {self.tokenizer_dir} vs model {model}"
            )
        elif self.tokenizer_identity.get("k") != loaded.num_units:
            raise SlammingError(
                f"tokeniser {self.tokenizer_dir} has k={self.tokenizer_identity.get('k')} but {self.source} "
                f"reads K={loaded.num_units} units; give the tokeniser the model was trained with"
            )
        max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = context_length or max_positions
        self.results_dir = self._results_dir(model, results_dir)
        for path in self.results_paths():
            if path.exists() and _MARK not in path.read_text(encoding="utf-8", errors="replace")[:400]:
                raise SlammingError(
                    f"{path} exists and was not written by {_MARK}; move it, or set "
                    "model.init_args.results_dir to another folder"
                )
        self.tokenizer: Any = None
        self.units: UnitsCache | None = None
        self._memo: dict[bytes, float] = {}
        self._sides = self._undecoded = 0
        self.results: dict[str, Any] = {}
        #: Per benchmark, the ``(pairs, 2)`` scores of the positive and negative sides after a test
        #: (NaN where ``limit_test_batches`` left a pair unscored).
        self.scores: dict[str, np.ndarray] = {}

    @staticmethod
    def _recorded_identity(directory: Path) -> dict[str, Any]:
        """The identity a saved tokeniser records (checked against its files when it is loaded)."""
        config = directory / "tokenizer.json"
        try:
            return dict(json.loads(config.read_text(encoding="utf-8"))["identity"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SlammingError(
                f"no usable tokeniser at {directory} ({type(err).__name__} reading {config.name}); set "
                "model.init_args.tokenizer to a folder written by a slamming tokeniser's save()"
            ) from None

    @staticmethod
    def _check_centroids(directory: Path, identity: dict[str, Any]) -> None:
        """Read the tokeniser's centroids now (a few MB), so a broken folder stops the run before the
        data module builds anything; the tokeniser itself loads on the trainer's device at test start.
        A phone tokeniser has no centroids: its recogniser (0.6M weights) is loaded and checked instead."""
        if identity.get("kind") == "phone":
            load_tokenizer(directory)
            return
        kmeans = KMeans.load(directory / KMEANS_FILE)
        if kmeans.k != identity.get("k"):
            raise SlammingError(
                f"tokeniser {directory}: {KMEANS_FILE} holds {kmeans.k} centroids but tokenizer.json records "
                f"k={identity.get('k')}; save the tokeniser again"
            )

    def _results_dir(self, model: str, results_dir: str | None) -> Path:
        if results_dir is not None:
            return Path(results_dir)
        path = Path(self.source)
        if Path(model).exists() or any(c in model for c in "*?[") or path.is_file():
            return path.parent if path.is_file() else path
        return Path("runs/eval") / model.replace("/", "--")  # a hub id: not its cache folder

    def _score_name(self) -> str:
        if not self.hparams.mean:
            return "summed log-likelihood"
        merged = self.tokenizer is not None and unit_spans(self.tokenizer) is not None
        return "mean log-likelihood per " + ("phoneme (merged units count their parts)" if merged else "unit")

    def results_paths(self) -> tuple[Path, Path]:
        """``eval-results.json`` and ``eval-results.md`` in :attr:`results_dir`."""
        return self.results_dir / f"{RESULTS_NAME}.json", self.results_dir / f"{RESULTS_NAME}.md"

    # -- the test loop -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "test":
            return
        # The cache is read before the loaders are made, so that they skip decoding what it holds.
        # Named by the recorded identity; on_test_start checks that the loaded tokeniser has it.
        self.units = UnitsCache(self.hparams.units_cache, self.tokenizer_identity)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "known_audio"):
            datamodule.known_audio = self.units.keys()

    def on_test_start(self) -> None:
        if self.trainer.world_size > 1:
            raise SlammingError("slamming test scores on one device; set trainer.devices: 1")
        self.benchmarks = getattr(self.trainer.datamodule, "benchmarks", None)
        if self.benchmarks is None:
            raise SlammingError(
                "PairEvaluation needs data.class_path slamming.data.benchmarks.datamodule.PairBenchmarkDataModule"
            )
        if self.hparams.dtype is not None:  # a "-true" trainer precision may have cast it since
            self.model.to(DTYPES[self.hparams.dtype])
        # Loaded here, not in __init__, so that HuBERT lands on the device the trainer chose.
        self.tokenizer = load_tokenizer(self.tokenizer_dir, device=self.device)
        check_identity(self.tokenizer_identity, self.tokenizer.identity, f"tokeniser {self.tokenizer_dir}")
        self._scores = [np.full((len(b.pairs), 2), np.nan) for b in self.benchmarks]
        self._cut = [0] * len(self.benchmarks)
        # Scores by document: a side whose units another side already had (the two cloze benchmarks'
        # true endings) is not run again.
        self._memo = {}
        self._sides = self._undecoded = 0

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        n = len(batch["positive"])
        prefixes = batch.get("prefix") or [None] * n
        keys = batch.get("keys") or {}
        prefix_keys = keys.get("prefix") or [None] * n
        shared = [i for i in range(n) if prefixes[i] is not None or prefix_keys[i] is not None]
        waves = [*batch["positive"], *batch["negative"], *(prefixes[i] for i in shared)]
        assert self.units is not None  # made in setup()
        side_keys = (
            [*keys["positive"], *keys["negative"], *(prefix_keys[i] for i in shared)] if keys else None
        )
        units = self.units.encode(waves, self.tokenizer.encode_batch, keys=side_keys)
        self._undecoded += sum(wav is None for wav in waves)
        dedup = bool(self.tokenizer.identity.get("dedup", True))
        for j, i in enumerate(shared):
            head = units[2 * n + j]
            for side in (i, n + i):
                units[side] = join_units(head, units[side], dedup)
        units = units[: 2 * n]
        with scoring_model(self.model, self.hparams.dtype) as model:
            scores, cut = score_units(
                model,
                units,
                mean=self.hparams.mean,
                batch_size=self.hparams.batch_size,
                max_length=self.max_length,
                spans=unit_spans(self.tokenizer),
                memo=self._memo,
            )
        self._sides += len(units)
        index = batch["index"].cpu().numpy()
        self._scores[dataloader_idx][index, 0] = scores[:n].numpy()
        self._scores[dataloader_idx][index, 1] = scores[n:].numpy()
        self._cut[dataloader_idx] += cut

    def on_test_epoch_end(self) -> None:
        self.results = {}
        self.scores = {
            bench.name: scores for bench, scores in zip(self.benchmarks, self._scores, strict=True)
        }
        for bench, scores, cut in zip(self.benchmarks, self._scores, self._cut, strict=True):
            done = ~np.isnan(scores).any(axis=1)  # limit_test_batches may leave pairs unscored
            pairs = [p for p, d in zip(bench.pairs, done, strict=True) if d]
            outcomes = pair_outcomes(scores[done, 0], scores[done, 1])
            summary = summarize_pairs(
                outcomes, [p.id for p in pairs], [p.group for p in pairs], bench.zerospeech
            )
            summary.update(kind=bench.kind, path=str(bench.path), skipped=bench.skipped, cut_to_context=cut)
            summary["outcomes"] = encode_outcomes(outcomes)  # per pair, to compare two models pair by pair
            if not done.all():
                summary["pairs_in_benchmark"] = len(bench.pairs)
            self.results[bench.name] = summary
            for key in ("accuracy", "zerospeech_accuracy"):
                if key in summary:
                    self.log(f"test/{bench.name}/{key}", summary[key])
            for group, values in summary.get("groups", {}).items():
                for key in ("accuracy", "zerospeech_accuracy"):
                    if key in values:
                        self.log(f"test/{bench.name}/{group}/{key}", values[key])
        if self.trainer.is_global_zero:
            rank_zero_info(f"scored {len(self._memo)} distinct sequences for the {self._sides} sides")
            self._write_results()
            if self.units is not None:
                saved = self.units.save()
                rank_zero_info(
                    f"benchmark units: {self.units.hits} waveforms from the cache, {self.units.misses} tokenised"
                    + (f", {self._undecoded} audio files not decoded" if self._undecoded else "")
                    + (f"; cache written to {self.units.path}" if saved else "")
                )

    def _write_results(self) -> None:
        json_path, md_path = self.results_paths()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "written_by": _MARK,
            "model": self.source,
            "tokenizer": {"dir": str(self.tokenizer_dir), "identity": self.tokenizer_identity},
            "score": self._score_name(),
            "benchmarks": self.results,
        }
        write_text_atomic(json_path, json.dumps(payload, indent=2) + "\n")
        table = results_table(self.results)
        write_text_atomic(
            md_path,
            f"{_MD_HEADER}\n# Pair benchmarks of {self.source}\n\nScore: {payload['score']}. "
            "Accuracy in %: flat = over pairs (the authors'), ZeroSpeech = voices per id, then ids.\n\n"
            f"{table}\n",
        )
        rank_zero_info(f"{table}\nwrote {json_path} and {md_path}")
        card = self.results_dir / CARD_NAME
        if card.is_file() and is_our_card(card) and (self.results_dir / "config.json").is_file():
            write_model_card(self.results_dir)
            rank_zero_info(f"rewrote the model card {card} with these results")


def _check_against_model(model_identity: dict[str, Any], identity: dict[str, Any], what: str) -> None:
    """Check a tokeniser against the identity a model records.

    A model trained on imported units (``slamming corpus import-features``) records only the
    declared settings of the authors' tokeniser (kind, layer, k, frame rate, dedup), no
    ``settings_hash``; then only the keys both identities have are compared.
    """
    if "settings_hash" not in model_identity:
        shared = sorted(set(model_identity) & set(identity))
        log.warning("%s: the model records no settings_hash; only %s were compared", what, ", ".join(shared))
        model_identity = {key: model_identity[key] for key in shared}
        identity = {key: identity[key] for key in shared}
    check_identity(model_identity, identity, what)
