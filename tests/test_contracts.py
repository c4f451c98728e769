"""The run-time contracts between floors (slamming.contracts): who provides them, and the errors."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from slamming.callbacks.benchmark_eval import BenchmarkEvaluation
from slamming.callbacks.budget import ComputeBudget
from slamming.contracts import (
    BudgetChild,
    HFModelHolder,
    ResizableSchedule,
    TokenizerFolder,
    TokenizerRecord,
    UnitData,
    members,
    missing_members,
    require,
)
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.data.pretrain.synthetic import SyntheticSpeechDataModule
from slamming.errors import SlammingError
from slamming.tasks.dpo import DPOAlignment
from slamming.tasks.pretrain import NextUnitPretraining


class _Bare(pl.LightningModule):
    """A LightningModule that provides none of the contracts."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Linear(2, 2)


def test_protocol_members_are_the_declared_names() -> None:
    assert members(TokenizerRecord) == ["tokenizer_dir", "tokenizer_identity"]
    assert members(HFModelHolder) == ["hf_model"]
    assert members(ResizableSchedule) == ["resize_schedule"]
    assert members(BudgetChild) == ["parent_budget"]
    assert members(UnitData) == ["num_units", "tokenizer"]
    assert members(TokenizerFolder) == ["tokenizer_dir"]


@pytest.mark.parametrize("stage", [NextUnitPretraining, DPOAlignment])
@pytest.mark.parametrize("protocol", [TokenizerRecord, HFModelHolder, ResizableSchedule, BudgetChild])
def test_training_stages_provide_every_stage_contract(stage: type, protocol: type) -> None:
    # Checked on the class: every member is a class attribute, property or method of the stage.
    assert missing_members(stage, protocol) == []


@pytest.mark.parametrize("datamodule", [UnitDataModule, SyntheticSpeechDataModule, PreferenceDataModule])
def test_unit_data_modules_provide_the_data_contract(datamodule: type) -> None:
    assert missing_members(datamodule, UnitData) == []


def test_both_pretraining_data_modules_name_their_tokenizer_folder() -> None:
    """The synthetic module's is the one it fitted; a plain UnitDataModule's is its tokenizer_dir argument."""
    assert missing_members(SyntheticSpeechDataModule, TokenizerFolder) == []
    assert missing_members(UnitDataModule, TokenizerFolder) == []


def test_require_names_the_class_the_protocol_and_what_is_missing() -> None:
    with pytest.raises(SlammingError) as err:
        require(_Bare(), TokenizerRecord, "BenchmarkEvaluation", "set the callback's tokenizer folder")
    assert str(err.value) == (
        "BenchmarkEvaluation needs a TokenizerRecord (tokenizer_dir, tokenizer_identity); "
        "_Bare lacks tokenizer_dir, tokenizer_identity: set the callback's tokenizer folder"
    )


def test_budget_size_schedule_on_a_module_without_resize_is_one_clear_error() -> None:
    budget = ComputeBudget(max_gpu_hours=1.0, size_schedule=True)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=1)
    with pytest.raises(
        SlammingError,
        match=r"budget.size_schedule needs a ResizableSchedule \(resize_schedule\); "
        r"_Bare lacks resize_schedule: set budget.size_schedule=false",
    ):
        budget.on_train_start(trainer, _Bare())


def test_benchmark_callback_on_a_module_without_a_tokenizer_record_is_one_clear_error(tmp_path) -> None:
    callback = BenchmarkEvaluation(benchmarks=[{"kind": "manifest", "path": str(tmp_path / "m.jsonl")}])
    with pytest.raises(SlammingError, match="BenchmarkEvaluation needs a TokenizerRecord"):
        callback._tokenizer_dir(_Bare())
