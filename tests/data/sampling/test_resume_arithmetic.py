"""The global data position of ``ResumableSampler``: resuming on any world size, without processes.

Many epoch sizes, world sizes before and after, batch sizes and stop steps are simulated in lock
step (every rank consumes one batch per step, as under DDP); the union of what the ranks consumed
before and after the resume must be a prefix of the epoch's order with no item twice, and only the
tail that does not divide among the new ranks may be missing. The data modules save and load the
position (and read checkpoints that hold only the old per-rank cursor).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from slamming.data.preference.corpus import PreferenceCorpusWriter
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.data.sampling.resumable import ResumableSampler, normalized_position, position_from_cursor
from tests.conftest import TEST_IDENTITY

from .ddp_resume_script import BATCH, CONTEXT, SEED, tiny_corpus


def _train(size: int, world: int, state: dict[str, int], batch: int, steps: int | None) -> tuple[list, dict]:
    """``steps`` lock-step training steps (None: to the end of the epoch) on ``world`` ranks.

    Returns:
        The ``(epoch, k)`` items consumed (all ranks), and the position every rank then agrees on.
    """
    samplers = [
        ResumableSampler(range(size), world, rank, epoch=state["epoch"], index=state["position"])
        for rank in range(world)
    ]
    lengths = {len(s) for s in samplers}
    assert len(lengths) == 1  # every rank runs the same number of steps
    iterators = [iter(s) for s in samplers]
    consumed: list[tuple[int, int]] = []
    step = 0
    while steps is None or step < steps:
        batches = [[item for _, item in zip(range(batch), it, strict=False)] for it in iterators]
        if not batches[0]:
            if steps is None:
                break
            iterators = [iter(s) for s in samplers]  # the next epoch, as Lightning iterates again
            continue
        assert len({len(b) for b in batches}) == 1
        for sampler, got in zip(samplers, batches, strict=True):
            consumed += got
            sampler.advance(len(got))
        step += 1
    states = [s.state() for s in samplers]
    assert all(st == states[0] for st in states)
    assert states[0]["world_size"] == world and states[0]["epoch_items"] == size
    return consumed, states[0]


@pytest.mark.parametrize("size", [1, 2, 5, 7, 12, 13, 24, 31])
def test_resume_on_any_world_size_continues_the_epoch_exactly(size: int) -> None:
    checked = 0
    for world in range(1, 6):
        for new_world in range(1, 6):
            if size < max(world, new_world):
                continue
            for batch in (1, 2, 3):
                per_rank = size // world
                for steps in range(0, -(-per_rank // batch)):  # stop anywhere before the epoch's end
                    first, state = _train(size, world, {"epoch": 0, "position": 0}, batch, steps)
                    position = min(steps * batch, per_rank) * world
                    assert state["epoch"] == 0 and state["position"] == position
                    assert sorted(k for _, k in first) == list(range(position))
                    if (size - position) // new_world == 0:
                        # Fewer items left than new ranks: the resumed order starts the next epoch.
                        resumed = ResumableSampler(range(size), new_world, 0, 0, position)
                        assert resumed.position == (1, 0)
                        continue
                    second, end = _train(size, new_world, state, batch, None)
                    assert {e for e, _ in first + second} == {0}
                    union = [k for _, k in first + second]
                    # Every item once, in one prefix; only the tail that does not divide by W' is left.
                    kept = size - (size - position) % new_world
                    assert sorted(union) == list(range(kept)), (world, new_world, batch, steps)
                    assert end == {"epoch": 1, "position": 0, "world_size": new_world, "epoch_items": size}
                    checked += 1
    assert checked > 0


def test_uninterrupted_training_crosses_epochs_with_a_new_order_per_epoch() -> None:
    # 11 items on 3 ranks: 9 per epoch (the last 2 dropped), batches of 2 cross no epoch boundary.
    consumed, state = _train(11, 3, {"epoch": 0, "position": 0}, 2, 7)
    # per rank: epoch 0 takes 3 items in batches of 2 + 1; epoch 1: 2 + 1; epoch 2: 2 + 1; then 2
    epochs = [e for e, _ in consumed]
    assert epochs == [0] * 9 + [1] * 9 + [2] * 9 + [3] * 6
    assert state == {"epoch": 3, "position": 6, "world_size": 3, "epoch_items": 11}
    assert sorted(k for e, k in consumed if e == 1) == list(range(9))


def test_resumed_sampler_length_and_items_agree() -> None:
    sampler = ResumableSampler(range(10), 3, 1, epoch=2, index=4)
    assert len(sampler) == 2 and list(sampler) == [(2, 5), (2, 8)]  # 6 items left for 3 ranks
    assert normalized_position(10, 3, 2, 8) == (3, 0)  # 2 left: no rank gets one, next epoch
    assert normalized_position(2, 3, 0, 0) == (0, 0)  # fewer items than ranks: nothing ever moves
    assert len(ResumableSampler(range(2), 3, 0)) == 0


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_an_old_per_rank_cursor_gives_what_the_old_sampler_gave(world: int) -> None:
    size = 23
    per_rank = size // world
    for cursor in range(3 * per_rank + 2):
        epoch, offset = divmod(cursor, per_rank)
        for rank in range(world):
            # The sampler before the world size was saved: rank r took j * W + r from the cursor.
            old = [(epoch, j * world + rank) for j in range(offset, per_rank)]
            assert list(ResumableSampler(range(size), world, rank, cursor=cursor)) == old
        assert position_from_cursor(cursor, size, world) == (epoch, offset * world)


# -- the data module's checkpoint state ------------------------------------------------------------------


def _attach(dm: UnitDataModule | PreferenceDataModule, rank: int, world: int) -> None:
    """What Lightning provides to a data module while training on CPU."""
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(training=True, global_rank=rank, world_size=world, strategy=strategy)  # type: ignore[assignment]


def _module(
    corpus: Path, rank: int = 0, world: int = 1, state: dict[str, Any] | None = None
) -> UnitDataModule:
    dm = UnitDataModule(
        train=str(corpus), context_length=CONTEXT, batch_size=BATCH, seed=SEED, pin_memory=False
    )
    _attach(dm, rank, world)
    dm.setup("fit")
    if state is not None:
        dm.load_state_dict(state)
    return dm


def _windows(dm: UnitDataModule, batches: int) -> list[list[int]]:
    """Input ids of the windows of ``batches`` consumed batches, advancing the position."""
    out: list[list[int]] = []
    for _, batch in zip(range(batches), dm.train_dataloader(), strict=False):
        dm.on_before_batch_transfer(batch, 0)
        out += batch["input_ids"].tolist()
    return out


def test_unit_data_module_saves_a_global_position_and_resumes_it_on_other_ranks(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    reference = _module(corpus)
    epoch = _windows(reference, 24)  # the uninterrupted epoch: 48 windows on one rank
    assert reference.state_dict() == {
        "epoch": 1,
        "position": 0,
        "world_size": 1,
        "epoch_items": 48,
        "seed": SEED,
        "context_length": CONTEXT,
    }
    ranks = [_module(corpus, rank, 3) for rank in range(3)]
    first = [_windows(dm, 2) for dm in ranks]  # 3 ranks × 2 batches × 2 windows = 12
    states = [dm.state_dict() for dm in ranks]
    assert states == [{**states[0], "epoch": 0, "position": 12, "world_size": 3}] * 3
    assert sorted(sum(first, [])) == sorted(epoch[:12])
    resumed = [_module(corpus, rank, 2, states[0]) for rank in range(2)]
    second = [_windows(dm, 100) for dm in resumed]  # to the end of the epoch: 18 each
    assert [len(w) for w in second] == [18, 18]
    assert second[1][:2] == [epoch[13], epoch[15]]  # rank 1 of 2 takes items 13, 15, ...
    assert sorted(sum(first + second, [])) == sorted(epoch)  # one epoch, nothing twice


def test_an_old_cursor_checkpoint_loads_on_the_current_ranks_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    epoch = _windows(_module(corpus), 24)
    old = {"cursor": 5, "seed": SEED, "context_length": CONTEXT}  # what checkpoints held before
    with caplog.at_level(logging.WARNING, logger="slamming.data.sampling.resumable"):
        got = [_windows(_module(corpus, rank, 2, old), 1) for rank in range(2)]
    # The old sampler on 2 ranks: 24 per rank, rank r took j * 2 + r for j from 5.
    assert got == [[epoch[10], epoch[12]], [epoch[11], epoch[13]]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rank 0 only
    assert "per-rank cursor (5 samples)" in warnings[0] and "current 2" in warnings[0]


def test_a_checkpoint_of_another_epoch_size_restarts_the_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    epoch = _windows(_module(corpus), 24)
    saved = {
        "epoch": 0,
        "position": 10,
        "world_size": 1,
        "epoch_items": 47,
        "seed": SEED,
        "context_length": CONTEXT,
    }
    with caplog.at_level(logging.WARNING, logger="slamming.data.sampling.resumable"):
        assert _windows(_module(corpus, state=saved), 1) == epoch[:2]
    assert "had 47 items per epoch, now 48" in caplog.text
    # A position not used yet is saved as it was loaded (a checkpoint right after a resume).
    assert _module(corpus, state={**saved, "epoch_items": 48}).state_dict()["position"] == 10


def _preference_module(
    path: Path, rank: int, world: int, state: dict[str, Any] | None = None
) -> PreferenceDataModule:
    dm = PreferenceDataModule(train=str(path), context_length=16, batch_size=2, seed=5, pin_memory=False)
    _attach(dm, rank, world)
    dm.setup("fit")
    if state is not None:
        dm.load_state_dict(state)
    return dm


def _triples(dm: PreferenceDataModule, batches: int) -> list[int]:
    out: list[int] = []
    for _, batch in zip(range(batches), dm.train_dataloader(), strict=False):
        dm.on_before_batch_transfer(batch, 0)
        out += batch["index"].tolist()
    return out


def test_preference_data_module_resumes_on_other_ranks_and_reads_old_cursors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "prefs"
    with PreferenceCorpusWriter(path, tokenizer=TEST_IDENTITY, num_units=TEST_IDENTITY["k"]) as writer:
        for _ in range(20):
            writer.add(*(rng.integers(0, TEST_IDENTITY["k"], size=int(rng.integers(2, 9))) for _ in range(3)))
    order = _preference_module(path, 0, 1)._split("train").order(0).tolist()
    ranks = [_preference_module(path, rank, 3) for rank in range(3)]
    first = [_triples(dm, 2) for dm in ranks]  # 3 ranks × 2 batches × 2 triples
    state = ranks[0].state_dict()
    assert state == {
        "epoch": 0,
        "position": 12,
        "world_size": 3,
        "epoch_items": 20,
        "seed": 5,
        "train_triples": 20,
    }
    second = [_triples(_preference_module(path, rank, 2, state), 100) for rank in range(2)]
    assert second == [order[12::2], order[13::2]]  # the 8 left, 4 per rank of 2
    assert sorted(sum(first + second, [])) == list(range(20))  # one epoch, nothing twice

    old = {"cursor": 3, "seed": 5, "train_triples": 20}  # what DPO checkpoints held before
    with caplog.at_level(logging.WARNING, logger="slamming.data.sampling.resumable"):
        got = [_triples(_preference_module(path, rank, 2, old), 1) for rank in range(2)]
    # The old sampler on 2 ranks: 10 per rank, rank r took j * 2 + r for j from 3.
    assert got == [[order[6], order[8]], [order[7], order[9]]]
    warnings = [r.getMessage()[:45] for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["the checkpoint's data position is a per-rank "]  # one line, from rank 0
    # Another training set: the order restarts (the triples' count names the data).
    assert _triples(_preference_module(path, 0, 1, {**state, "train_triples": 99}), 1) == order[:2]
