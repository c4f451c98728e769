"""The non-finite guard of the training stages: stop in one line, or skip up to N bad steps.

Real ``slamming fit`` runs on a tiny corpus. The faults are real NaNs: a learning rate of 1e4, or a
loss multiplied by NaN at chosen steps (:class:`NaNAtSteps`), so the backward pass yields NaN
gradients exactly as a diverging run does. The last line of defence (no checkpoint, no export with
a NaN/Inf) is reached by writing an Inf into the optimizer state or the weights between steps,
where the step checks cannot see it (a fault injection: an overflowing AdamW second moment, a
corrupted weight).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from slamming.cli import main
from slamming.errors import ConfigError
from slamming.tasks import NextUnitPretraining
from slamming.tasks.stage import NONFINITE_KEY, check_max_nonfinite_steps, nonfinite_tensors
from tests.conftest import TINY_BACKBONE, fit_config

#: Global steps whose loss :class:`NaNAtSteps` multiplies by NaN (set by each test).
NAN_STEPS: set[int] = set()
#: Per global step: (weights, optimizer state) before the batch and after it (filled by NaNAtSteps).
SNAPSHOTS: dict[int, dict[str, Any]] = {}
#: What :class:`NaNAtSteps` corrupts, and at which step: ("exp_avg_sq" | "weight", step).
CORRUPT: dict[str, int] = {}


#: ``RANK:STEP,…``: the steps whose loss is NaN on one rank only (read by every DDP process).
RANK_NAN_ENV = "SLAMMING_TEST_RANK_NAN_STEPS"


def _rank_nan_steps(rank: int) -> set[int]:
    pairs = (item.split(":") for item in os.environ.get(RANK_NAN_ENV, "").split(",") if item)
    return {int(step) for r, step in pairs if int(r) == rank}


def _state(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "weights": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()["state"]),
    }


class NaNAtSteps(NextUnitPretraining):
    """Pretraining whose loss is NaN at the steps in :data:`NAN_STEPS` and that records its state."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        out = super().training_step(batch, batch_idx)
        if self.trainer.global_step in NAN_STEPS | _rank_nan_steps(self.global_rank):
            out["loss"] = out["loss"] * float("nan")
        return out

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        SNAPSHOTS[self.trainer.global_step] = {"before": _state(self, self.trainer.optimizers[0])}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Runs after the callbacks' hook (ModelCheckpoint has saved this step already).
        step = self.trainer.global_step
        SNAPSHOTS[step - 1]["after"] = _state(self, self.trainer.optimizers[0])
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            SNAPSHOTS[step - 1]["scale"] = scaler.get_scale()
        if CORRUPT.get("exp_avg_sq") == step:
            # An AdamW second moment overflowed to Inf: the update of that tensor becomes 0, so the
            # loss and the gradients stay finite, but the optimizer state is not.
            state = self.trainer.optimizers[0].state
            next(iter(state.values()))["exp_avg_sq"].view(-1)[0] = math.inf

    def on_train_end(self) -> None:
        if "weight" in CORRUPT:
            with torch.no_grad():
                self.hf_model.model.embed_tokens.weight.view(-1)[0] = math.nan
        super().on_train_end()


@pytest.fixture(autouse=True)
def _clean() -> None:
    NAN_STEPS.clear()
    SNAPSHOTS.clear()
    CORRUPT.clear()


def _config(
    tmp_path: Path,
    unit_corpora: dict,
    max_steps: int,
    model_class: str = f"{__name__}.NaNAtSteps",
    **model: Any,
) -> Path:
    """The conftest's tiny pretraining run, with gradient clipping and a checkpoint after every step."""
    init_args = {"backbone": TINY_BACKBONE, "lr": 3e-3, "min_lr": 3e-4, "warmup_ratio": 0.1, **model}
    return fit_config(
        tmp_path,
        unit_corpora,
        trainer={
            "max_steps": max_steps,
            "gradient_clip_val": 0.5,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "save_last": True,
                        "every_n_train_steps": 1,
                        "save_top_k": -1,
                        "filename": "{step}",
                    },
                }
            ],
        },
        model={"class_path": model_class, "init_args": init_args},
    )


def _run_dir(tmp_path: Path, version: int = 0) -> Path:
    return tmp_path / "runs" / "t" / f"version_{version}"


def _one_error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("slamming: error:")]
    assert len(lines) == 1
    assert "Traceback" not in err
    return lines[0].removeprefix("slamming: error: ")


def _nonfinite_in_checkpoint(path: Path) -> list[str]:
    """Every NaN/Inf tensor of a checkpoint, except Lightning's "no k-th best yet" sentinel."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    bad = nonfinite_tensors(checkpoint)
    return [name for name in bad if not re.fullmatch(r"callbacks\.ModelCheckpoint\{.*\}\.kth_value", name)]


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_lr_1e4_stops_at_the_first_nonfinite_step_in_one_line_and_saves_nothing_after(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    config = _config(tmp_path, unit_corpora, max_steps=40, model_class="slamming.tasks.NextUnitPretraining")
    message = _one_error_line(capsys, ["fit", "--config", str(config), "--model.init_args.lr", "1e4"])
    match = re.fullmatch(
        r"non-finite training step at step (\d+): loss (\S+), gradient norm (\S+); stopped before updating the "
        r"weights, nothing saved after it; last good checkpoint: (\S+); resume from it \(--ckpt_path\) with a "
        r"lower model\.lr, or set model\.max_nonfinite_steps to skip up to N such steps",
        message,
    )
    assert match, message
    step, loss, norm, last = int(match[1]), float(match[2]), float(match[3]), Path(match[4])
    assert not (math.isfinite(loss) and math.isfinite(norm))
    checkpoints = sorted((_run_dir(tmp_path) / "checkpoints").glob("*.ckpt"))
    # One checkpoint per finished step, then last.ckpt; none after the bad step.
    assert [p.name for p in checkpoints] == [
        "last.ckpt",
        *sorted(f"step={s}.ckpt" for s in range(1, step + 1)),
    ]
    assert last == _run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    assert _ckpt_step(last) == step  # the weights the bad step started from
    for path in checkpoints:
        assert _ckpt_step(path) <= step
        assert _nonfinite_in_checkpoint(path) == [], path
    assert not (_run_dir(tmp_path) / "hf_model").exists()


def test_skips_exactly_n_bad_steps_without_touching_weights_or_optimizer_state(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    NAN_STEPS.update({2, 4})
    main(["fit", "--config", str(_config(tmp_path, unit_corpora, max_steps=6, max_nonfinite_steps=2))])
    err = capsys.readouterr().err
    skips = [line for line in err.splitlines() if "skipped step" in line]
    assert skips == [
        "WARNING slamming.tasks.stage: skipped step 2: non-finite loss nan, gradient norm nan (weights and "
        "optimizer state unchanged; 1 of model.max_nonfinite_steps=2 skips used)",
        "WARNING slamming.tasks.stage: skipped step 4: non-finite loss nan, gradient norm nan (weights and "
        "optimizer state unchanged; 2 of model.max_nonfinite_steps=2 skips used)",
    ]
    assert sorted(SNAPSHOTS) == [0, 1, 2, 3, 4, 5]
    for step, snap in SNAPSHOTS.items():
        before, after = snap["before"], snap["after"]
        same_weights = all(torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"])
        if step in NAN_STEPS:
            assert same_weights
            assert before["optimizer"].keys() == after["optimizer"].keys()
            for p, state in before["optimizer"].items():
                for name, value in state.items():
                    assert torch.equal(value, after["optimizer"][p][name]), (step, p, name)
        else:
            assert not same_weights
    # AdamW counted 4 real updates in 6 steps; the run ran to its end and exported finite weights.
    last = _run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6
    assert checkpoint[NONFINITE_KEY] == 2
    assert {float(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()} == {4.0}
    assert (_run_dir(tmp_path) / "hf_model" / "config.json").is_file()
    assert _nonfinite_in_checkpoint(last) == []


def _fp16_scaler(init_scale: float = 2.0**16) -> str:
    """``--trainer.plugins`` for fp16 autocast with a GradScaler on the CPU (Lightning's ``16-mixed``)."""
    return json.dumps(
        {
            "class_path": "lightning.pytorch.plugins.precision.MixedPrecision",
            "init_args": {
                "precision": "16-mixed",
                "device": "cpu",
                "scaler": {
                    "class_path": "torch.amp.GradScaler",
                    "init_args": {"device": "cpu", "init_scale": init_scale},
                },
            },
        }
    )


def _unchanged(snap: dict[str, Any]) -> bool:
    before, after = snap["before"], snap["after"]
    return all(torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"])


def test_under_a_grad_scaler_a_nan_loss_is_skipped_and_the_scaler_backs_off(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    NAN_STEPS.add(2)
    config = _config(tmp_path, unit_corpora, max_steps=4, max_nonfinite_steps=1)
    main(["fit", "--config", str(config), "--trainer.plugins", _fp16_scaler()])
    assert [line for line in capsys.readouterr().err.splitlines() if "skipped step" in line] == [
        "WARNING slamming.tasks.stage: skipped step 2: non-finite loss nan, gradient norm not checked (weights and "
        "optimizer state unchanged; 1 of model.max_nonfinite_steps=1 skips used)"
    ]
    # The skip closed the scaler's step (update): it halved its scale as for any step with Inf gradients.
    assert [SNAPSHOTS[s]["scale"] for s in range(4)] == [2.0**16, 2.0**16, 2.0**15, 2.0**15]
    assert [_unchanged(SNAPSHOTS[s]) for s in range(4)] == [False, False, True, False]


def test_under_a_grad_scaler_inf_gradients_are_the_scalers_to_skip(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    # A scale so large that every step's fp16 gradients overflow: the scaler skips each step and
    # halves its scale; the loss is finite, so the guard lets the fit run to its end.
    config = _config(tmp_path, unit_corpora, max_steps=3)
    main(["fit", "--config", str(config), "--trainer.plugins", _fp16_scaler(2.0**100)])
    assert [SNAPSHOTS[s]["scale"] for s in range(3)] == [2.0**99, 2.0**98, 2.0**97]
    assert all(_unchanged(SNAPSHOTS[s]) for s in range(3))
    assert "non-finite" not in capsys.readouterr().err
    assert (_run_dir(tmp_path) / "hf_model" / "config.json").is_file()


def test_the_allowance_is_per_run_and_survives_a_resume(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    NAN_STEPS.update({1, 5})
    config = _config(tmp_path, unit_corpora, max_steps=3, max_nonfinite_steps=1)
    main(["fit", "--config", str(config)])
    first = _run_dir(tmp_path, 0) / "checkpoints" / "last.ckpt"
    assert torch.load(first, map_location="cpu", weights_only=True)[NONFINITE_KEY] == 1
    capsys.readouterr()
    message = _one_error_line(
        capsys, ["fit", "--config", str(config), "--trainer.max_steps", "8", "--ckpt_path", str(first)]
    )
    last = _run_dir(tmp_path, 1) / "checkpoints" / "last.ckpt"
    assert message == (
        "non-finite training step at step 5: loss nan, gradient norm nan (1 earlier non-finite steps skipped, "
        "all that model.max_nonfinite_steps=1 allows); stopped before updating the weights, nothing saved after "
        f"it; last good checkpoint: {last}; resume from it (--ckpt_path) with a lower model.lr, or set "
        "model.max_nonfinite_steps to skip up to N such steps"
    )
    assert _ckpt_step(last) == 5
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["last.ckpt", "step=4.ckpt", "step=5.ckpt"]


def test_stop_before_any_checkpoint_says_so(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    NAN_STEPS.add(0)
    message = _one_error_line(capsys, ["fit", "--config", str(_config(tmp_path, unit_corpora, max_steps=3))])
    assert message == (
        "non-finite training step at step 0: loss nan, gradient norm nan; stopped before updating the weights, "
        "nothing saved after it; last good checkpoint: none written yet; start again with a lower model.lr, or "
        "set model.max_nonfinite_steps to skip up to N such steps"
    )
    assert list((_run_dir(tmp_path) / "checkpoints").glob("*.ckpt")) == []


def test_a_checkpoint_holding_an_inf_is_never_written(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    CORRUPT["exp_avg_sq"] = 3
    message = _one_error_line(capsys, ["fit", "--config", str(_config(tmp_path, unit_corpora, max_steps=6))])
    folder = _run_dir(tmp_path) / "checkpoints"
    assert message == (
        "refusing to save a checkpoint at step 4: NaN/Inf in optimizer_states.0.state.0.exp_avg_sq; nothing "
        f"written; last good checkpoint: {folder / 'last.ckpt'}"
    )
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".json")) == [
        "last.ckpt",
        "step=1.ckpt",
        "step=2.ckpt",
        "step=3.ckpt",
    ]
    assert _ckpt_step(folder / "last.ckpt") == 3
    for path in folder.glob("*.ckpt"):
        assert _nonfinite_in_checkpoint(path) == []


def test_an_export_holding_a_nan_is_never_written(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    CORRUPT["weight"] = 0
    message = _one_error_line(capsys, ["fit", "--config", str(_config(tmp_path, unit_corpora, max_steps=2))])
    run = _run_dir(tmp_path)
    assert message == (
        f"refusing to export the model to {run / 'hf_model'} at step 2: NaN/Inf in model.embed_tokens.weight; "
        f"nothing written; last good checkpoint: {run / 'checkpoints' / 'last.ckpt'}"
    )
    assert not (run / "hf_model").exists()
    assert [p.name for p in run.iterdir() if "hf_model" in p.name] == []


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_max_nonfinite_steps_must_be_a_count(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"model\.max_nonfinite_steps must be an integer >= 0"):
        check_max_nonfinite_steps(value)
    assert check_max_nonfinite_steps(0) == 0 and check_max_nonfinite_steps(7) == 7


def test_nonfinite_tensors_names_every_nan_and_inf_in_nested_state() -> None:
    state = {
        "state_dict": {"a": torch.tensor([1.0, math.nan]), "b": torch.ones(3), "ids": torch.tensor([1, 2])},
        "optimizer_states": [
            {"state": {0: {"exp_avg": torch.zeros(2), "exp_avg_sq": torch.tensor([-math.inf])}}}
        ],
        "plain": 3.0,
    }
    assert nonfinite_tensors(state) == ["state_dict.a", "optimizer_states.0.state.0.exp_avg_sq"]
    assert nonfinite_tensors({"w": torch.full((4, 4), 1e38)}) == []


def test_under_ddp_every_rank_skips_and_stops_on_the_same_step(tmp_path: Path, unit_corpora: dict) -> None:
    # Two gloo processes on the CPU. Step 2's loss is NaN on rank 1 only, step 4's on rank 0 only:
    # the all-reduced gradients (and the summed verdict) make both ranks skip step 2, then both stop
    # at step 4, each with its one line, instead of one rank waiting for the other for ever.
    config = _config(tmp_path, unit_corpora, max_steps=6, max_nonfinite_steps=1)
    env = {**os.environ, RANK_NAN_ENV: "1:2,0:4", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("MASTER_PORT", None)
    command = [sys.executable, "-m", "slamming.cli", "fit", "--config", str(config), "--trainer.devices", "2"]
    command += ["--trainer.strategy", "ddp"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    folder = _run_dir(tmp_path) / "checkpoints"
    # One line from each process (rank 0's loss is the NaN, rank 1 sees its NaN gradients).
    errors = re.findall(r"slamming: error: non-finite training step at step (\d+): loss (\S+), gradient norm (\S+) "
                        r"\(1 earlier non-finite steps skipped, all that model\.max_nonfinite_steps=1 allows\); "
                        r"stopped before updating the weights, nothing saved after it; last good checkpoint: (\S+);",
                        result.stderr)  # fmt: skip
    assert len(errors) == 2 and result.stderr.count("slamming: error:") == 2, result.stderr[-3000:]
    assert {(step, norm, last) for step, _, norm, last in errors} == {("4", "nan", str(folder / "last.ckpt"))}
    assert sorted(loss == "nan" for _, loss, _, _ in errors) == [False, True]
    skips = [line for line in result.stderr.splitlines() if "skipped step" in line]  # rank 0 says it once
    assert len(skips) == 1 and re.fullmatch(
        r"WARNING slamming\.tasks\.stage: skipped step 2: non-finite loss [0-9.]+, gradient norm nan \(weights "
        r"and optimizer state unchanged; 1 of model\.max_nonfinite_steps=1 skips used\)",
        skips[0],
    ), skips
    assert sorted(p.name for p in folder.glob("*.ckpt")) == [
        "last.ckpt",
        "step=1.ckpt",
        "step=2.ckpt",
        "step=3.ckpt",
        "step=4.ckpt",
    ]
    loaded = {
        n: torch.load(folder / f"step={n}.ckpt", map_location="cpu", weights_only=True) for n in (2, 3, 4)
    }
    # The skipped step (global step 2, between checkpoints step=2 and step=3) changed nothing.
    for key, value in loaded[2]["state_dict"].items():
        assert torch.equal(value, loaded[3]["state_dict"][key]), key
    assert any(not torch.equal(v, loaded[4]["state_dict"][k]) for k, v in loaded[3]["state_dict"].items())
    steps = [
        {float(s["step"]) for s in loaded[n]["optimizer_states"][0]["state"].values()} for n in (2, 3, 4)
    ]
    assert steps == [{2.0}, {2.0}, {3.0}]
    for path in folder.glob("*.ckpt"):
        assert _nonfinite_in_checkpoint(path) == []
