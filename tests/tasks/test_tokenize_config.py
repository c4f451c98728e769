"""`slamming predict --config configs/tokenize.yaml` on the CPU: the paper's tokeniser spec, end to end.

Only the hardware and the paths are overridden: a random 12-layer HuBERT at 25 Hz saved as
`mhubert-base-25hz`, a 500-unit scikit-learn k-means pickled with joblib as the authors ship theirs,
and a folder of FLAC/WAV files at 16, 24 and 44.1 kHz written with soundfile.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from sklearn.cluster import KMeans as SklearnKMeans

from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from slamming.speech.audio import read_audio
from slamming.speech.hubert import HubertFeatures
from slamming.speech.kmeans_import import converted_path
from slamming.speech.tokenizers import dedup

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from audio_bench import speechlike  # noqa: E402  (the benchmark's speech-like test signal)

CONFIG = "configs/tokenize.yaml"
K = 500
FILES = [  # name, rate, channels, seconds
    ("a.flac", 16000, 1, 7.0),
    ("b.wav", 24000, 1, 6.0),
    ("c.flac", 16000, 1, 8.0),
    ("d.wav", 44100, 2, 5.5),
    ("e.flac", 16000, 1, 6.5),
    ("f.wav", 16000, 2, 7.5),
]


def _mhubert_like(directory: Path) -> Path:
    """A random HuBERT with 12 layers and 25 Hz frames (strides 5·4·4·8 = 640), tiny widths."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32, num_hidden_layers=12, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 8), conv_kernel=(10, 8, 4, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )  # fmt: skip
    HubertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("tokenize")
    audio = root / "audio"
    audio.mkdir()
    for i, (name, rate, channels, seconds) in enumerate(FILES):
        sf.write(audio / name, speechlike(seconds, rate, channels, seed=i), rate, subtype="PCM_16")
    (audio / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    model = _mhubert_like(root / "mhubert-base-25hz")
    wavs = [read_audio(audio / name) for name, *_ in FILES]
    features = HubertFeatures(model, layer=11)(wavs)
    assert sum(len(f) for f in features) > 2 * K
    sklearn = SklearnKMeans(n_clusters=K, n_init=1, max_iter=30, random_state=0)
    sklearn.fit(torch.cat(features).numpy())
    kmeans = root / "hubert" / "mhubert_base_25hz_cp_mls_cv_sp_fisher_L11_km500.bin"
    kmeans.parent.mkdir()
    joblib.dump(sklearn, kmeans)
    expected = [dedup(sklearn.predict(f.numpy())) for f in features]
    return {"root": root, "audio": audio, "model": model, "kmeans": kmeans, "expected": expected}


def _predict(parts: dict[str, object], out: Path, *extra: str) -> list[str]:
    root = parts["root"]
    assert isinstance(root, Path)
    return [
        "predict", "--config", CONFIG,
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--data.init_args.num_parallel_calls", "2",
        "--data.init_args.manifest", str(parts["audio"]),
        "--trainer.callbacks.init_args.output", str(out),  # the header's spelling
        f"--model.init_args.tokenizer.model={parts['model']}",
        f"--model.init_args.tokenizer.kmeans={parts['kmeans']}",
        f"--model.init_args.tokenizer.folder={root / 'tokenizer' / 'mhubert-base-25hz-l11-k500'}",
        *extra,
    ]  # fmt: skip


def test_printed_config_names_the_papers_tokeniser(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", CONFIG, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    spec = printed["model"]["init_args"]["tokenizer"]
    assert spec["model"] == "slprl/mhubert-base-25hz" and spec["layer"] == 11 and spec["num_units"] == K
    assert Path(spec["kmeans"]).name == "mhubert_base_25hz_cp_mls_cv_sp_fisher_L11_km500.bin"
    assert spec["folder"] == "data/tokenizer/mhubert-base-25hz-l11-k500" and spec["dedup"] is True
    assert printed["trainer"]["accelerator"] == "gpu" and printed["trainer"]["devices"] == -1
    assert printed["trainer"]["callbacks"][0]["init_args"]["output"] == "data/units/librispeech"


def test_tokenize_config_writes_the_corpus_and_reuses_the_tokeniser_folder(
    parts: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    root = parts["root"]
    assert isinstance(root, Path)
    folder = root / "tokenizer" / "mhubert-base-25hz-l11-k500"
    first, second = root / "units" / "first", root / "units" / "second"
    with caplog.at_level("INFO"):
        main(_predict(parts, first))
    corpus = UnitCorpus(first)
    identity = corpus.tokenizer
    assert identity["kind"] == "hubert" and identity["model"] == "mhubert-base-25hz"
    assert identity["layer"] == 11 and identity["k"] == K and corpus.num_units == K
    assert identity["frame_rate"] == 25 and identity["dedup"] is True
    assert [Path(corpus.source(i)).name for i in range(len(corpus))] == [name for name, *_ in FILES]
    # Units in the k-means' range, and exactly scikit-learn's labels of layer 11, deduplicated.
    expected = parts["expected"]
    assert isinstance(expected, list)
    for i, (units, runs) in enumerate(expected):
        assert corpus.document(i).tolist() == units.tolist()
        assert corpus.durations(i).tolist() == runs.tolist()
        assert 0 <= int(corpus.document(i).min()) and int(corpus.document(i).max()) < K
    assert len(np.unique(np.concatenate([corpus.document(i) for i in range(len(corpus))]))) > 50
    assert list(json.loads((first / "bad_files.json").read_text())) == [str(parts["audio"] / "broken.flac")]
    # The spec was made into the tokeniser folder, and the pickle into a tensor file beside it.
    saved = json.loads((folder / "tokenizer.json").read_text())
    assert saved["identity"] == identity and saved["settings"]["layer"] == 11
    assert converted_path(parts["kmeans"]).is_file()  # type: ignore[arg-type]
    assert any("saved the tokeniser" in r.getMessage() for r in caplog.records)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    caplog.clear()

    # Second run: the folder is checked and reused, not rewritten; nothing is unpickled (the
    # tensor file serves without the trust flag).
    with caplog.at_level("INFO"):
        main(_predict(parts, second, "--model.init_args.tokenizer.trust_pickle=false"))
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == stamps
    assert any("reusing tokeniser" in r.getMessage() for r in caplog.records)
    again = UnitCorpus(second)
    assert again.tokenizer == identity and len(again) == len(corpus)
    assert all(np.array_equal(again.document(i), corpus.document(i)) for i in range(len(corpus)))


def test_missing_weights_are_one_line_saying_where_to_get_them(
    parts: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = _predict(parts, tmp_path / "units")
    args += [f"--model.init_args.tokenizer.kmeans={tmp_path / 'km500.bin'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("slamming: error: k-means file") and str(tmp_path / "km500.bin") in err
    assert "https://dl.fbaipublicfiles.com/textless_nlp/twist/speech_tokenizer/" in err
    assert not (tmp_path / "units").exists()
