"""Exported folders carry the recipe: the paper's sampling in generation_config.json and a model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from slamming.cli import main
from slamming.models.card import CARD_MARK
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.vocab import EOS_ID
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE, fit_config

K = TEST_IDENTITY["k"]
PAPER = {"temperature": 0.8, "top_k": 25, "max_new_tokens": 150, "repetition_penalty": 1.1}


def _generate(model: torch.nn.Module, ids: torch.Tensor, seed: int, **kwargs: object) -> list[int]:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)[0].tolist()


def test_generation_config_is_the_papers_and_generate_uses_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)
    with torch.no_grad():  # logits of a few units of spread (not ~0.1, near uniform): settings matter
        model.lm_head.weight.mul_(20.0)
    export_hf(model, tmp_path / "hf", TEST_IDENTITY)
    stored = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert {k: stored[k] for k in (*PAPER, "do_sample", "bos_token_id", "eos_token_id", "pad_token_id")} == {
        **PAPER,
        "do_sample": True,
        "bos_token_id": 1,
        "eos_token_id": 1,
        "pad_token_id": 0,
    }
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([[1, 5, 9, 2, 14, 7]])
    samples = []
    for seed in range(4):
        sampled = _generate(model, ids, seed)
        assert sampled == _generate(model, ids, seed, do_sample=True, **PAPER), seed
        new = sampled[ids.shape[1] :]
        if EOS_ID in new:  # it stops at the first <S>
            assert new.index(EOS_ID) == len(new) - 1 and len(new) <= 150
        else:
            assert len(new) == 150
        assert 0 not in new  # PAD is never sampled
        samples.append(sampled)
    assert len(set(map(tuple, samples))) == 4  # sampled: each seed its own continuation
    assert _generate(model, ids, 0, do_sample=False) not in samples  # not greedy
    # Not transformers' default sampling either (temperature 1, no top-k here, no penalty).
    default = {"temperature": 1.0, "top_k": 50, "repetition_penalty": 1.0}
    assert [_generate(model, ids, seed, **default) for seed in range(4)] != samples
    # With <S> held back, the stored max_new_tokens alone ends the continuation: exactly 150 ids.
    assert len(_generate(model, ids, 0, min_new_tokens=150)) == ids.shape[1] + 150


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, unit_corpora: dict[str, Path]) -> Path:
    """A real tiny pretraining fit (12 steps under a 1 GPU-hour budget); its run folder."""
    root = tmp_path_factory.mktemp("fit")
    main(["fit", "--config", str(fit_config(root, unit_corpora))])
    return root / "runs" / "t" / "version_0"


def _expected_training_lines(folder: Path, unit_corpora: dict[str, Path]) -> list[str]:
    budget = json.loads((folder / "config.json").read_text())["slamming_budget"]
    used = budget["gpu_hours"]
    assert budget["max_gpu_hours"] == 1.0 and 0 < used < 1.0
    return [
        "- Objective: `NextUnitPretraining`",
        "- Start: random init, architecture from a config",
        f"- Training data: `{unit_corpora['train']}`",
        f"- Validation data: `{unit_corpora['val']}`",
        "- Steps: 12",
        "- Precision: 32-true on 1 device(s)",
        f"- Compute budget used: {used:.4g} of 1 GPU-hours ({100 * used:.1f} %)",
        f"- Tokens: {budget['tokens']} target tokens trained on in this stage",
    ]


def test_a_fits_export_and_slamming_export_carry_card_and_sampling(
    tmp_path: Path, fitted: Path, unit_corpora: dict[str, Path]
) -> None:
    hf = fitted / "hf_model"
    card = (hf / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and CARD_MARK in card
    assert "Units: test, k = 20." in card
    for row in (
        "| kind | test |",
        "| units (k) | 20 |",
        "| repeats collapsed (dedup) | True |",
        "| settings hash | t0 |",
    ):
        assert row in card, row
    for line in _expected_training_lines(hf, unit_corpora):
        assert f"\n{line}\n" in card, line
    budget = json.loads((hf / "config.json").read_text())["slamming_budget"]
    assert budget["tokens"] > 12 * 4 * 32  # 12 steps of 4 windows, most of their 64 targets count
    assert "## Benchmarks\n\nNot yet evaluated." in card
    assert f'AutoModelForCausalLM.from_pretrained("{hf}")' in card
    assert json.loads((hf / "generation_config.json").read_text())["top_k"] == 25

    # `slamming export` of the final checkpoint: the same facts, read back from the checkpoint.
    out = tmp_path / "exported"
    main(["export", str(fitted / "checkpoints" / "last.ckpt"), str(out)])
    exported = (out / "README.md").read_text()
    for line in _expected_training_lines(out, unit_corpora):
        assert f"\n{line}\n" in exported, line
    assert f'from_pretrained("{out}")' in exported and ".tmp-" not in exported
    assert json.loads((out / "generation_config.json").read_text()) == json.loads(
        (hf / "generation_config.json").read_text()
    )


def test_a_readme_slamming_did_not_write_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# my own notes\n")
    torch.manual_seed(0)
    model = UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)
    with caplog.at_level(logging.WARNING):
        export_hf(model, folder, TEST_IDENTITY)
    assert (folder / "README.md").read_text() == "# my own notes\n"
    assert any(
        "README.md was not written by slamming: kept as it is" in r.getMessage() for r in caplog.records
    )
    assert (folder / "generation_config.json").is_file() and (folder / "config.json").is_file()
    # Our own card is rewritten by the next export, with no temporary file left behind.
    export_hf(model, tmp_path / "ours", TEST_IDENTITY, training={"steps": 3})
    export_hf(model, tmp_path / "ours", TEST_IDENTITY, training={"steps": 4})
    assert "\n- Steps: 4\n" in (tmp_path / "ours" / "README.md").read_text()
    assert not [p.name for p in (tmp_path / "ours").iterdir() if p.name.startswith(".")]
