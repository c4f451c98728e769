"""``slamming.models.loading``: a unit LM from a checkpoint, an export, a glob; weight fingerprints."""

from __future__ import annotations

import os
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from slamming.callbacks.budget import ComputeBudget
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.errors import SlammingError
from slamming.models.loading import load_unit_lm, resolve_newest, weights_fingerprint
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.tasks.pretrain import NextUnitPretraining
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE, markov_documents, write_corpus

K = TEST_IDENTITY["k"]
IDS = torch.tensor([[1, 5, 6, 7, 8, 2, 21]])


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K).eval()


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NextUnitPretraining]:
    """A real 2-step pretraining fit under a compute budget; its step-2 checkpoint and its module."""
    root = tmp_path_factory.mktemp("loading")
    train = write_corpus(root / "train", markov_documents(40, seed=0))
    torch.manual_seed(0)
    module = NextUnitPretraining(UnitLMBuilder(**TINY_BACKBONE["init_args"]), num_units=K, context_length=32)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[
            ComputeBudget(max_gpu_hours=1.0),
            ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, filename="{step}"),
        ],
    )
    trainer.fit(module, datamodule=UnitDataModule(train=str(train), context_length=32, batch_size=2))
    return root / "ckpt" / "step=2.ckpt", module


def test_load_from_a_checkpoint(pretrained: tuple[Path, NextUnitPretraining]) -> None:
    ckpt, module = pretrained
    loaded = load_unit_lm(ckpt)
    assert loaded.num_units == K and loaded.model.config.vocab_size == K + 2
    assert loaded.tokenizer == TEST_IDENTITY  # recorded from the training corpus
    assert loaded.tokenizer_dir is None  # the test corpus has no tokeniser folder
    assert loaded.budget == ComputeBudget.read_consumed(ckpt) and loaded.budget["gpu_hours"] > 0
    assert loaded.source == str(ckpt) and not loaded.model.training
    # What the stage recorded of its training, for the model card of a later `slamming export`.
    assert loaded.training is not None
    assert {k: loaded.training[k] for k in ("objective", "steps", "precision", "devices")} == {
        "objective": "NextUnitPretraining",
        "steps": 2,
        "precision": "32-true",
        "devices": 1,
    }
    assert loaded.training["train_data"] and loaded.training["train_data"][0].endswith("train")
    # Exactly the weights the checkpoint stores, and the model the fit ended with.
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    state = loaded.model.state_dict()
    assert sorted(state) == sorted(k.removeprefix("model.") for k in stored)
    for name, tensor in stored.items():
        assert torch.equal(state[name.removeprefix("model.")], tensor), name
    assert torch.equal(_logits(loaded.model), _logits(module.model.eval()))


def test_load_from_an_exported_folder(tmp_path: Path) -> None:
    model = _tiny(0)
    tokenizer_dir = tmp_path / "tok"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "kmeans.txt").write_text("centroids")
    budget = {"gpu_hours": 0.25, "tokens": 7, "stopped_by": None}
    out = export_hf(model, tmp_path / "hf_model", TEST_IDENTITY, tokenizer_dir, budget)
    loaded = load_unit_lm(out)
    assert loaded.num_units == K
    assert loaded.tokenizer == TEST_IDENTITY
    assert loaded.tokenizer_dir == out / "tokenizer"
    assert (out / "tokenizer" / "kmeans.txt").read_text() == "centroids"
    assert loaded.budget == budget
    assert loaded.source == str(out)
    assert torch.equal(_logits(loaded.model), _logits(model))
    assert weights_fingerprint(loaded.model) == weights_fingerprint(model)
    # dtype and attention implementation on request.
    cast = load_unit_lm(out, dtype="bfloat16", attn_implementation="eager").model
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    assert cast.config._attn_implementation == "eager"
    # An export without tokeniser folder or budget says so.
    bare = load_unit_lm(export_hf(_tiny(1), tmp_path / "bare", None))
    assert bare.tokenizer is None and bare.tokenizer_dir is None and bare.budget is None


def test_missing_or_unusable_sources_are_one_clear_error(tmp_path: Path) -> None:
    for missing in (tmp_path / "nothing.ckpt", tmp_path / "runs" / "x" / "hf_model"):
        with pytest.raises(SlammingError) as info:
            load_unit_lm(missing)
        assert str(info.value) == (
            f"{missing} does not exist; pass the .ckpt of a slamming run or an exported model folder"
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        SlammingError, match=r"empty: not a checkpoint file nor a model folder with config.json"
    ):
        load_unit_lm(empty)
    not_ours = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, not_ours)
    with pytest.raises(
        SlammingError, match=r"other.ckpt is not a slamming checkpoint \(no 'slamming' section\)"
    ):
        load_unit_lm(not_ours)
    out = export_hf(_tiny(0), tmp_path / "hf", TEST_IDENTITY)
    with pytest.raises(
        SlammingError, match=re.escape("dtype must be one of ['bfloat16', 'float16', 'float32']")
    ):
        load_unit_lm(out, dtype="float8")


def _touch(path: Path, mtime: float) -> Path:
    path.mkdir(parents=True)
    os.utime(path, (mtime, mtime))
    return path


def test_resolve_newest_picks_the_newest_match_by_mtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = tmp_path / "runs" / "x"
    # version_0 is the newest although its name sorts first; version_2 the oldest.
    newest = _touch(runs / "version_0" / "hf_model", 3_000_000)
    _touch(runs / "version_1" / "hf_model", 2_000_000)
    _touch(runs / "version_2" / "hf_model", 1_000_000)
    (runs / "version_3").mkdir()  # no hf_model: not a match
    pattern = str(runs / "version_*" / "hf_model")
    with caplog.at_level("INFO", logger="slamming.models.loading"):
        assert resolve_newest(pattern) == str(newest)
    assert f"{pattern} -> {newest} (the newest of 3 match(es))" in caplog.messages
    os.utime(runs / "version_2" / "hf_model", (4_000_000, 4_000_000))
    assert resolve_newest(pattern) == str(runs / "version_2" / "hf_model")
    assert resolve_newest(runs / "version_?" / "hf_model") == str(runs / "version_2" / "hf_model")
    # A plain path is returned as it is, existing or not.
    assert resolve_newest(str(tmp_path / "plain" / "last.ckpt")) == str(tmp_path / "plain" / "last.ckpt")
    missing = str(tmp_path / "runs" / "y" / "version_*" / "hf_model")
    with pytest.raises(SlammingError) as info:
        resolve_newest(missing)
    assert str(info.value) == f"nothing matches {missing}; run the stage that writes it first, or give a path"


def test_dpo_init_from_a_glob_starts_from_the_newest_export(tmp_path: Path) -> None:
    from slamming.tasks.dpo import DPOAlignment

    older = export_hf(_tiny(0), tmp_path / "runs" / "version_0" / "hf_model", TEST_IDENTITY)
    newer = export_hf(_tiny(1), tmp_path / "runs" / "version_1" / "hf_model", TEST_IDENTITY)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    module = DPOAlignment(str(tmp_path / "runs" / "version_*" / "hf_model"), num_units=K, context_length=64)
    assert module.source == str(newer)
    assert module.reference_fingerprint == weights_fingerprint(_tiny(1))
    assert module.reference_fingerprint != weights_fingerprint(_tiny(0))


def test_weights_fingerprint_names_the_weights_exactly() -> None:
    a, b = _tiny(0), _tiny(0)
    fingerprint = weights_fingerprint(a)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert weights_fingerprint(b) == fingerprint  # equal weights, another object
    assert weights_fingerprint(_tiny(1)) != fingerprint
    weight = b.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        old = float(weight[3, 5])
        weight[3, 5] = old + 1e-3  # one number of ~40k changed
    changed = weights_fingerprint(b)
    assert changed != fingerprint
    with torch.no_grad():
        weight[3, 5] = old
    assert weights_fingerprint(b) == fingerprint  # and back
    assert weights_fingerprint(b.to(torch.float64)) != fingerprint  # same values, another dtype


def test_an_exported_folder_loads_in_its_stored_dtype(tmp_path: Path) -> None:
    """dtype None keeps a bf16 export in bf16 (transformers alone would load it in fp32); a dtype casts."""
    model = _tiny(0).to(torch.bfloat16)
    out = export_hf(model, tmp_path / "bf16", TEST_IDENTITY, training={"steps": 7})
    kept = load_unit_lm(out)
    assert {p.dtype for p in kept.model.parameters()} == {torch.bfloat16}
    assert weights_fingerprint(kept.model) == weights_fingerprint(model)
    assert kept.training == {"steps": 7}
    cast = load_unit_lm(out, dtype="float32").model
    assert {p.dtype for p in cast.parameters()} == {torch.float32}
    assert weights_fingerprint(cast) == weights_fingerprint(model.float())
