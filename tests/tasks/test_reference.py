"""The DPO reference log-prob cache: round trip, keys that do not match, damaged files, the precompute."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.errors import SlammingError
from slamming.tasks.reference import (
    ReferenceKey,
    ReferenceLogps,
    compute_reference_logps,
    load_reference,
    save_reference,
)
from slamming.vocab import BOS_ID, EOS_ID
from tests.tasks.test_preference import preference_side

KEY = ReferenceKey(model="a1b2c3d4e5f60718", data="d" * 64, precision="32-true")
CHOSEN = [-1.5, -2.25, -40.0, -0.125]
REJECTED = [-3.0, -0.5, -41.75, -7.0]


def _logps() -> ReferenceLogps:
    return ReferenceLogps(torch.tensor(CHOSEN), torch.tensor(REJECTED), tokens=123, seconds=4.5)


def test_round_trip_returns_the_saved_values(tmp_path: Path) -> None:
    path = save_reference(tmp_path / "deep" / "ref.pt", KEY, _logps())  # parent folders are created
    assert path == tmp_path / "deep" / "ref.pt" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["ref.pt"]  # no temporary file left behind
    loaded = load_reference(path, KEY, 4)
    assert loaded.chosen.dtype == torch.float32 and loaded.rejected.dtype == torch.float32
    assert loaded.chosen.tolist() == CHOSEN and loaded.rejected.tolist() == REJECTED
    assert loaded.tokens == 123
    assert loaded.seconds == 0.0  # nothing was computed by loading
    # lookup serves the triples asked for, in the order asked.
    c, r = loaded.lookup(torch.tensor([2, 0]))
    assert c.tolist() == [-40.0, -1.5] and r.tolist() == [-41.75, -3.0]


def test_key_digest_is_the_short_sha256_of_its_fields() -> None:
    text = json.dumps({"data": KEY.data, "model": KEY.model, "precision": KEY.precision}, sort_keys=True)
    assert KEY.digest == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert ReferenceKey(KEY.model, KEY.data, "bf16-mixed").digest != KEY.digest


@pytest.mark.parametrize(
    ("key", "what", "detail"),
    [
        (
            ReferenceKey("ffffffffffffffff", KEY.data, KEY.precision),
            "made for another model",
            "model: cache 'a1b2c3d4e5f60718', this run 'ffffffffffffffff'",
        ),
        (
            ReferenceKey(KEY.model, "e" * 64, KEY.precision),
            "made for other data",
            f"data: cache '{'d' * 64}', this run '{'e' * 64}'",
        ),
        (
            ReferenceKey(KEY.model, KEY.data, "bf16-mixed"),
            "made for another precision",
            "precision: cache '32-true', this run 'bf16-mixed'",
        ),
        (
            ReferenceKey("ffffffffffffffff", KEY.data, "16-mixed"),
            "made for another model and another precision",
            "this run '16-mixed'",
        ),
    ],
)
def test_a_cache_made_for_another_key_is_refused(
    tmp_path: Path, key: ReferenceKey, what: str, detail: str
) -> None:
    path = save_reference(tmp_path / "ref.pt", KEY, _logps())
    with pytest.raises(SlammingError) as info:
        load_reference(path, key, 4)
    message = str(info.value)
    assert f"reference cache {path} was {what} (" in message
    assert detail in message
    assert "delete it" in message and "\n" not in message


def test_a_cache_of_another_size_is_refused(tmp_path: Path) -> None:
    path = save_reference(tmp_path / "ref.pt", KEY, _logps())
    with pytest.raises(SlammingError, match=r"holds 4 log-probs for 5 triples; delete it"):
        load_reference(path, KEY, 5)


def test_corrupt_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    good = save_reference(tmp_path / "ref.pt", KEY, _logps())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all" * 10)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(SlammingError) as info:
            load_reference(path, KEY, 4)
        message = str(info.value)
        assert message.startswith(f"{path} is not a readable reference cache (")
        assert message.endswith("); delete it to recompute")
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else", "chosen": torch.zeros(4)}, foreign)
    with pytest.raises(SlammingError, match="is not a slamming reference cache"):
        load_reference(foreign, KEY, 4)
    with pytest.raises(SlammingError, match="is not a readable reference cache"):
        load_reference(tmp_path / "missing.pt", KEY, 4)


@torch.no_grad()
def _alone(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    """Summed log p of completion + <S> given <S> prompt, one unpadded sequence."""
    ids = [BOS_ID, *prompt, *completion, EOS_ID]
    logps = torch.log_softmax(model(input_ids=torch.tensor([ids[:-1]])).logits[0].float(), dim=-1)
    return float(sum(logps[t, ids[t + 1]] for t in range(len(prompt), len(ids) - 1)))


def test_precompute_fills_every_triple_by_index_and_refuses_gaps() -> None:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa")  # fmt: skip
    model = Qwen2ForCausalLM(config).train()
    triples = [([2, 3], [4, 5, 6], [7]), ([8], [9, 10], [11, 2, 3]), ([4, 4, 4], [5], [6, 7])]

    def batch(indices: list[int]) -> dict:
        items = [triples[i] for i in indices]
        return {
            "index": torch.tensor(indices),
            "chosen": preference_side([p for p, _, _ in items], [c for _, c, _ in items]),
            "rejected": preference_side([p for p, _, _ in items], [r for _, _, r in items]),
        }

    # Batches out of order: each value lands at its triple's index.
    logps = compute_reference_logps(
        model, [batch([2, 0]), batch([1])], 3, torch.device("cpu"), progress=False
    )
    assert model.training  # the model's mode is restored
    model.eval()
    for i, (prompt, chosen, rejected) in enumerate(triples):
        assert float(logps.chosen[i]) == pytest.approx(_alone(model, prompt, chosen), abs=1e-5)
        assert float(logps.rejected[i]) == pytest.approx(_alone(model, prompt, rejected), abs=1e-5)
    # Tokens: the real (unpadded) inputs <S> prompt completion of both sides of every triple:
    # triple 0: 1 + 2 + 3 and 1 + 2 + 1; triple 1: 1 + 1 + 2 and 1 + 1 + 3; triple 2: 1 + 3 + 1 and 1 + 3 + 2.
    assert logps.tokens == (6 + 4) + (4 + 5) + (5 + 6)
    with pytest.raises(SlammingError, match="1 of 3 triples got no reference log-prob"):
        compute_reference_logps(model, [batch([2, 0])], 3, torch.device("cpu"), progress=False)
