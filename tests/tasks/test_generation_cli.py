"""`slamming predict --config configs/tiny/generate.yaml` (issue 5 item 5, acceptance D6).

A real tiny unit LM is exported with a real MFCC tokeniser fitted on espeak-ng speech; the prompts
are espeak-ng recordings. Generation goes through ``main(["predict", ...])`` like a user's command.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from slamming.cli import main
from slamming.data.audio.prompts import PromptDataModule
from slamming.data.text.repetition import auto_bleu
from slamming.errors import SlammingError
from slamming.eval.generate import prompt_ids, prompt_seed
from slamming.eval.genppl import TextPerplexity, WhisperTranscriber
from slamming.models.loading import load_unit_lm
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.speech.audio import read_audio, write_wav
from slamming.speech.tokenizers import MFCCTokenizer
from slamming.speech.tts import EspeakEngine
from slamming.tasks.generate import UnitGeneration
from tests.conftest import TINY_BACKBONE, markov_documents, write_corpus
from tests.eval.test_genppl import build_tiny_text_lm, build_tiny_whisper

K = 16
NEW = 20
SENTENCES = [
    "Once upon a time a little fox lived near the river.",
    "The girl found a red ball under the big green tree.",
    "Every morning the old man walked his dog to the market.",
    "They ate bread and honey and then they went to sleep.",
]


class ToneVocoder:
    """A real (if crude) unit vocoder for tests: one 40 ms tone per unit, pitch set by the unit id."""

    def __init__(self, sample_rate: int = 16000, seconds_per_unit: float = 0.04) -> None:
        self.sample_rate = sample_rate
        self.samples = int(seconds_per_unit * sample_rate)

    def __call__(self, units: np.ndarray) -> tuple[torch.Tensor, int]:
        t = torch.arange(self.samples) / self.sample_rate
        tones = [0.3 * torch.sin(2 * math.pi * (150.0 + 25.0 * int(u)) * t) for u in units]
        return (torch.cat(tones) if tones else torch.zeros(0)), self.sample_rate


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    engine = EspeakEngine(voices=["en-us"])
    wavs = [engine.synthesize(text, "en-us", 170, 50) for text in SENTENCES]
    for i, wav in enumerate(wavs[:3]):
        write_wav(root / "prompts" / f"p{i}.wav", wav, 16000)
    tokenizer = MFCCTokenizer(k=K).fit(wavs, seed=0)
    tokenizer.save(root / "tokenizer")
    torch.manual_seed(0)
    model = UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)
    export_hf(model, root / "hf_model", tokenizer.identity, root / "tokenizer")
    return {
        "root": root,
        "prompts": root / "prompts",
        "model": root / "hf_model",
        "tokenizer": root / "tokenizer",
    }


def _run(setup: dict[str, Path], out: Path, *extra: str, prompts: Path | None = None) -> None:
    main(
        [
            "predict", "--config", "configs/tiny/generate.yaml",
            f"--model.init_args.model={setup['model']}", f"--model.init_args.output={out}",
            f"--model.init_args.max_new_tokens={NEW}", f"--data.init_args.prompts={prompts or setup['prompts']}",
            "--trainer.enable_progress_bar=false", *extra,
        ]
    )  # fmt: skip


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "continuations.jsonl").read_text().splitlines()]


def test_continuations_follow_the_config_and_a_seed_reproduces_them(
    tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _run(setup, tmp_path / "a")
    records = _records(tmp_path / "a")
    assert [r["id"] for r in records] == ["p0.wav", "p1.wav", "p2.wav"]
    assert [r["index"] for r in records] == [0, 1, 2]
    tokenizer = MFCCTokenizer.load(setup["tokenizer"])
    for r in records:
        # The prompt is the first 3 s of the file in the model's units; the continuation obeys the config.
        wav = read_audio(setup["prompts"] / r["id"])[: 3 * 16000]
        assert r["prompt_units"] == tokenizer.encode(wav)[0].tolist() and r["prompt_units"]
        assert r["new_tokens"] == len(r["continuation_units"]) <= NEW
        assert r["eos"] or r["new_tokens"] == NEW
        assert all(0 <= u < K for u in r["continuation_units"])
        assert r["sampling"] == {
            "temperature": 0.8,
            "top_k": 25,
            "max_new_tokens": NEW,
            "repetition_penalty": 1.1,
        }
        assert r["seed"] == prompt_seed(0, r["index"])
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["prompts"] == 3 and metrics["sampling"]["max_new_tokens"] == NEW
    assert metrics["auto_bleu_units"] == pytest.approx(np.mean([r["auto_bleu_units"] for r in records]))
    assert "genppl" not in metrics

    # The same seed gives the same file byte for byte, also in batches of 2 (left padded).
    _run(setup, tmp_path / "b", "--data.init_args.batch_size=2")
    first = (tmp_path / "a" / "continuations.jsonl").read_bytes()
    assert (tmp_path / "b" / "continuations.jsonl").read_bytes() == first
    _run(setup, tmp_path / "c", "--model.init_args.seed=1")
    other = _records(tmp_path / "c")
    assert [r["prompt_units"] for r in other] == [r["prompt_units"] for r in records]
    assert [r["continuation_units"] for r in other] != [r["continuation_units"] for r in records]

    # Nothing is overwritten unless asked.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _run(setup, tmp_path / "c")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "already exists; set model.overwrite: true to replace it, or choose another model.output"
    )
    assert len(err.splitlines()) == 1
    _run(setup, tmp_path / "c", "--model.init_args.overwrite=true")
    assert (tmp_path / "c" / "continuations.jsonl").read_bytes() == first


def test_unit_prompts_are_checked_against_the_model(
    tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [{"id": "x", "units": [1, 2, 3, 4]}, {"id": "y", "units": []}]
    (tmp_path / "units.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    _run(setup, tmp_path / "u", prompts=tmp_path / "units.jsonl")
    records = _records(tmp_path / "u")
    assert [(r["id"], r["prompt_units"]) for r in records] == [("x", [1, 2, 3, 4]), ("y", [])]

    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "z", "units": [3, K]}) + "\n")
    with pytest.raises(SystemExit):
        _run(setup, tmp_path / "bad", prompts=tmp_path / "bad.jsonl")
    assert f"prompt 'z' holds unit {K} but the model reads K={K} units" in capsys.readouterr().err

    # A corpus made by another tokeniser is refused by name.
    corpus = write_corpus(tmp_path / "corpus", markov_documents(3, seed=0, k=K), {"kind": "test", "k": K})
    with pytest.raises(SystemExit):
        _run(setup, tmp_path / "bad2", prompts=corpus)
    err = capsys.readouterr().err
    assert "tokeniser mismatch" in err and "kind: expected 'mfcc', got 'test'" in err
    assert not (tmp_path / "bad2" / "continuations.jsonl").exists()


def test_vocoder_asr_and_text_lm_give_genppl(tmp_path: Path, setup: dict[str, Path]) -> None:
    asr = build_tiny_whisper(tmp_path / "whisper")
    lm = build_tiny_text_lm(tmp_path / "lm")
    extra = {
        "model": {
            "init_args": {
                "vocoder": {"class_path": "tests.tasks.test_generation_cli.ToneVocoder"},
                "asr": str(asr),
                "text_lm": str(lm),
            }
        }
    }
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(extra))
    _run(setup, tmp_path / "g", "--config", str(tmp_path / "extra.yaml"))
    records = _records(tmp_path / "g")
    metrics = json.loads((tmp_path / "g" / "metrics.json").read_text())
    waves = []
    for r in records:
        wav = read_audio(tmp_path / "g" / r["audio"])
        assert wav.numel() == 640 * (len(r["prompt_units"]) + len(r["continuation_units"]))
        waves.append(wav)
    assert [r["transcript"] for r in records] == WhisperTranscriber(asr).transcribe(waves, 16000)
    expected = TextPerplexity(lm).mean_nll([r["transcript"] for r in records])
    assert [r["nll"] for r in records] == pytest.approx(expected)
    assert metrics["genppl"] == pytest.approx(math.exp(np.mean(expected)))
    assert metrics["auto_bleu_words"] == pytest.approx(np.mean([auto_bleu(r["transcript"]) for r in records]))
    assert metrics["scored_transcripts"] == 3 and metrics["empty_transcripts"] == 0


def test_asr_without_a_vocoder_is_refused(
    tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _run(setup, tmp_path / "x", f"--model.init_args.asr={tmp_path}")
    assert "model.asr is set but model.vocoder is not" in capsys.readouterr().err


def test_prompt_sources(tmp_path: Path, setup: dict[str, Path]) -> None:
    """Corpus documents are cut to prompt_seconds by their durations; audio files at read time."""
    identity = {"kind": "test", "k": K, "frame_rate": 25}
    docs = markov_documents(4, seed=1, k=K)
    corpus = write_corpus(tmp_path / "corpus", docs, identity)  # every unit lasts one frame (40 ms)
    data = PromptDataModule(str(corpus), prompt_seconds=0.2, max_prompts=3)
    items = [item for batch in data.predict_dataloader() for item in batch]
    assert data.kind == "units" and data.tokenizer == identity and len(items) == 3
    assert [item["units"].tolist() for item in items] == [d[:5].tolist() for d in docs[:3]]
    audio = PromptDataModule(str(setup["prompts"]), prompt_seconds=0.5, batch_size=2)
    batches = list(audio.predict_dataloader())
    assert [len(b) for b in batches] == [2, 1] and audio.kind == "audio"
    assert all(item["waveform"].numel() == 8000 and item["units"] is None for b in batches for item in b)
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "units": [1]}\n{"id": "a", "units": [2]}\n')
    with pytest.raises(SlammingError, match=r"dup.jsonl:2: id 'a' appears twice"):
        PromptDataModule(str(tmp_path / "dup.jsonl"))
    (tmp_path / "neg.jsonl").write_text('{"id": "a", "units": [1, -3]}\n')
    with pytest.raises(SlammingError, match=r"neg.jsonl:1: units must be a list of integers >= 0"):
        PromptDataModule(str(tmp_path / "neg.jsonl"))


def test_a_bf16_model_samples_from_fp32_log_probs_by_default(tmp_path: Path, setup: dict[str, Path]) -> None:
    """dtype: float32 (the default) runs a bf16 export as its fp32 copy; dtype: null runs it in bf16."""
    loaded = load_unit_lm(setup["model"])
    bf16 = loaded.model.to(torch.bfloat16)
    export_hf(bf16, tmp_path / "bf16", loaded.tokenizer, loaded.tokenizer_dir)
    export_hf(copy.deepcopy(bf16).float(), tmp_path / "fp32", loaded.tokenizer, loaded.tokenizer_dir)
    ids = torch.tensor([prompt_ids([3, 1, 4, 1, 5, 9, 2, 6])])

    @torch.no_grad()
    def logps(model: torch.nn.Module) -> torch.Tensor:
        return torch.log_softmax(model.eval()(ids).logits.float(), dim=-1)

    default = UnitGeneration(str(tmp_path / "bf16"), str(tmp_path / "o1")).model
    as_stored = UnitGeneration(str(tmp_path / "bf16"), str(tmp_path / "o2"), dtype=None).model
    fp32 = load_unit_lm(tmp_path / "fp32").model
    assert {p.dtype for p in default.parameters()} == {torch.float32}
    assert {p.dtype for p in as_stored.parameters()} == {torch.bfloat16}
    assert torch.equal(logps(default), logps(fp32))
    assert (logps(as_stored) - logps(fp32)).abs().max() > 1e-5
    # Through `slamming predict`: the bf16 export continues every prompt as its fp32 copy does.
    _run({**setup, "model": tmp_path / "bf16"}, tmp_path / "a")
    _run({**setup, "model": tmp_path / "fp32"}, tmp_path / "b", "--model.init_args.dtype=null")
    continuations = (tmp_path / "a" / "continuations.jsonl").read_bytes()
    assert continuations == (tmp_path / "b" / "continuations.jsonl").read_bytes()
    assert len(_records(tmp_path / "a")) == 3
