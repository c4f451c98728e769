"""DPOAlignment: reference modes agree, fits run through the CLI, resume, shared budget, bad input (issue 4)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import get_inverse_sqrt_schedule

import slamming.callbacks.budget
from slamming.callbacks.budget import STOP_CHECKPOINT_NAME, ComputeBudget
from slamming.cli import main
from slamming.data.preference.corpus import PreferenceCorpusWriter
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.errors import SlammingError
from slamming.models.unit_lm import UnitLMBuilder, export_hf, unit_lm_from_checkpoint
from slamming.tasks.dpo import DPOAlignment
from slamming.tasks.reference import ReferenceKey, compute_reference_logps, load_reference, save_reference
from slamming.vocab import IGNORE_INDEX
from tests.callbacks.ddp_budget_script import FakeClock
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE, fit_config, markov_documents

K = TEST_IDENTITY["k"]
HOUR = 3600.0
#: Seconds each training step takes on the budget's fake clock in the budget tests below.
STEP_S = 0.25


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock for the budget: only :func:`with_step_clock`'s callback moves it."""
    return FakeClock.install(monkeypatch, slamming.callbacks.budget)


def with_step_clock(config: Path) -> Path:
    """Add a callback that advances the budget's fake clock by STEP_S per training step."""
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"].append(
        {"class_path": "tests.callbacks.ddp_budget_script.StepClock", "init_args": {"seconds": STEP_S}}
    )
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def _preference_corpus(path: Path, n: int, seed: int) -> Path:
    """Triples whose chosen side follows the Markov chain of the pretraining data, rejected is noise."""
    docs = markov_documents(n, seed=seed)
    rng = np.random.default_rng(seed)
    with PreferenceCorpusWriter(path, TEST_IDENTITY, K) as writer:
        for i, doc in enumerate(docs):
            cut = max(2, len(doc) // 2)
            prompt, chosen = doc[:cut], doc[cut:] if len(doc) > cut else doc[-2:]
            rejected = rng.integers(0, K, size=len(chosen))
            writer.add(prompt, chosen, rejected, source=f"t{i}")
    return path


@pytest.fixture(scope="module")
def preferences(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prefs")
    return {
        "train": _preference_corpus(root / "train", 48, 3),
        "val": _preference_corpus(root / "val", 16, 4),
    }


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, unit_corpora: dict[str, Path]) -> Path:
    """A tiny pretraining run (12 steps) whose last checkpoint DPO starts from."""
    root = tmp_path_factory.mktemp("pre")
    main(["fit", "--config", str(fit_config(root, unit_corpora))])
    return root / "runs" / "t" / "version_0" / "checkpoints" / "last.ckpt"


def dpo_config(tmp_path: Path, init_from: Path, preferences: dict[str, Path], **model: Any) -> Path:
    cfg: dict[str, Any] = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 8,
            "log_every_n_steps": 1,
            "val_check_interval": 4,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "deterministic": True,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "dpo"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "save_last": True,
                        "every_n_train_steps": 4,
                        "save_top_k": -1,
                        "filename": "{step}",
                    },
                }
            ],
        },
        "model": {
            "class_path": "slamming.tasks.DPOAlignment",
            "init_args": {
                "init_from": str(init_from),
                "lr": 3e-3,
                "warmup_steps": 2,
                "reference_cache_dir": str(tmp_path / "ref"),
                "progress": False,
                **model,
            },
        },
        "data": {
            "class_path": "slamming.data.PreferenceDataModule",
            "init_args": {
                "train": str(preferences["train"]),
                "val": str(preferences["val"]),
                "context_length": 64,
                "batch_size": 4,
            },
        },
        "budget": {"max_gpu_hours": 1.0},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def _tiny_folder(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)
    return export_hf(model, path, TEST_IDENTITY)


def _move_both_policies(a: DPOAlignment, b: DPOAlignment) -> None:
    """Add the same random step to two policies' weights (their references stay where they were)."""
    with torch.no_grad():
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            step = 0.05 * torch.randn_like(p)
            p.add_(step)
            q.add_(step)


def _data(preferences: dict[str, Path]) -> PreferenceDataModule:
    dm = PreferenceDataModule(train=str(preferences["train"]), val=str(preferences["val"]), context_length=64)
    dm.setup("fit")
    return dm


def test_precomputed_reference_loss_equals_live_reference_loss(tmp_path: Path, preferences: dict) -> None:
    folder = _tiny_folder(tmp_path / "m", seed=0)
    dm = _data(preferences)
    live = DPOAlignment(str(folder), num_units=K, context_length=64, reference="live")
    cached = DPOAlignment(str(folder), num_units=K, context_length=64)
    assert cached.reference_fingerprint == live.reference_fingerprint
    cached._reference_logps["train"] = compute_reference_logps(
        cached.hf_model,
        dm.reference_loader("train", 7),
        dm.num_triples("train"),
        torch.device("cpu"),
        progress=False,
    )
    # Move the policies away from the reference so the rewards are not all zero.
    _move_both_policies(live, cached)
    batch = next(iter(dm.reference_loader("train", 6)))
    with torch.no_grad():
        x, y = live._evaluate(batch, "train"), cached._evaluate(batch, "train")
    assert abs(float(x["loss"]) - math.log(2)) > 1e-3  # the policy moved
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margin"):
        assert float(x[name]) == pytest.approx(float(y[name]), abs=1e-5), name


def test_reference_cache_for_another_model_or_data_is_refused(tmp_path: Path, preferences: dict) -> None:
    folder = _tiny_folder(tmp_path / "m", seed=0)
    dm = _data(preferences)
    module = DPOAlignment(str(folder), num_units=K, context_length=64)
    logps = compute_reference_logps(
        module.hf_model,
        dm.reference_loader("val", 8),
        dm.num_triples("val"),
        torch.device("cpu"),
        progress=False,
    )
    key = ReferenceKey(module.reference_fingerprint, dm.data_fingerprint("val"), "32-true")
    path = save_reference(tmp_path / "ref.pt", key, logps)
    assert torch.equal(load_reference(path, key, 16).chosen, logps.chosen)
    other_model = DPOAlignment(str(_tiny_folder(tmp_path / "m2", seed=1)), num_units=K, context_length=64)
    with pytest.raises(SlammingError, match="made for another model"):
        load_reference(path, ReferenceKey(other_model.reference_fingerprint, key.data, key.precision), 16)
    with pytest.raises(SlammingError, match="made for other data"):
        load_reference(path, ReferenceKey(key.model, dm.data_fingerprint("train"), key.precision), 16)
    with pytest.raises(SlammingError, match="another precision"):
        load_reference(path, ReferenceKey(key.model, key.data, "bf16-mixed"), 16)


def test_dpo_fit_logs_rewards_checkpoints_exports_and_shares_the_budget(
    tmp_path: Path, pretrained: Path, preferences: dict, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(with_step_clock(dpo_config(tmp_path, pretrained, preferences)))])
    messages = [r.getMessage() for r in caplog.records]
    assert any("the parent run used" in m for m in messages)
    assert any("held-out preference accuracy (16 pairs)" in m for m in messages)
    run = tmp_path / "runs" / "dpo" / "version_0"
    for tag in ("train/loss", "train/rewards/accuracy", "train/rewards/margin", "train/logps/chosen"):
        assert len(_scalars(run, tag)) >= 4, tag
    accuracy = _scalars(run, "val/pref_accuracy")
    assert 0 in accuracy and 8 in accuracy  # the pretrained model's, and the final one
    loss0 = _scalars(run, "val/loss")[0]
    assert loss0 == pytest.approx(math.log(2), abs=1e-5)  # policy == reference before the first step
    assert _scalars(run, "val/dpo_loss")[0] == pytest.approx(loss0, abs=1e-6)  # no RPO term by default
    assert len(list((tmp_path / "ref").glob("*-train.pt"))) == 1
    # The budget continues from the parent's consumption: plus 8 steps of STEP_S on the fake clock.
    parent = ComputeBudget.read_consumed(pretrained)
    child = ComputeBudget.read_consumed(run / "checkpoints" / "last.ckpt")
    assert child["parent_gpu_hours"] == parent["gpu_hours"] > 0
    assert child["gpu_hours"] == pytest.approx(parent["gpu_hours"] + 8 * STEP_S / HOUR, rel=1e-12)
    # The DPO checkpoint and the export hold the aligned policy, with the tokeniser identity.
    model, identity = unit_lm_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert identity == TEST_IDENTITY
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(run / "hf_model").eval()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, exported(ids).logits)
    # The export records the total at the end of training: the last checkpoint's, as the final
    # validation takes no budget time.
    assert exported.config.slamming_budget["gpu_hours"] == child["gpu_hours"]
    # The report `make demo` ends with prints both accuracies.
    report = subprocess.run(
        [sys.executable, "scripts/demo_report.py", str(pretrained.parent.parent), "--dpo", str(run)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    final = max(accuracy)
    assert f"pretrained (step 0): {accuracy[0]:.4f}" in report.stdout
    assert f"after DPO (step {final}): {accuracy[final]:.4f}" in report.stdout
    assert "held-out DPO loss   step 0: 0.6931" in report.stdout
    assert report.stdout.count("(identical)") == 2


def test_resume_mid_dpo_reproduces_the_uninterrupted_losses(
    tmp_path: Path, pretrained: Path, preferences: dict
) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    main(["fit", "--config", str(dpo_config(full, pretrained, preferences))])
    ckpt = full / "runs" / "dpo" / "version_0" / "checkpoints" / "step=4.ckpt"
    main(["fit", "--config", str(dpo_config(resumed, pretrained, preferences)), "--ckpt_path", str(ckpt)])
    a = _scalars(full / "runs" / "dpo" / "version_0", "train/loss")
    b = _scalars(resumed / "runs" / "dpo" / "version_0", "train/loss")
    assert sorted(b) == list(range(4, 8))
    for step in range(4, 8):
        assert a[step] == pytest.approx(b[step], abs=1e-6), step


def test_live_reference_fit_matches_the_precomputed_one(
    tmp_path: Path, pretrained: Path, preferences: dict
) -> None:
    runs = {}
    for mode in ("live", "precomputed"):
        main(["fit", "--config", str(dpo_config(tmp_path / mode, pretrained, preferences, reference=mode))])
        runs[mode] = _scalars(tmp_path / mode / "runs" / "dpo" / "version_0", "train/loss")
    for step, value in runs["live"].items():
        assert runs["precomputed"][step] == pytest.approx(value, abs=1e-5), step


def test_total_budget_across_pretraining_and_dpo(
    tmp_path: Path, unit_corpora: dict, preferences: dict, clock: FakeClock
) -> None:
    pre = tmp_path / "pre"
    pre.mkdir()
    # 0.0004 GPU-hours = 1.44 s: 5 steps of 0.25 s are 1.25 s, the 6th spends it (1.5 s).
    overrides = {"trainer": {"max_steps": 100000}, "budget": {"max_gpu_hours": 0.0004}}
    main(["fit", "--config", str(with_step_clock(fit_config(pre, unit_corpora, **overrides)))])
    # Step 6 is no multiple of the periodic checkpoints' 4: the budget saved its own at the stop.
    parent = pre / "runs" / "t" / "version_0" / "checkpoints" / STOP_CHECKPOINT_NAME
    spent = ComputeBudget.read_consumed(parent)
    assert spent["stopped_by"] == "gpu_hours" and spent["stop_step"] == 6
    assert spent["gpu_hours"] == pytest.approx(6 * STEP_S / HOUR, rel=1e-12)
    cfg = yaml.safe_load(with_step_clock(dpo_config(tmp_path, parent, preferences)).read_text())
    cfg["trainer"]["max_steps"] = 100000
    cfg["budget"] = {"max_gpu_hours": spent["gpu_hours"] + 0.0004}  # the total leaves 1.44 s for DPO
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(tmp_path / "dpo.yaml")])
    child = ComputeBudget.read_consumed(
        tmp_path / "runs" / "dpo" / "version_0" / "checkpoints" / STOP_CHECKPOINT_NAME
    )
    assert child["stopped_by"] == "gpu_hours"
    # DPO, too, stops at its 6th step: the parent's 1.5 s plus 6 × 0.25 s, past the total by 0.06 s.
    total = cfg["budget"]["max_gpu_hours"]
    assert child["stop_step"] == 6 and child["parent_gpu_hours"] == spent["gpu_hours"]
    assert child["gpu_hours"] == pytest.approx(12 * STEP_S / HOUR, rel=1e-12)
    assert total <= child["gpu_hours"] < total + STEP_S / HOUR  # overshoot: less than one step


def test_data_with_another_number_of_units_is_one_clear_error(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = [
        '{"prompt": {"units": [1, 2, 3]}, "chosen": {"units": [4, 5]}, "rejected": {"units": [6, 7]}}'
    ] * 4
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    cfg = yaml.safe_load(
        dpo_config(tmp_path, pretrained, {"train": tmp_path / "p.jsonl", "val": None}).read_text()
    )
    cfg["data"]["init_args"].update({"num_units": 500})
    del cfg["data"]["init_args"]["val"]
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(tmp_path / "dpo.yaml")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "K=500" in err and f"K={K}" in err and "Traceback" not in err


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test written for Linux")
def test_two_process_ddp_dpo_shares_one_reference_cache(
    tmp_path: Path, pretrained: Path, preferences: dict
) -> None:
    cfg = dpo_config(tmp_path, pretrained, preferences)
    cmd = [
        sys.executable,
        "-m",
        "slamming.cli",
        "fit",
        "--config",
        str(cfg),
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Rank 0 computed the reference log-probs once per split; both ranks trained on them.
    assert len(list((tmp_path / "ref").glob("*-train.pt"))) == 1
    assert len(list((tmp_path / "ref").glob("*-val.pt"))) == 1
    run = tmp_path / "runs" / "dpo" / "version_0"
    assert sorted(_scalars(run, "train/loss")) == list(range(8))
    assert "held-out preference accuracy (16 pairs)" in proc.stderr + proc.stdout
    child = ComputeBudget.read_consumed(run / "checkpoints" / "last.ckpt")
    assert child["world_size"] == 2


def _lrs_after(
    scheduler: torch.optim.lr_scheduler.LRScheduler, steps: tuple[int, ...]
) -> dict[int, list[float]]:
    """Every group's learning rate after ``n`` optimizer + scheduler steps, for each ``n`` in ``steps``."""
    seen: dict[int, list[float]] = {}
    for n in range(1, max(steps) + 1):
        scheduler.optimizer.step()  # no gradients: the weights stay; the call order is Lightning's
        scheduler.step()
        if n in steps:
            seen[n] = [group["lr"] for group in scheduler.optimizer.param_groups]
    return seen


def test_dpo_learning_rate_is_the_authors_inverse_sqrt_at_steps_1_100_813(tmp_path: Path) -> None:
    """slamkit's DPO: lr 5e-5, Hugging Face inverse sqrt with warmup (and time scale) 100."""
    module = DPOAlignment(str(_tiny_folder(tmp_path / "m", seed=0)), num_units=K, context_length=64)
    assert (module.hparams.schedule, module.hparams.warmup_steps, module.hparams.lr) == (
        "inverse_sqrt",
        100,
        5e-5,
    )
    config = module.configure_optimizers()  # inverse_sqrt needs no trainer
    assert config["lr_scheduler"]["interval"] == "step"
    ours = _lrs_after(config["lr_scheduler"]["scheduler"], (1, 100, 813))
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=5e-5)
    hf = _lrs_after(get_inverse_sqrt_schedule(dummy, num_warmup_steps=100), (1, 100, 813))
    for n in (1, 100, 813):
        assert ours[n] == [hf[n][0]] * 2, n  # both parameter groups, bit for bit
    # Warmup s / 100: 5e-7 after one step; the peak at 100; then 5e-5 * sqrt(100 / s).
    assert ours[1][0] == pytest.approx(5e-7, rel=1e-12)
    assert ours[100][0] == pytest.approx(5e-5, rel=1e-12)
    assert ours[813][0] == pytest.approx(5e-5 * math.sqrt(100 / 813), rel=1e-12)
    assert ours[813][0] == pytest.approx(1.7536e-5, abs=5e-10)


def test_dpo_cosine_and_constant_schedules(tmp_path: Path) -> None:
    folder = str(_tiny_folder(tmp_path / "m", seed=0))
    cosine = DPOAlignment(
        folder, num_units=K, context_length=64, lr=1e-4, warmup_steps=2, schedule="cosine", min_lr=1e-5
    )
    # The horizon is the trainer's estimate of the optimizer steps (max_steps here); the budget's
    # size_schedule may move it later through resize_schedule.
    cosine.trainer = pl.Trainer(max_steps=10, max_epochs=-1, logger=False, accelerator="cpu")
    schedule = cosine.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert (schedule.lr_lambdas[0].total_steps, schedule.lr_lambdas[0].warmup_steps) == (10, 2)
    # W = 2 of T = 10, floor 1e-5 / 1e-4 = 0.1: half way (step 6) 1e-4 * (0.1 + 0.9 / 2) = 5.5e-5.
    lrs = _lrs_after(schedule, (1, 2, 6, 10, 12))
    expected = {1: 1e-4, 2: 1e-4, 6: 5.5e-5, 10: 1e-5, 12: 1e-5}
    assert {n: v[0] for n, v in lrs.items()} == pytest.approx(expected, rel=1e-12)
    constant = DPOAlignment(
        folder, num_units=K, context_length=64, lr=1e-4, warmup_steps=4, schedule="constant"
    )
    flat = constant.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert flat.get_last_lr()[0] == pytest.approx(2.5e-5)  # step 0: (0 + 1) / 4 of the peak
    assert {n: v[0] for n, v in _lrs_after(flat, (1, 3, 50)).items()} == pytest.approx(
        {1: 5e-5, 3: 1e-4, 50: 1e-4}
    )


def test_dpo_unknown_schedule_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        SlammingError, match=r"model.schedule must be one of inverse_sqrt, cosine, constant; got 'linear'"
    ):
        DPOAlignment(str(tmp_path / "never-loaded"), schedule="linear")


def test_dpo_config_prints_the_authors_schedule_and_precision(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/dpo.yaml", "--print_config"])
    assert exit_info.value.code in (0, None)
    text = capsys.readouterr().out
    assert (
        "schedule: inverse_sqrt" in text and "warmup_steps: 100" in text and "precision: bf16-mixed" in text
    )
    printed = yaml.safe_load(text)
    model = printed["model"]["init_args"]
    assert (model["schedule"], model["warmup_steps"], model["dtype"]) == ("inverse_sqrt", 100, "float32")
    assert printed["trainer"]["precision"] == "bf16-mixed" and printed["trainer"]["gradient_clip_val"] == 0.5


def test_dpo_cosine_is_sized_by_the_compute_budget(
    tmp_path: Path, pretrained: Path, preferences: dict, clock: FakeClock
) -> None:
    # DPO may use 0.0004 GPU-hours = 1.44 s of its own: 6 steps of 0.25 s on the fake clock. With
    # size_schedule the budget measures 2 steps, then moves the cosine's end from max_steps to the
    # step where the budget runs out, so the rate reaches its floor when the run stops.
    peak, floor = 3e-3, 3e-4
    path = dpo_config(tmp_path, pretrained, preferences, schedule="cosine", min_lr=floor)
    cfg = yaml.safe_load(with_step_clock(path).read_text())
    cfg["trainer"]["max_steps"] = 100000
    cfg["budget"] = {
        "max_gpu_hours": 1.0,
        "max_run_gpu_hours": 0.0004,
        "size_schedule": True,
        "measure_steps": 2,
        "resize_every_n_steps": 2,
    }
    path.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(path)])
    run = tmp_path / "runs" / "dpo" / "version_0"
    assert ComputeBudget.read_consumed(run / "checkpoints" / STOP_CHECKPOINT_NAME)["stop_step"] == 6
    ckpt = torch.load(run / "checkpoints" / STOP_CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    schedule = ckpt["lr_schedulers"][0]["lr_lambdas"][0]
    # Sized at step 2 to end at step 6 (2 steps done, 1.44 - 0.5 s left at 0.25 s/step); the
    # warmup stays at its 2 steps. Decay over 4 steps: 0.1 + 0.45 (1 + cos(pi p)), p = (s - 2) / 4:
    #   s = 3: p = 1/4 -> 0.1 + 0.45 * 1.7071068 = 0.8681981;  s = 4: p = 1/2 -> 0.55;
    #   s = 5: p = 3/4 -> 0.1 + 0.45 * 0.2928932 = 0.2318019.
    assert (schedule["total_steps"], schedule["warmup_steps"]) == (6, 2)
    expected = {0: 0.5, 1: 1.0, 2: 1.0, 3: 0.8681981, 4: 0.55, 5: 0.2318019}
    lr = _scalars(run, "train/lr")  # float32 in the event file
    assert lr == pytest.approx({s: peak * f for s, f in expected.items()}, rel=1e-6)


def test_the_policy_trains_without_the_pretrained_models_dropout_unless_asked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    init = {**TINY_BACKBONE["init_args"], "dropout": 0.1}
    folder = export_hf(UnitLMBuilder(**init).build(K), tmp_path / "m", TEST_IDENTITY)
    ids = torch.randint(2, K + 2, (2, 24))

    def rates(module: DPOAlignment) -> set[float]:
        attention = [m.attention_dropout for m in module.model.modules() if hasattr(m, "attention_dropout")]
        return {*attention, module.model.config.attention_dropout}

    plain = DPOAlignment(str(folder), num_units=K, context_length=64)
    assert plain.model.training and rates(plain) == {0.0}
    # In train mode the policy's log-probs are then the same on every call, as the reference's are.
    assert torch.equal(plain.model(ids).logits, plain.model(ids).logits)
    kept = DPOAlignment(str(folder), num_units=K, context_length=64, dropout=0.1)
    assert rates(kept) == {0.1}
    assert not torch.equal(kept.model(ids).logits, kept.model(ids).logits)
    with pytest.raises(SlammingError, match=r"model.dropout must be in \[0, 1\), got 1.0"):
        DPOAlignment(str(folder), num_units=K, context_length=64, dropout=1.0)


def test_rpo_alpha_adds_the_chosen_sides_mean_negative_log_likelihood(
    tmp_path: Path, preferences: dict
) -> None:
    folder = _tiny_folder(tmp_path / "m", seed=0)
    dm = _data(preferences)
    plain = DPOAlignment(str(folder), num_units=K, context_length=64, reference="live")
    rpo = DPOAlignment(str(folder), num_units=K, context_length=64, reference="live", rpo_alpha=0.5)
    _move_both_policies(plain, rpo)
    batch = next(iter(dm.reference_loader("train", 6)))
    with torch.no_grad():
        x, y = plain._evaluate(batch, "train"), rpo._evaluate(batch, "train")
        # The NLL computed here from the model's logits: mean -log p over the chosen completions' units.
        logits = rpo.model(
            input_ids=batch["chosen"]["input_ids"], attention_mask=batch["chosen"]["attention_mask"]
        ).logits
        labels = batch["chosen"]["labels"]
        scored = labels != IGNORE_INDEX
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = float(-(logp * scored).sum() / scored.sum())
    assert nll > 0.1
    assert float(x["nll/chosen"]) == pytest.approx(nll, rel=1e-4)
    assert float(x["loss"]) == pytest.approx(float(x["dpo_loss"]), abs=1e-6)  # 0: the paper's DPO
    assert float(y["dpo_loss"]) == pytest.approx(float(x["dpo_loss"]), abs=1e-5)
    assert float(y["loss"]) == pytest.approx(float(x["dpo_loss"]) + 0.5 * nll, rel=1e-4)
    with pytest.raises(SlammingError, match=r"model.rpo_alpha must be >= 0, got -1.0"):
        DPOAlignment(str(folder), num_units=K, context_length=64, rpo_alpha=-1.0)
