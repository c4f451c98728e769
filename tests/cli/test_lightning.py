"""End-to-end pretraining through the real LightningCLI (`slamming fit`), on tiny corpora."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from slamming.cli import main
from slamming.models.unit_lm import UnitLMBuilder
from slamming.tasks.pretrain import NextUnitPretraining
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE, fit_config, markov_documents, write_corpus
from tests.models.test_unit_lm import force_hub_offline


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def _run_dir(tmp_path: Path, version: int = 0) -> Path:
    return tmp_path / "runs" / "t" / f"version_{version}"


def test_fit_trains_logs_checkpoints_and_exports(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    cfg = fit_config(tmp_path, unit_corpora, trainer={"max_steps": 30, "val_check_interval": 10})
    main(["fit", "--config", str(cfg)])
    out = capsys.readouterr()
    run = _run_dir(tmp_path)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    train = _scalars(run, "train/loss")
    val = _scalars(run, "val/loss")
    assert len(train) == 30
    assert 0 in val and max(val) >= 29  # step-0 validation and the final one
    assert val[max(val)] < val[0]  # it learns the Markov chain
    for tag in ("perf/tokens_per_sec", "budget/gpu_hours_used", "train/lr"):
        assert _scalars(run, tag), tag
    summary = [line for line in (out.out + out.err).splitlines() if line.startswith("slamming fit done")]
    assert len(summary) == 1 and "tokens=" in summary[0] and ".ckpt" in summary[0], out

    # The exported folder loads with plain transformers and gives the checkpoint's logits.
    hf = AutoModelForCausalLM.from_pretrained(run / "hf_model").eval()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module = NextUnitPretraining(UnitLMBuilder(**TINY_BACKBONE["init_args"]), num_units=20, context_length=64)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    ids = torch.randint(0, 22, (2, 40))
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, module.model(ids).logits)
    assert hf.config.slamming_tokenizer == TEST_IDENTITY
    assert ckpt["slamming"]["tokenizer"] == TEST_IDENTITY

    # The report `make demo` ends with agrees.
    report = subprocess.run(
        [sys.executable, "scripts/demo_report.py", str(run)], capture_output=True, text=True, check=False
    )
    assert report.returncode == 0, report.stderr
    assert "(identical)" in report.stdout and f"step 0: {val[0]:.4f}" in report.stdout


def test_resume_mid_epoch_reproduces_the_uninterrupted_losses(tmp_path: Path, unit_corpora: dict) -> None:
    full = tmp_path / "full"
    full.mkdir()
    main(["fit", "--config", str(fit_config(full, unit_corpora))])
    ckpt = _run_dir(full) / "checkpoints" / "step=8.ckpt"
    assert ckpt.is_file()
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == 0  # mid-epoch
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    main(["fit", "--config", str(fit_config(resumed, unit_corpora)), "--ckpt_path", str(ckpt)])
    a = _scalars(_run_dir(full), "train/loss")
    b = _scalars(_run_dir(resumed), "train/loss")
    assert sorted(b) == list(range(8, 12))
    for step in range(8, 12):
        assert a[step] == pytest.approx(b[step], abs=1e-6), step


def test_config_key_typo_is_one_clear_error(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    cfg = fit_config(
        tmp_path,
        unit_corpora,
        model={
            "class_path": "slamming.tasks.NextUnitPretraining",
            "init_args": {"backbone": TINY_BACKBONE, "lrr": 0.1},
        },
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lrr" in err


def test_missing_corpus_directory_is_one_clear_error(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "no_such_corpus"
    cfg = fit_config(
        tmp_path,
        unit_corpora,
        data={
            "class_path": "slamming.data.UnitDataModule",
            "init_args": {"train": [str(missing)], "context_length": 64},
        },
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(str(missing) in line for line in err)
    assert not any("Traceback" in line for line in err)


def test_corpora_from_different_tokenizers_are_refused(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    other = write_corpus(
        tmp_path / "other", markov_documents(20, seed=5), {**TEST_IDENTITY, "settings_hash": "t1"}
    )
    cfg = fit_config(
        tmp_path,
        unit_corpora,
        data={
            "class_path": "slamming.data.UnitDataModule",
            "init_args": {"train": [str(unit_corpora["train"])], "val": [str(other)], "context_length": 64},
        },
    )
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(cfg)])
    assert "settings_hash" in capsys.readouterr().err


def test_paper_config_without_hub_fails_in_one_clear_line(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline in every place that decides it, with an empty hub cache: with network, this would
    # otherwise download Qwen2.5-0.5B and start the paper's full CPU run.
    force_hub_offline(monkeypatch, tmp_path / "hub")
    args = [
        "fit",
        "--config",
        "configs/pretrain.yaml",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger",
        "false",
        f"--data.init_args.train=[{unit_corpora['train']}]",
        f"--data.init_args.val=[{unit_corpora['val']}]",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("slamming: error")]
    assert len(lines) == 1
    assert "Qwen/Qwen2.5-0.5B" in lines[0] and "model.init_args.backbone.init_args.base" in lines[0]
    assert "(HF_HUB_OFFLINE)" in lines[0]  # offline mode was detected: no connection was tried


def test_resuming_on_units_of_another_tokenizer_is_refused(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    main(["fit", "--config", str(fit_config(tmp_path, unit_corpora, trainer={"max_steps": 4}))])
    ckpt = _run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    other_identity = {**TEST_IDENTITY, "settings_hash": "other"}
    other = write_corpus(tmp_path / "other", markov_documents(200, seed=9), other_identity)
    cfg = fit_config(tmp_path, unit_corpora, data={"init_args": {"train": [str(other)], "val": None}})
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg), "--ckpt_path", str(ckpt)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "settings_hash" in err and "other" in err


def test_budget_sizes_the_cosine_to_end_with_the_budget(tmp_path: Path, unit_corpora: dict) -> None:
    budget = {
        # 10 s: enough steps for warmup and decay even when a loaded machine makes a step take 0.7 s
        # (the exact, clock-independent version is tests/callbacks/test_schedule_sizing.py)
        "max_gpu_hours": 10.0 / 3600,
        "size_schedule": True,
        "measure_steps": 3,
        "resize_every_n_steps": 5,
    }
    cfg = fit_config(
        tmp_path, unit_corpora, trainer={"max_steps": 100000, "val_check_interval": 100000}, budget=budget
    )
    main(["fit", "--config", str(cfg)])
    run = _run_dir(tmp_path)
    lr = _scalars(run, "train/lr")
    last_step = max(lr)
    assert 10 < last_step < 100000  # stopped by the budget, long before max_steps
    peak, floor = 3e-3, 3e-4
    assert max(lr.values()) > 0.8 * peak  # it did warm up to the peak
    assert lr[last_step] < floor + 0.25 * (peak - floor)  # and decayed close to the floor at the stop
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    horizon = ckpt["lr_schedulers"][0]["lr_lambdas"][0]["total_steps"]
    assert horizon < 100000  # the resized horizon is in the checkpoint, so a resume keeps the curve


def test_adamw8bit_from_config(tmp_path: Path, unit_corpora: dict) -> None:
    model = {"init_args": {"backbone": TINY_BACKBONE, "optimizer": "adamw8bit", "lr": 3e-3}}
    cfg = fit_config(tmp_path, unit_corpora, trainer={"max_steps": 6}, model=model)
    main(["fit", "--config", str(cfg)])
    ckpt = torch.load(
        _run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    states = ckpt["optimizer_states"][0]["state"].values()
    assert ckpt["hyper_parameters"]["optimizer"] == "adamw8bit"
    assert all("__bnb_optimizer_quant_state__" in s for s in states)  # bitsandbytes' state layout
    assert not any("exp_avg" in s for s in states)
