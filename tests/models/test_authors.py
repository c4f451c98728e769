"""The authors' checkpoint format (slprl/slam layout) loads as the plain causal LM (issue 5, D8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.errors import SlammingError
from slamming.models.authors import is_authors_folder, load_authors_folder
from slamming.models.loading import load_unit_lm

UNIT_VOCAB = 22  # 20 units + PAD + <S>
TEXT_VOCAB = 300  # the text LM's own vocabulary, kept in base_config


def _text_config(tied: bool) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=TEXT_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=10000.0, tie_word_embeddings=tied,
    )  # fmt: skip


def _authors_folder(path: Path, tied: bool, seed: int = 0) -> Qwen2ForCausalLM:
    """Write what slamkit's UnitLM.save_pretrained writes; return the plain LM with the same weights."""
    torch.manual_seed(seed)
    text_config = _text_config(tied)
    unit_config = Qwen2Config(**{**text_config.to_dict(), "vocab_size": UNIT_VOCAB})
    plain = Qwen2ForCausalLM(unit_config).eval()
    path.mkdir(parents=True)
    base = text_config.to_dict()
    base["torch_dtype"] = "float32"
    config = {
        "model_type": "speech_language_model",
        "architectures": ["UnitLM"],
        "base_model_name": "Qwen/Qwen2.5-0.5B",
        "base_config": base,
        "vocab_size": UNIT_VOCAB,
        "twist_init": True,
        "tie_word_embeddings": tied,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 1,
    }
    (path / "config.json").write_text(json.dumps(config))
    state = {f"lm.{k}": v.contiguous() for k, v in plain.state_dict().items()}
    if tied:  # safetensors keeps one copy of shared tensors: the head is not written
        del state["lm.lm_head.weight"]
    save_file(state, path / "model.safetensors")
    return plain


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_authors_folder_logits_equal_the_plain_causal_lm(tmp_path: Path, tied: bool) -> None:
    plain = _authors_folder(tmp_path / "slam", tied)
    assert is_authors_folder(tmp_path / "slam")
    model = load_authors_folder(tmp_path / "slam")
    assert model.config.vocab_size == UNIT_VOCAB and model.config.tie_word_embeddings is tied
    ids = torch.randint(0, UNIT_VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    loaded = load_unit_lm(tmp_path / "slam")  # the loader every stage uses
    assert loaded.num_units == UNIT_VOCAB - 2 and loaded.tokenizer is None
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, plain(ids).logits)


def test_weights_that_do_not_fit_are_one_clear_error(tmp_path: Path) -> None:
    _authors_folder(tmp_path / "slam", tied=True)
    config = json.loads((tmp_path / "slam" / "config.json").read_text())
    config["vocab_size"] = 502  # says 500 units, the weights hold 20
    (tmp_path / "slam" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SlammingError, match="do not fit base_config .*size mismatch"):
        load_authors_folder(tmp_path / "slam")
    del config["base_config"]
    (tmp_path / "slam" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SlammingError, match="needs base_config"):
        load_authors_folder(tmp_path / "slam")


def _shard(folder: Path, names: list[str]) -> None:
    """Split the folder's model.safetensors into one shard per name, with the index naming them."""
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    keys = sorted(state)
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: state[k] for k in keys[i :: len(names)]}
        save_file(part, folder / name)  # an absolute name replaces the folder, as a reader joining it would
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_sharded_weights_load_and_hostile_shard_names_are_refused(tmp_path: Path) -> None:
    plain = _authors_folder(tmp_path / "slam", tied=False)
    _shard(tmp_path / "slam", ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    model = load_authors_folder(tmp_path / "slam")
    ids = torch.randint(0, UNIT_VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    outside = tmp_path / "outside.safetensors"
    for hostile in ["../outside.safetensors", str(outside)]:
        _authors_folder(tmp_path / "evil", tied=False)
        _shard(tmp_path / "evil", ["model-00001-of-00002.safetensors", hostile])
        assert outside.is_file()  # the file the index points at exists: only the name is refused
        with pytest.raises(SlammingError, match=r"weight_map names the file .*not a plain file name inside"):
            load_authors_folder(tmp_path / "evil")
        outside.unlink()
        import shutil

        shutil.rmtree(tmp_path / "evil")
    _authors_folder(tmp_path / "broken", tied=False)
    (tmp_path / "broken" / "model.safetensors").unlink()
    (tmp_path / "broken" / "model.safetensors.index.json").write_text('{"weight_map": ["a"]}')
    with pytest.raises(SlammingError, match="has no 'weight_map' object"):
        load_authors_folder(tmp_path / "broken")


def test_unreachable_hub_id_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SlammingError, match="cannot get the model 'slprl/slam'.*huggingface-cli download"):
        load_unit_lm("slprl/slam")


def test_dpo_fine_tunes_an_authors_checkpoint(tmp_path: Path) -> None:
    from slamming.cli import main
    from slamming.models.unit_lm import unit_lm_from_checkpoint
    from tests.tasks.test_dpo import _preference_corpus, dpo_config

    _authors_folder(tmp_path / "slam", tied=True)
    prefs = {
        "train": _preference_corpus(tmp_path / "p-train", 12, 3),
        "val": _preference_corpus(tmp_path / "p-val", 4, 4),
    }
    cfg = dpo_config(tmp_path / "run", tmp_path / "slam", prefs)
    main(["fit", "--config", str(cfg), "--trainer.max_steps=2", "--trainer.val_check_interval=2"])
    model, _ = unit_lm_from_checkpoint(
        tmp_path / "run" / "runs" / "dpo" / "version_0" / "checkpoints" / "last.ckpt"
    )
    assert model.config.vocab_size == UNIT_VOCAB
