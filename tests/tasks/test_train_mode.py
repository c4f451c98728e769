"""Every module trains in train mode and validates in eval mode, however the model was made.

``from_pretrained`` returns a model in eval mode and neither Lightning nor the stages switch it back,
so a TWIST-initialised model (or one loaded from a checkpoint) would train with its dropout off, and
Lightning would warn "Found N module(s) in eval mode at the start of training". Three real tiny fits
record the mode of every module at each training and validation step: a model built from a config,
one TWIST-initialised from a tiny local Qwen2 text LM, and DPO started from a pretraining checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.models.unit_lm import UnitLMBuilder
from slamming.tasks.dpo import DPOAlignment
from slamming.tasks.pretrain import NextUnitPretraining
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE
from tests.tasks.test_dpo import preferences, pretrained  # noqa: F401 (fixtures)

K = TEST_IDENTITY["k"]


class ModeRecorder(Callback):
    """Right before each training and validation step: is every module of the LightningModule training?"""

    def __init__(self) -> None:
        self.train: list[bool] = []
        self.val: list[bool] = []

    @staticmethod
    def _modes(pl_module: pl.LightningModule) -> list[bool]:
        return [m.training for m in pl_module.modules()]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.train.append(all(self._modes(pl_module)))

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.val.append(not any(self._modes(pl_module)))


def _fit(module: pl.LightningModule, data: pl.LightningDataModule, root: Path) -> ModeRecorder:
    """4 steps, validating after steps 2 and 4 (and a sanity check first); no Lightning warning of eval mode."""
    recorder = ModeRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=4,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        limit_val_batches=2,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[recorder],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=data)
    assert not [str(w.message) for w in caught if "eval mode" in str(w.message)]
    assert len(recorder.train) == 4 and len(recorder.val) == 1 + 2 * 2
    return recorder


def _pretraining(backbone: UnitLMBuilder, unit_corpora: dict[str, Path], root: Path) -> ModeRecorder:
    torch.manual_seed(0)
    module = NextUnitPretraining(backbone, num_units=K, context_length=32, export=False)
    assert all(m.training for m in module.model.modules())  # as the builder returns it
    data = UnitDataModule(
        train=str(unit_corpora["train"]), val=str(unit_corpora["val"]), context_length=32, batch_size=2
    )
    return _fit(module, data, root)


def test_a_model_built_from_a_config_trains_in_train_mode(tmp_path: Path, unit_corpora: dict) -> None:
    recorder = _pretraining(UnitLMBuilder(**TINY_BACKBONE["init_args"]), unit_corpora, tmp_path)
    assert recorder.train == [True] * 4 and recorder.val == [True] * 5


def test_a_twist_initialised_model_trains_in_train_mode(tmp_path: Path, unit_corpora: dict) -> None:
    torch.manual_seed(0)
    text = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=300, tie_word_embeddings=True, **TINY_BACKBONE["init_args"]["config"])
    )
    text.save_pretrained(tmp_path / "text_lm")
    backbone = UnitLMBuilder(base=str(tmp_path / "text_lm"), rope_theta=10000.0)
    recorder = _pretraining(backbone, unit_corpora, tmp_path)
    assert recorder.train == [True] * 4 and recorder.val == [True] * 5


def test_dpo_from_a_pretraining_checkpoint_trains_in_train_mode(
    tmp_path: Path,
    pretrained: Path,  # noqa: F811
    preferences: dict[str, Path],  # noqa: F811
) -> None:
    module = DPOAlignment(
        str(pretrained),
        num_units=K,
        context_length=64,
        reference_cache_dir=str(tmp_path / "ref"),
        progress=False,
    )
    assert all(m.training for m in module.model.modules())
    data = PreferenceDataModule(
        train=str(preferences["train"]), val=str(preferences["val"]), context_length=64
    )
    recorder = _fit(module, data, tmp_path)
    assert recorder.train == [True] * 4 and recorder.val == [True] * 5
    # Its export's model card says where it started and what it trained on.
    card = (tmp_path / "hf_model" / "README.md").read_text()
    assert "\n- Objective: `DPOAlignment`\n" in card
    assert f"\n- Start: continued from `{pretrained}`\n" in card
    assert f"\n- Training data: `{preferences['train']}`\n" in card and "\n- Steps: 4\n" in card
