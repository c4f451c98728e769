"""`slamming predict --config configs/tiny/tokenize.yaml`: audio folder → unit corpus (issue 3, B1/B4/B5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch.callbacks import Callback

from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from slamming.speech.tokenizers import MFCCTokenizer


class SlowPredict(Callback):
    """Slows prediction down so that the test can kill it half way (a real SIGKILL)."""

    def on_predict_batch_end(self, *args: object, **kwargs: object) -> None:
        time.sleep(0.4)


def _tone(seconds: float, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave = wave + 0.01 * np.random.default_rng(int(freq)).standard_normal(len(t))
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    for i, (rate, channels, ext) in enumerate(
        [(16000, 1, "wav"), (44100, 2, "wav"), (8000, 1, "flac"), (22050, 2, "flac"), (16000, 1, "flac")] * 2
    ):
        sf.write(root / f"clip{i:02d}.{ext}", _tone(1.0 + 0.3 * i, rate, 150 + 40 * i, channels), rate)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    (root / "empty.flac").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, audio_dir: Path) -> Path:
    from slamming.speech.audio import read_audio

    wavs = [read_audio(p) for p in sorted(audio_dir.glob("clip*"))]
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    MFCCTokenizer(k=16, segment=False).fit(wavs, seed=0).save(out)
    return out


def _args(audio: Path, tok: Path, out: Path, *extra: str) -> list[str]:
    return [
        "predict", "--config", "configs/tiny/tokenize.yaml",
        f"--data.init_args.manifest={audio}", f"--model.init_args.tokenizer={tok}",
        f"--trainer.callbacks.init_args.output={out}", "--trainer.enable_progress_bar=false", *extra,
    ]  # fmt: skip


def test_folder_to_corpus_with_bad_files_listed(
    tmp_path: Path, audio_dir: Path, tokenizer_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "units"
    with caplog.at_level("INFO"):
        main(_args(audio_dir, tokenizer_dir, out))
    corpus = UnitCorpus(out)
    sources = [Path(corpus.source(i)).name for i in range(len(corpus))]
    assert sources == sorted(p.name for p in audio_dir.glob("clip*"))  # every good file, manifest order
    tok = MFCCTokenizer.load(tokenizer_dir)
    assert corpus.tokenizer == tok.identity
    from slamming.speech.audio import read_audio

    units, durations = tok.encode(read_audio(audio_dir / "clip01.wav"))  # 44.1 kHz stereo
    assert (
        corpus.document(1).tolist() == units.tolist() and corpus.durations(1).tolist() == durations.tolist()
    )
    bad = json.loads((out / "bad_files.json").read_text())
    assert {Path(p).name for p in bad} == {"corrupt.wav", "empty.flac"}
    assert all(reason for reason in bad.values())
    assert any("skipped 2 bad file(s)" in r.getMessage() for r in caplog.records)
    with pytest.raises(SystemExit):  # never overwrites a corpus unasked
        main(_args(audio_dir, tokenizer_dir, out))


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test written for Linux")
def test_two_process_ddp_extraction_equals_single_process(
    tmp_path: Path, audio_dir: Path, tokenizer_dir: Path
) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    main(_args(audio_dir, tokenizer_dir, single))
    cmd = [sys.executable, "-m", "slamming.cli", *_args(audio_dir, tokenizer_dir, ddp,
           "--trainer.devices=2", "--trainer.strategy=ddp")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = UnitCorpus(single), UnitCorpus(ddp)
    assert len(a) == len(b)
    for i in range(len(a)):
        assert a.document(i).tolist() == b.document(i).tolist() and a.source(i) == b.source(i)


def test_killed_extraction_resumes_to_the_same_corpus(
    tmp_path: Path, audio_dir: Path, tokenizer_dir: Path
) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    main(_args(audio_dir, tokenizer_dir, full))
    slow = [
        "--trainer.callbacks.init_args.part_size=1", "--data.init_args.batch_size=1",
        "--trainer.callbacks+=tests.tasks.test_extract.SlowPredict",
    ]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "slamming.cli", *_args(audio_dir, tokenizer_dir, resumed, *slow)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    parts = resumed.with_name(resumed.name + ".parts")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len([p for p in parts.glob("rank*") if p.is_dir()]) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len([p for p in parts.glob("rank*") if p.is_dir()])
    assert 3 <= done_before < 10 and not (resumed / "meta.json").exists()
    main(_args(audio_dir, tokenizer_dir, resumed))
    a, b = UnitCorpus(full), UnitCorpus(resumed)
    assert [a.source(i) for i in range(len(a))] == [b.source(i) for i in range(len(b))]
    assert all(np.array_equal(a.document(i), b.document(i)) for i in range(len(a)))
    assert not parts.exists()


@pytest.fixture(scope="module")
def hubert_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, audio_dir: Path) -> Path:
    """A randomly initialised HuBERT saved to a local folder, and a k-means fitted by slamming on its features."""
    from slamming.speech.audio import read_audio
    from slamming.speech.hubert import HubertFeatures
    from slamming.speech.kmeans import KMeans
    from slamming.speech.tokenizers import HubertTokenizer
    from tests.speech.test_hubert import tiny_hubert

    root = tmp_path_factory.mktemp("hubert")
    model = tiny_hubert(root / "hubert-tiny")
    features = HubertFeatures(str(model), layer=3)([read_audio(p) for p in sorted(audio_dir.glob("clip*"))])
    kmeans = KMeans.fit(torch.cat(features), k=24, seed=0)
    HubertTokenizer(str(model), layer=3, kmeans=kmeans).save(root / "tokenizer")
    return root / "tokenizer"


def test_hubert_folder_to_corpus_and_batch_invariance(
    tmp_path: Path, audio_dir: Path, hubert_tokenizer_dir: Path
) -> None:
    """B1 with the HuBERT tokeniser; B2: units identical for batch size 1 and 16."""
    one, many = tmp_path / "one", tmp_path / "many"
    main(_args(audio_dir, hubert_tokenizer_dir, one, "--data.init_args.batch_size=1"))
    main(_args(audio_dir, hubert_tokenizer_dir, many, "--data.init_args.batch_size=16"))
    a, b = UnitCorpus(one), UnitCorpus(many)
    assert a.tokenizer["kind"] == "hubert" and a.tokenizer["layer"] == 3 and a.num_units == 24
    assert [Path(a.source(i)).name for i in range(len(a))] == sorted(p.name for p in audio_dir.glob("clip*"))
    assert {Path(p).name for p in json.loads((one / "bad_files.json").read_text())} == {
        "corrupt.wav",
        "empty.flac",
    }
    for i in range(len(a)):
        assert np.array_equal(a.document(i), b.document(i)), a.source(i)
        assert np.array_equal(a.durations(i), b.durations(i))


def test_audio_a_phone_tokeniser_hears_nothing_in_is_listed_not_written(
    tmp_path: Path, audio_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A phone recogniser that labels every frame blank (as one does in silence) gives no unit:
    such items are counted with the bad files instead of breaking the corpus writer."""
    from slamming.speech.tokenizers.phone import PhoneTokenizer

    tokenizer = PhoneTokenizer(["a", "b", "c"], [0.0] * 39, [10.0] * 39)
    with torch.no_grad():
        tokenizer.model.out.weight.zero_()
        tokenizer.model.out.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))  # blank wins everywhere
    tok = tokenizer.save(tmp_path / "tok")
    assert len(tokenizer.encode(torch.randn(16000))[0]) == 0
    with pytest.raises(SystemExit) as exit_:
        main(_args(audio_dir, tok, tmp_path / "units"))
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Tokenising")]
    assert len(err) == 1 and "every input was skipped or bad" in err[0], err
    assert not (tmp_path / "units").exists()
