"""BenchmarkEvaluation: benchmarks scored during pretraining, logged, equal to slamming test (issue 5, item 4).

And scored in fp32 by default (issue 11): bf16 weights through an fp32 copy, the training model untouched.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slamming.callbacks.benchmark_eval import BenchmarkEvaluation
from slamming.cli import main
from slamming.data.benchmarks.readers import load_benchmarks
from slamming.data.pretrain import SyntheticSpeechDataModule
from slamming.errors import SlammingError
from slamming.eval.likelihood import score_units
from slamming.models.unit_lm import UnitLMBuilder
from slamming.speech.audio import read_audio
from slamming.speech.tokenizers import load_tokenizer
from slamming.tasks.pretrain import NextUnitPretraining
from tests.conftest import TINY_BACKBONE, speech_fit_config
from tests.tasks.test_evaluate import SMALL_SPEECH, K, _specs, _test, benchmarks, engine  # noqa: F401 (fixtures)


def test_scores_every_n_steps_and_equals_slamming_test(tmp_path: Path, benchmarks: tuple) -> None:  # noqa: F811
    root, _ = benchmarks
    specs = _specs(root)[:3]  # sWUGGY, sBLIMP, sSC, and sSC's stories with a shared prefix
    specs.append({"kind": "manifest", "path": str(root / "prefixed.jsonl"), "name": "prefixed"})
    callback = {
        "class_path": "slamming.callbacks.BenchmarkEvaluation",
        "init_args": {"benchmarks": specs, "every_n_steps": 2, "batch_size": 3},
    }
    cfg = speech_fit_config(
        tmp_path,
        name="pre",
        trainer={"max_steps": 4, "val_check_interval": 2, "callbacks": [callback]},
        model={
            "class_path": "slamming.tasks.NextUnitPretraining",
            "init_args": {"backbone": TINY_BACKBONE, "lr": 3e-2},
        },
        data=SMALL_SPEECH,
    )
    main(["fit", "--config", str(cfg)])
    run = tmp_path / "runs" / "pre" / "version_0"
    events = EventAccumulator(str(run))
    events.Reload()
    logged = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for name in ("sWUGGY", "sBLIMP", "sSC"):
        assert sorted(logged[f"bench/{name}/accuracy"]) == [0, 2, 4], name
    assert sorted(logged["bench/sWUGGY/zerospeech_accuracy"]) == [0, 2, 4]
    # The last in-training score equals slamming test on the final checkpoint (same weights, pairs).
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    _test(tmp_path / "eval", ckpt, specs)
    results = json.loads((ckpt.parent / "eval-results.json").read_text())["benchmarks"]
    for name in ("sWUGGY", "sBLIMP", "sSC", "prefixed"):
        assert logged[f"bench/{name}/accuracy"][4] == pytest.approx(results[name]["accuracy"], abs=1e-6), name
    assert logged["bench/sWUGGY/zerospeech_accuracy"][4] == pytest.approx(
        results["sWUGGY"]["zerospeech_accuracy"], abs=1e-6
    )


def test_bad_arguments_are_one_clear_error() -> None:
    with pytest.raises(SlammingError, match="every_n_steps must be >= 1"):
        BenchmarkEvaluation([{"kind": "manifest", "path": "x.jsonl"}], every_n_steps=0)
    with pytest.raises(SlammingError, match="at least one benchmark"):
        BenchmarkEvaluation([])


class _Snapshot(Callback):
    """Runs just before BenchmarkEvaluation's hooks: the training model's state at that moment."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def _take(self, pl_module: Any) -> None:
        model = pl_module.hf_model
        self.state = {
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "modes": [m.training for m in model.modules()],
            "rng": torch.get_rng_state(),
        }

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._take(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self._take(pl_module)


class _Check(Callback):
    """Runs just after them: is the model untouched, and what do fp32 and bf16 copies of it score?"""

    def __init__(self, snapshot: _Snapshot, fp32: BenchmarkEvaluation, as_is: BenchmarkEvaluation) -> None:
        self.snapshot, self.fp32, self.as_is = snapshot, fp32, as_is
        self.units: dict[str, list[np.ndarray]] = {}
        self.checks: list[dict[str, Any]] = []

    def _units(self, pl_module: Any) -> dict[str, list[np.ndarray]]:
        """Each benchmark's files in units (positives, then negatives), as the callback makes them."""
        if not self.units:
            tokenizer = load_tokenizer(pl_module.tokenizer_dir)
            for spec in self.fp32.specs:
                for bench in load_benchmarks(spec):
                    paths = [p.positive for p in bench.pairs] + [p.negative for p in bench.pairs]
                    self.units[bench.name] = [tokenizer.encode(read_audio(path, 16000))[0] for path in paths]
        return self.units

    def _check(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.fp32.scored_step != trainer.global_step or any(
            c["step"] == trainer.global_step for c in self.checks
        ):
            return
        model, before = pl_module.hf_model, self.snapshot.state
        state = model.state_dict()
        untouched = (
            all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in before["weights"].items())
            and [m.training for m in model.modules()] == before["modes"]
            and torch.equal(torch.get_rng_state(), before["rng"])
        )
        check: dict[str, Any] = {"step": trainer.global_step, "untouched": untouched, "fp32": [], "bf16": []}
        check["dtypes"] = {p.dtype for p in model.parameters()}
        length = model.config.max_position_embeddings
        for name, units in self._units(pl_module).items():
            got = self.fp32.scores[name]
            for key, copy_of in (("fp32", copy.deepcopy(model).float()), ("bf16", copy.deepcopy(model))):
                scores, _ = score_units(copy_of.eval(), units, True, self.fp32.batch_size, length)
                n = len(units) // 2
                check[key].append(np.abs(got - torch.stack([scores[:n], scores[n:]], dim=1).numpy()).max())
            check.setdefault("as_is", []).append(np.abs(got - self.as_is.scores[name]).max())
        # Called under bf16 autocast (as inside a bf16-mixed step), it still scores in fp32.
        first = {name: scores.copy() for name, scores in self.fp32.scores.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            self.fp32.score(trainer, pl_module)
        check["autocast_equal"] = all(np.array_equal(first[n], self.fp32.scores[n]) for n in first)
        self.checks.append(check)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._check(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self._check(trainer, pl_module)


def test_a_bf16_true_fit_is_scored_in_fp32_and_left_untouched(
    tmp_path: Path,
    benchmarks: tuple,  # noqa: F811
) -> None:
    """bf16 weights (bf16-true): the callback scores an fp32 copy, as if fp32 from the start; dtype: null
    scores the bf16 weights, differently; the training model's weights, dtype, modes and RNG stay put."""
    root, _ = benchmarks
    specs = _specs(root)[:3]
    snapshot = _Snapshot()
    fp32 = BenchmarkEvaluation(specs, every_n_steps=2, batch_size=3)
    as_is = BenchmarkEvaluation(specs, every_n_steps=2, batch_size=3, dtype=None)
    check = _Check(snapshot, fp32, as_is)
    torch.manual_seed(0)
    module = NextUnitPretraining(
        UnitLMBuilder(**TINY_BACKBONE["init_args"]), num_units=K, context_length=64, lr=3e-2, export=False
    )
    data = SyntheticSpeechDataModule(
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        context_length=64,
        batch_size=4,
        **SMALL_SPEECH["init_args"],
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        precision="bf16-true",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[snapshot, fp32, as_is, check],
    )
    trainer.fit(module, datamodule=data)
    assert [c["step"] for c in check.checks] == [0, 2]
    for c in check.checks:
        assert c["untouched"] and c["dtypes"] == {torch.bfloat16}, c["step"]
        assert max(c["fp32"]) <= 1e-6, c  # the callback's scores: those of the fp32 copy
        assert max(c["bf16"]) > 1e-5 and max(c["as_is"]) > 1e-5, c  # bf16 scoring differs
        assert c["autocast_equal"], c["step"]
