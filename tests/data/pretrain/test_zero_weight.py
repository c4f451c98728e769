"""A mixture weight of 0 means none: the corpus contributes no document (issue 12, item 6).

The weighted plan used to search for the first document that reaches the corpus's share of the
epoch and take one more, so a weight of 0 still put one document per epoch into training.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from slamming.data.corpus.format import UnitCorpus
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.data.pretrain.windows import EpochPlan, PackedWindowDataset
from slamming.errors import ConfigError
from slamming.vocab import UNIT_OFFSET
from tests.conftest import markov_documents, write_corpus

MARK = 15  # the only unit of corpus b; corpus a uses units 0..9


@pytest.fixture
def corpora(tmp_path: Path) -> tuple[Path, Path]:
    a = write_corpus(tmp_path / "a", markov_documents(80, seed=0, k=10))
    b = write_corpus(tmp_path / "b", [np.full(n, MARK) for n in (7, 30, 12, 3, 25)])
    return a, b


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_a_zero_weight_corpus_has_no_document_in_the_plan(epoch: int, corpora: tuple[Path, Path]) -> None:
    a, b = (UnitCorpus(p) for p in corpora)
    total = sum(c.num_tokens + 2 * len(c) for c in (a, b))
    plan = EpochPlan([a, b], [1.0, 0.0], seed=3, epoch=epoch)
    assert int((plan.corpus_of == 1).sum()) == 0
    assert plan.ids_per_corpus().tolist() == [plan.total_ids, 0]
    assert plan.total_ids >= total  # corpus a alone fills the epoch
    flipped = EpochPlan([b, a], [0.0, 1.0], seed=3, epoch=epoch)
    assert int((flipped.corpus_of == 0).sum()) == 0 and flipped.ids_per_corpus()[0] == 0


def test_no_window_holds_a_unit_of_a_zero_weight_corpus(corpora: tuple[Path, Path]) -> None:
    a, b = (UnitCorpus(p) for p in corpora)
    mark = MARK + UNIT_OFFSET
    zero = PackedWindowDataset([a, b], context_length=16, weights=[1.0, 0.0], seed=0)
    for epoch in (0, 1):
        assert all(mark not in zero[(epoch, k)][0] for k in range(len(zero)))
    assert zero.mix_report(["a", "b"]).endswith(", b 0.0 % (0.00 passes)")
    # The same mixture with a small positive weight does reach corpus b: the check above can fail.
    small = PackedWindowDataset([a, b], context_length=16, weights=[1.0, 0.01], seed=0)
    assert any(mark in small[(0, k)][0] for k in range(len(small)))


def test_the_data_module_serves_no_window_of_a_zero_weight_corpus(corpora: tuple[Path, Path]) -> None:
    data = UnitDataModule(
        train=[str(p) for p in corpora], weights=[2.0, 0.0], context_length=16, batch_size=4
    )
    data.setup("fit")
    assert data.train_set is not None
    ids = np.concatenate([batch["input_ids"].numpy().ravel() for batch in data.train_dataloader()])
    assert ids.size == len(data.train_set) * 16 and MARK + UNIT_OFFSET not in ids  # L ids per window


@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.0, 0.0], [1.0, math.nan], [math.inf, 1.0]])
def test_weights_that_cannot_work_are_one_config_error(
    weights: list[float], corpora: tuple[Path, Path]
) -> None:
    with pytest.raises(ConfigError) as err:
        UnitDataModule(train=[str(p) for p in corpora], weights=weights)
    message = str(err.value)
    assert message.startswith(f"data.weights={weights}: weights must be finite and non-negative")
    assert "\n" not in message and "a weight of 0 leaves its corpus out of training" in message
