"""``scoring_model``: fp32 scores whatever the model's dtype or autocast, and the model left untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from slamming.errors import SlammingError
from slamming.eval.likelihood import score_units
from slamming.eval.precision import scoring_model
from slamming.models.unit_lm import UnitLMBuilder
from tests.conftest import TINY_BACKBONE

K = 20
UNITS = [np.random.default_rng(i).integers(0, K, size=20 + 7 * i) for i in range(6)]


def _model(dtype: str, tied: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {**TINY_BACKBONE["init_args"]["config"], "tie_word_embeddings": tied}
    model = UnitLMBuilder(config=config, dtype=dtype).build(K)
    with torch.no_grad():  # a few units of logit spread, as a trained model has
        model.lm_head.weight.mul_(20.0)
    return model


def _state(model: torch.nn.Module) -> dict[str, object]:
    """Everything scoring must leave alone: weights (bitwise), dtypes, gradients, modes, RNG."""
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "modes": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_untouched(model: torch.nn.Module, before: dict[str, object]) -> None:
    after = _state(model)
    assert after["weights"].keys() == before["weights"].keys()
    for name, tensor in before["weights"].items():
        assert after["weights"][name].dtype == tensor.dtype and torch.equal(after["weights"][name], tensor), (
            name
        )
    assert after["grads"].keys() == before["grads"].keys()
    assert all(torch.equal(after["grads"][n], g) for n, g in before["grads"].items())
    assert after["modes"] == before["modes"]
    assert torch.equal(after["rng"], before["rng"])


def _with_grads_and_mixed_modes(model: torch.nn.Module) -> torch.nn.Module:
    """A model mid-training: gradients present, train mode, one submodule deliberately in eval."""
    model.train()
    model.model.layers[1].eval()
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    model(input_ids=ids, labels=ids).loss.backward()
    return model


def test_a_bf16_model_scores_as_its_fp32_copy_and_is_left_as_it_was() -> None:
    model = _with_grads_and_mixed_modes(_model("bfloat16"))
    before = _state(model)
    with scoring_model(model) as scorer:
        assert scorer is not model and not scorer.training
        assert {p.dtype for p in scorer.parameters()} == {torch.float32}
        scores, _ = score_units(scorer, UNITS, batch_size=4)
    _assert_untouched(model, before)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    fp32 = copy.deepcopy(model).float().eval()
    expected, _ = score_units(fp32, UNITS, batch_size=4)
    assert torch.allclose(scores, expected, rtol=0, atol=1e-6)
    bf16, _ = score_units(copy.deepcopy(model).eval(), UNITS, batch_size=4)
    assert (scores - bf16).abs().max() > 1e-4  # scoring the bf16 weights as they are differs
    # Also when called under bf16 autocast (as inside a bf16-mixed training step).
    with torch.autocast("cpu", dtype=torch.bfloat16), scoring_model(model) as scorer:
        again, _ = score_units(scorer, UNITS, batch_size=4)
    assert torch.equal(again, scores)
    _assert_untouched(model, before)


def test_fp32_weights_under_autocast_are_scored_in_place_with_autocast_off() -> None:
    model = _with_grads_and_mixed_modes(_model("float32"))
    before = _state(model)
    expected, _ = score_units(copy.deepcopy(model).eval(), UNITS, batch_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = score_units(copy.deepcopy(model).eval(), UNITS, batch_size=4)
        with scoring_model(model) as scorer:
            assert scorer is model and not any(m.training for m in model.modules())
            scores, _ = score_units(scorer, UNITS, batch_size=4)
        # dtype None: the model as it is, under the autocast around it.
        with scoring_model(model, None) as scorer:
            assert scorer is model
            as_is, _ = score_units(scorer, UNITS, batch_size=4)
    _assert_untouched(model, before)
    assert torch.equal(scores, expected)
    assert (autocast - expected).abs().max() > 1e-4 and torch.equal(as_is, autocast)


def test_tied_weights_stay_tied_in_the_copy() -> None:
    model = _model("bfloat16", tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with scoring_model(model) as scorer:
        assert scorer.lm_head.weight is scorer.model.embed_tokens.weight
        assert scorer.lm_head.weight.dtype == torch.float32
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.dtype == torch.bfloat16


def test_an_unknown_dtype_is_one_clear_error() -> None:
    with pytest.raises(SlammingError, match=r"the scoring dtype must be one of .* or null, got 'fp32'"):
        with scoring_model(_model("float32"), "fp32"):
            pass
