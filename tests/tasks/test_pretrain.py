"""``NextUnitPretraining`` in a real (tiny) fit: its loss, token count, checkpoint section and schedule.

Every expected number is computed here without the module's own forward: the packed windows are cut
into their document pieces and each piece is run alone through the model (positions from 0, plain
causal attention), so the module's packed, document-masked forward and ``next_unit_loss`` must agree
with a one-document-at-a-time computation.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.errors import SlammingError
from slamming.models.unit_lm import UnitLMBuilder
from slamming.tasks.pretrain import NextUnitPretraining
from slamming.tasks.schedules import InverseSqrt, WarmupCosine
from slamming.vocab import IGNORE_INDEX
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE, markov_documents, write_corpus

K = TEST_IDENTITY["k"]
STEPS = 10
LR, MIN_LR = 3e-3, 3e-4


@torch.no_grad()
def _piecewise_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Summed cross-entropy and target count of a packed batch, each document piece run on its own."""
    total, count = 0.0, 0
    for b in range(batch["input_ids"].shape[0]):
        segments = batch["segment_ids"][b]
        for s in segments.unique():
            where = (segments == s).nonzero().squeeze(1)
            ids, labels = batch["input_ids"][b, where], batch["labels"][b, where]
            # Inside a piece the targets are the next ids, and positions restart at 0.
            assert torch.equal(labels[:-1], ids[1:])
            assert torch.equal(batch["position_ids"][b, where], torch.arange(len(where)))
            logps = torch.log_softmax(model(input_ids=ids[None]).logits[0].float(), dim=-1)
            real = labels != IGNORE_INDEX
            total -= float(logps[real.nonzero().squeeze(1), labels[real]].sum())
            count += int(real.sum())
    return total, count


class _Record(Callback):
    """Before every step: the learning rates and the expected loss; after it: what training_step returned."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.expected: list[tuple[float, int]] = []
        self.returned: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        total, count = _piecewise_loss(pl_module.model, batch)
        self.expected.append((total / count, count))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        self.returned.append({k: v.detach().clone() for k, v in outputs.items()})


@pytest.fixture(scope="module")
def fit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pretrain")
    train = write_corpus(root / "train", markov_documents(40, seed=0))
    val = write_corpus(root / "val", markov_documents(8, seed=1))
    torch.manual_seed(0)
    module = NextUnitPretraining(
        UnitLMBuilder(**TINY_BACKBONE["init_args"]),
        num_units=K,
        context_length=32,
        lr=LR,
        min_lr=MIN_LR,
        warmup_ratio=0.2,
        weight_decay=0.1,
    )
    initial = copy.deepcopy(module.model)
    record = _Record()
    data = UnitDataModule(train=str(train), val=str(val), context_length=32, batch_size=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=STEPS,
        val_check_interval=100,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[
            record,
            ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=STEPS, filename="{step}"),
        ],
    )
    trainer.fit(module, datamodule=data)
    return {
        "module": module,
        "trainer": trainer,
        "record": record,
        "initial": initial,
        "val": val,
        "ckpt": root / "ckpt" / f"step={STEPS}.ckpt",
    }


def test_training_step_returns_the_loss_and_token_count_of_the_batch(fit: dict[str, Any]) -> None:
    record = fit["record"]
    assert len(record.returned) == len(record.expected) == STEPS
    for step, (returned, (loss, count)) in enumerate(zip(record.returned, record.expected, strict=True)):
        assert set(returned) == {"loss", "num_tokens"}
        assert int(returned["num_tokens"]) == count, step
        assert float(returned["loss"]) == pytest.approx(loss, abs=1e-5), step
    # The batches hold document boundaries, so some targets were ignored: 2 windows of 32 positions.
    assert any(count < 2 * 32 for _, count in record.expected)


def test_initial_validation_loss_is_the_untrained_models_token_weighted_loss(fit: dict[str, Any]) -> None:
    data = UnitDataModule(train=str(fit["val"]), val=str(fit["val"]), context_length=32, batch_size=2)
    data.setup("fit")
    total, count = 0.0, 0
    for batch in data.val_dataloader():
        t, c = _piecewise_loss(fit["initial"].eval(), batch)
        total, count = total + t, count + c
    assert fit["module"].initial_val_loss == pytest.approx(total / count, abs=1e-5)


def test_checkpoint_section_is_written_and_restored(fit: dict[str, Any]) -> None:
    checkpoint = torch.load(fit["ckpt"], map_location="cpu", weights_only=False)
    assert checkpoint["slamming"] == {
        "backbone": UnitLMBuilder(**TINY_BACKBONE["init_args"]).to_dict(),
        "tokenizer": TEST_IDENTITY,
        "tokenizer_dir": None,
        "num_units": K,
        "initial_val_loss": fit["module"].initial_val_loss,
    }
    restored = NextUnitPretraining.load_from_checkpoint(
        fit["ckpt"], backbone=UnitLMBuilder(**TINY_BACKBONE["init_args"])
    )
    assert restored.tokenizer_identity == TEST_IDENTITY
    assert restored.tokenizer_dir is None
    assert restored.initial_val_loss == fit["module"].initial_val_loss
    for (name, a), b in zip(
        restored.model.state_dict().items(), fit["module"].model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # on_load_checkpoint takes the section as it is, and an absent one leaves nothing behind.
    fresh = NextUnitPretraining(UnitLMBuilder(**TINY_BACKBONE["init_args"]), num_units=K, context_length=32)
    fresh.on_load_checkpoint(
        {"slamming": {"tokenizer": {"kind": "x"}, "tokenizer_dir": "/tok", "initial_val_loss": 2.5}}
    )
    assert (fresh.tokenizer_identity, fresh.tokenizer_dir, fresh.initial_val_loss) == (
        {"kind": "x"},
        "/tok",
        2.5,
    )
    fresh.on_load_checkpoint({})
    assert (fresh.tokenizer_identity, fresh.tokenizer_dir, fresh.initial_val_loss) == (None, None, None)


def test_learning_rate_follows_warmup_cosine_over_the_fit(fit: dict[str, Any]) -> None:
    # T = 10 steps, warmup_ratio 0.2 -> W = 2; floor min_lr / lr = 0.1; decay over 8 steps:
    #   s = 0, 1: (s + 1) / 2 * 3e-3 = 1.5e-3, 3e-3
    #   s >= 2:   3e-3 * (0.1 + 0.45 (1 + cos(pi (s - 2) / 8)))
    #             s = 2: 3e-3;  s = 6: cos(pi/2) = 0 -> 3e-3 * 0.55 = 1.65e-3;
    #             s = 4: cos(pi/4) = 0.7071068 -> 3e-3 * 0.8681981 = 2.6045942e-3
    #             s = 9: cos(7pi/8) = -0.9238795 -> 3e-3 * 0.1342542 = 4.027626e-4
    expected = [1.5e-3, 3e-3] + [
        LR * (0.1 + 0.45 * (1 + math.cos(math.pi * (s - 2) / 8))) for s in range(2, 10)
    ]
    assert expected[4] == pytest.approx(2.6045942e-3, abs=1e-10)
    assert expected[6] == pytest.approx(1.65e-3, abs=1e-12)
    assert expected[9] == pytest.approx(4.027626e-4, abs=1e-10)
    lrs = fit["record"].lrs
    assert all(len(set(group)) == 1 for group in lrs)  # decay and no-decay groups share the rate
    assert [group[0] for group in lrs] == pytest.approx(expected, abs=1e-12)
    schedule = fit["trainer"].lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert isinstance(schedule, WarmupCosine)
    assert (schedule.total_steps, schedule.warmup_steps, schedule.min_ratio) == (STEPS, 2, pytest.approx(0.1))


def test_inverse_sqrt_pretraining_schedule_warms_up_over_ceil_ratio_of_the_steps() -> None:
    # warmup_ratio 0.01 of T = 813 steps: W = ceil(8.13) = 9, also the time scale (Hugging Face's).
    module = NextUnitPretraining(
        UnitLMBuilder(**TINY_BACKBONE["init_args"]),
        num_units=K,
        context_length=32,
        lr=LR,
        schedule="inverse_sqrt",
    )
    module.trainer = pl.Trainer(max_steps=813, max_epochs=-1, logger=False, accelerator="cpu")
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    schedule = sched.lr_lambdas[0]
    assert isinstance(schedule, InverseSqrt) and (schedule.warmup_steps, schedule.timescale) == (9, 9)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(36):
        sched.optimizer.step()  # no gradients: nothing moves
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    # s / 9 of the peak for s < 9, then sqrt(9 / s): 1 at s = 9, 1/2 at s = 36.
    assert lrs[0] == 0.0 and lrs[3] == pytest.approx(LR / 3) and lrs[9] == pytest.approx(LR)
    assert lrs[36] == pytest.approx(LR / 2)


def test_unknown_pretraining_schedule_is_one_clear_error() -> None:
    with pytest.raises(SlammingError, match=r"model.schedule must be one of inverse_sqrt, cosine, constant"):
        NextUnitPretraining(UnitLMBuilder(**TINY_BACKBONE["init_args"]), num_units=K, schedule="linear")


def test_weight_decay_spares_biases_norms_and_embeddings(fit: dict[str, Any]) -> None:
    module = fit["module"]
    names = {id(p): n for n, p in module.model.named_parameters()}
    decay, no_decay = fit["trainer"].optimizers[0].param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decayed | spared == set(names.values()) and not decayed & spared
    assert "model.embed_tokens.weight" in spared and "model.norm.weight" in spared
    assert "model.layers.0.self_attn.q_proj.bias" in spared
    assert "model.layers.0.input_layernorm.weight" in spared
    assert "model.layers.0.self_attn.q_proj.weight" in decayed and "lm_head.weight" in decayed
    assert "model.layers.1.mlp.down_proj.weight" in decayed
