"""Preference triples: the authors' tokenisation, jsonl sources, and the resumable data module."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.data.preference.corpus import PreferenceCorpusWriter
from slamming.data.preference.datamodule import PreferenceDataModule, collate_preferences, preference_example
from slamming.data.preference.sources import JsonlPreferences
from slamming.errors import CorpusError, SlammingError
from slamming.tasks.preference import concatenated_logprobs
from slamming.vocab import IGNORE_INDEX
from tests.conftest import TEST_IDENTITY

K = TEST_IDENTITY["k"]


def _triples(n: int, seed: int, longest: int = 12) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(rng.integers(0, K, size=int(rng.integers(1, longest))) for _ in range(3)) for _ in range(n)]


def _corpus(
    path: Path, triples: list[tuple[np.ndarray, ...]], identity: dict[str, Any] | None = None
) -> Path:
    identity = identity or TEST_IDENTITY
    with PreferenceCorpusWriter(path, tokenizer=identity, num_units=identity["k"]) as writer:
        for t in triples:
            writer.add(*t)
    return path


def _line(prompt: list[int], chosen: list[int], rejected: list[int]) -> str:
    side = lambda u: {"units": u, "duration": [1] * len(u)}  # noqa: E731
    return json.dumps({"prompt": side(prompt), "chosen": side(chosen), "rejected": side(rejected), "id": 7})


def _attach(dm: PreferenceDataModule, rank: int = 0, world: int = 1) -> None:
    """What Lightning provides to a data module while training on CPU."""
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    trainer = SimpleNamespace(training=True, global_rank=rank, world_size=world, strategy=strategy)
    dm.trainer = trainer  # type: ignore[assignment]


def _consume(dm: PreferenceDataModule, iterator: Any, steps: int) -> list[list[int]]:
    out = []
    for _ in range(steps):
        batch = next(iterator)
        dm.on_before_batch_transfer(batch, 0)
        out.append(batch["index"].tolist())
    return out


# -- the authors' tokenisation -----------------------------------------------------------------------
def test_example_cuts_the_prompt_from_the_left_and_keeps_bos() -> None:
    ex = preference_example([5, 6, 7], [8], [9, 10], context_length=8, max_prompt_length=3, index=4)
    assert ex["index"] == 4
    # prompt ids <S> 7 8 9 -> cut to <S> + the last two units (6, 7 -> ids 8, 9)
    assert ex["chosen"]["input_ids"].tolist() == [1, 8, 9, 10]  # sequence 1 8 9 10 1
    assert ex["chosen"]["labels"].tolist() == [-100, -100, 10, 1]
    # rejected completion 11 12 <S> fits: 3 + 3 <= 8
    assert ex["rejected"]["input_ids"].tolist() == [1, 8, 9, 11, 12]
    assert ex["rejected"]["labels"].tolist() == [-100, -100, 11, 12, 1]


def test_example_cuts_completions_from_the_right_losing_the_closing_bos() -> None:
    ex = preference_example([5], [1, 2, 3, 4, 5], [6], context_length=5, max_prompt_length=4)
    # prompt <S> 7 (2 ids); room 3: completion 3 4 5 6 7 <S> -> 3 4 5
    assert ex["chosen"]["input_ids"].tolist() == [1, 7, 3, 4]
    assert ex["chosen"]["labels"].tolist() == [-100, 3, 4, 5]
    assert ex["rejected"]["input_ids"].tolist() == [1, 7, 8]
    assert ex["rejected"]["labels"].tolist() == [-100, 8, 1]
    # a prompt shorter than max_prompt_length is kept whole, and a one-id prompt is only <S>
    assert preference_example([3], [4], [5], 8, 6)["chosen"]["input_ids"].tolist() == [1, 5, 6]
    assert preference_example([3, 4], [5], [6], 8, 1)["chosen"]["input_ids"].tolist() == [1, 7]
    with pytest.raises(SlammingError, match="max_prompt_length=8"):
        preference_example([3], [4], [5], 8, 8)


def test_batch_feeds_concatenated_logprobs_like_a_hand_loop() -> None:
    items = [
        preference_example(*t, context_length=16, max_prompt_length=6, index=i)
        for i, t in enumerate(_triples(3, 0))
    ]
    batch = collate_preferences(items)
    assert batch["index"].tolist() == [0, 1, 2]
    for side in ("chosen", "rejected"):
        longest = max(len(it[side]["input_ids"]) for it in items)
        assert batch[side]["input_ids"].shape == (3, longest)
        assert batch[side]["attention_mask"].sum(1).tolist() == [len(it[side]["input_ids"]) for it in items]
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=K + 2,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        chosen, rejected = concatenated_logprobs(model, batch["chosen"], batch["rejected"])
        for i, it in enumerate(items):
            for side, got in (("chosen", chosen), ("rejected", rejected)):
                ids, labels = it[side]["input_ids"], it[side]["labels"]
                logp = torch.log_softmax(model(input_ids=torch.as_tensor(ids)[None]).logits[0].float(), -1)
                want = sum(float(logp[t, labels[t]]) for t in range(len(ids)) if labels[t] != IGNORE_INDEX)
                assert abs(float(got[i]) - want) <= 1e-5


# -- sources ---------------------------------------------------------------------------------------------
def test_jsonl_skips_and_counts_bad_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "prefs.jsonl"
    missing_key = json.dumps({"prompt": {"units": [1]}, "chosen": {"units": [2]}})
    lines = [_line([1, 2], [3], [4, 5]), _line([6], [7, 8], [9]), _line([1], [], [2]), "", "{not json",
             missing_key, _line([10], [11], [12])]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    source = JsonlPreferences(path, num_units=K)
    assert len(source) == 3
    assert [u.tolist() for u in source.triple(2)] == [[10], [11], [12]]
    assert source.lengths().tolist() == [[2, 1, 2], [1, 2, 1], [1, 1, 1]]
    assert source.tokenizer is None
    assert (
        source.summary
        == "prefs.jsonl: 6 lines, 3 triples, skipped 3 (1 empty side: line 3; 2 malformed: lines 5, 6)"
    )
    with caplog.at_level("INFO"):
        dm = PreferenceDataModule(train=str(path), num_units=K, context_length=16)
        dm.setup("fit")
    assert any(r.getMessage() == source.summary for r in caplog.records)
    assert dm.num_units == K and dm.tokenizer is None and dm.num_triples("train") == 3
    assert dm.data_fingerprint("train") != PreferenceDataModule(str(path), num_units=K + 1).data_fingerprint(
        "train"
    )


def test_jsonl_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(_line([1], [2], [3]) + "\n" + _line([1], [2, K], [3]) + "\n")
    with pytest.raises(CorpusError, match=rf"x.jsonl line 2: the chosen has unit id {K}, outside \[0, {K}\)"):
        PreferenceDataModule(train=str(path), num_units=K).setup("fit")
    with pytest.raises(SlammingError, match=r"data.num_units: give K for the units of x.jsonl \(500 for"):
        PreferenceDataModule(train=str(path))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("[]\n" + _line([], [1], [2]) + "\n")
    with pytest.raises(CorpusError, match="empty.jsonl: 2 lines, 0 triples, skipped 2 .*: no usable triple"):
        JsonlPreferences(empty, K)
    with pytest.raises(CorpusError, match="nowhere.jsonl does not exist"):
        PreferenceDataModule(train=str(tmp_path / "nowhere.jsonl"), num_units=K)
    with pytest.raises(SlammingError, match="max_prompt_length=16 must be"):
        PreferenceDataModule(train=str(path), num_units=K, context_length=16, max_prompt_length=16)


def test_sources_must_share_the_tokeniser(tmp_path: Path) -> None:
    a = _corpus(tmp_path / "a", _triples(5, 0))
    b = _corpus(tmp_path / "b", _triples(5, 1), identity={**TEST_IDENTITY, "settings_hash": "other"})
    with pytest.raises(SlammingError, match="tokeniser mismatch.*settings_hash"):
        PreferenceDataModule(train=[str(a), str(b)])
    with pytest.raises(CorpusError, match="K=20 but data.num_units=500"):
        PreferenceDataModule(train=str(a), num_units=500)
    # a jsonl source takes K from the corpora of the run; the two are concatenated in order
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(_line([1], [2], [3]) + "\n")
    dm = PreferenceDataModule(train=[str(a), str(jsonl)], context_length=8)
    assert dm.num_units == K and dm.tokenizer == TEST_IDENTITY and dm.num_triples("train") == 6
    assert dm.reference_loader("train", 6).dataset[5]["chosen"]["input_ids"].tolist() == [1, 3, 4]


# -- the data module ---------------------------------------------------------------------------------------
def test_truncation_is_reported_per_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = _corpus(
        tmp_path / "train", [(np.arange(6), np.arange(2), np.arange(1))] * 3 + [(np.arange(2),) * 3]
    )
    val = _corpus(tmp_path / "val", [(np.arange(2), np.arange(9), np.arange(1))])
    with caplog.at_level("INFO"):
        PreferenceDataModule(train=str(train), val=str(val), context_length=10, max_prompt_length=4).setup(
            "fit"
        )
    messages = [r.getMessage() for r in caplog.records]
    # train prompts of 6 units are 7 ids > 4; completions fit (4 + 3 <= 10)
    assert (
        "train: 3 of 4 prompts are longer than max_prompt_length=4 ids and are cut from the left; "
        "0 of 8 completions are cut from the right at the context (10 ids)"
    ) in messages
    # val: prompt 3 ids + chosen 10 ids > 10
    assert (
        "val: 0 of 1 prompts are longer than max_prompt_length=4 ids and are cut from the left; "
        "1 of 2 completions is cut from the right at the context (10 ids)"
    ) in messages


def test_order_is_seeded_sharded_and_resumes_mid_epoch(tmp_path: Path) -> None:
    path = _corpus(tmp_path / "prefs", _triples(23, 0))

    def module() -> PreferenceDataModule:
        dm = PreferenceDataModule(train=str(path), val=str(path), context_length=16, batch_size=3, seed=5)
        _attach(dm)
        dm.setup("fit")
        return dm

    dm = module()
    loader = dm.train_dataloader()
    epoch0 = _consume(dm, iter(loader), 8)  # 23 triples: 7 full batches and one of 2
    assert sorted(sum(epoch0, [])) == list(range(23)) and sum(epoch0, []) != list(range(23))
    it = iter(loader)
    first = _consume(dm, it, 3)
    state = dm.state_dict()
    rest = _consume(dm, it, 5) + _consume(dm, iter(loader), 2)
    assert sum(first + rest[:5], []) != sum(epoch0, [])  # epoch 1 has its own order

    resumed = module()
    resumed.load_state_dict(state)
    resumed_loader = resumed.train_dataloader()
    assert len(resumed_loader) == 5
    again = _consume(resumed, iter(resumed_loader), 5) + _consume(resumed, iter(resumed_loader), 2)
    assert again == rest
    # the batches themselves are equal, not just their indices
    a, b = next(iter(dm.reference_loader("train", 4))), next(iter(resumed.reference_loader("train", 4)))
    assert torch.equal(a["chosen"]["labels"], b["chosen"]["labels"]) and a["index"].tolist() == [0, 1, 2, 3]
    assert dm.data_fingerprint("train") == resumed.data_fingerprint("train")
    assert [x["index"].tolist() for x in dm.val_dataloader()][:2] == [[0, 1, 2], [3, 4, 5]]
    # a checkpoint of other training data does not move the order of this one
    changed = module()
    changed.load_state_dict({**state, "train_triples": 99})
    assert len(changed.train_dataloader()) == 8

    shards = []
    for rank in (0, 1):
        two = PreferenceDataModule(train=str(path), context_length=16, batch_size=4, seed=5)
        _attach(two, rank=rank, world=2)
        two.setup("fit")
        shards.append(sum(_consume(two, iter(two.train_dataloader()), 3), []))
    assert len(shards[0]) == len(shards[1]) == 11 and not set(shards[0]) & set(shards[1])
    order = two._split("train").order(0)
    assert set(shards[0]) | set(shards[1]) == set(order[:22].tolist())  # the last one is the dropped tail


class _Recorder(pl.LightningModule):
    """Trains nothing; records the triples each step sees."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch["index"].tolist())
        return self.weight.sum() * batch["chosen"]["labels"].ne(IGNORE_INDEX).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint:UserWarning")
@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`:UserWarning")
def test_lightning_resume_sees_the_uninterrupted_batches(tmp_path: Path) -> None:
    path = _corpus(tmp_path / "prefs", _triples(10, 0))

    def fit(max_steps: int, ckpt: Path | None = None) -> tuple[_Recorder, pl.Trainer]:
        model, dm = _Recorder(), PreferenceDataModule(train=str(path), context_length=16, batch_size=3)
        trainer = pl.Trainer(
            max_steps=max_steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        return model, trainer

    whole, _ = fit(9)
    first, trainer = fit(5)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    second, _ = fit(9, tmp_path / "mid.ckpt")
    assert first.seen == whole.seen[:5] and second.seen == whole.seen[5:]
    assert sorted(sum(whole.seen[:4], [])) == list(range(10))  # one epoch: 3 + 3 + 3 + 1
