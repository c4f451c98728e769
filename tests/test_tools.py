"""`slamming corpus …` and `slamming export …` tools, and corrupt data reaching `slamming fit`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from tests.conftest import fit_config, markov_documents, write_corpus


def test_corpus_summary_and_verify(unit_corpora: dict, capsys: pytest.CaptureFixture) -> None:
    main(["corpus", "summary", str(unit_corpora["train"])])
    out = capsys.readouterr().out
    corpus = UnitCorpus(unit_corpora["train"])
    assert f"{len(corpus):,}" in out and f"{corpus.num_tokens:,}" in out and "kind=test" in out
    main(["corpus", "verify", str(unit_corpora["train"])])
    assert "all checksums match" in capsys.readouterr().out


def test_import_features_jsonl_counts_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "features.jsonl"
    good = {"units": [3, 4, 4], "duration": [1, 2, 1], "file_name": "a.wav"}
    src.write_text(json.dumps(good) + "\nnot json\n" + json.dumps({**good, "units": [3, 999, 1]}) + "\n")
    main(["corpus", "import-features", str(src), str(tmp_path / "c"), "--num-units", "500"])
    out = capsys.readouterr().out
    assert "1" in out and "2" in out  # one document kept, two lines skipped, with reasons
    corpus = UnitCorpus(tmp_path / "c")
    assert len(corpus) == 1 and corpus.document(0).tolist() == [3, 4, 4]


def test_corrupted_corpus_stops_fit_with_its_checksum(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    bad = write_corpus(tmp_path / "bad", markov_documents(50, seed=3))
    shard = bad / "tokens-00000.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    cfg = fit_config(tmp_path, unit_corpora, data={"init_args": {"train": [str(bad)]}})
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "tokens-00000.bin" in err and "checksum" in err and "Traceback" not in err


def test_export_checkpoint_tool(tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture) -> None:
    cfg = fit_config(tmp_path, unit_corpora, trainer={"max_steps": 4})
    main(["fit", "--config", str(cfg)])
    ckpt = tmp_path / "runs" / "t" / "version_0" / "checkpoints" / "last.ckpt"
    main(["export", str(ckpt), str(tmp_path / "exported")])
    assert "exported" in capsys.readouterr().out
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "t" / "version_0" / "hf_model").eval()
    ids = torch.randint(0, 22, (1, 30))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "x")])
    assert "missing.ckpt does not exist" in capsys.readouterr().err


def test_tokenizer_fit_and_from_kmeans_tools(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import joblib
    import numpy as np
    import soundfile as sf
    from sklearn.cluster import KMeans as SkKMeans

    from slamming.speech.hubert import HubertFeatures
    from slamming.speech.tokenizers import load_tokenizer
    from tests.speech.test_hubert import tiny_hubert

    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(audio / f"a{i}.wav", 0.1 * rng.standard_normal(16000 + 4000 * i), 16000)
    (audio / "broken.wav").write_bytes(b"not audio")
    main(
        [
            "tokenizer",
            "fit",
            "--kind",
            "mfcc",
            "--audio",
            str(audio),
            "--k",
            "8",
            "--out",
            str(tmp_path / "mfcc"),
        ]
    )
    out = capsys.readouterr().out
    assert "skipped broken.wav" in out and "fitted on 4 files" in out
    assert load_tokenizer(tmp_path / "mfcc").identity["k"] == 8
    assert load_tokenizer(tmp_path / "mfcc").normalization == "corpus"  # the default
    main(["tokenizer", "fit", "--kind", "mfcc", "--audio", str(audio), "--k", "8", "--out",
          str(tmp_path / "mfcc-utt"), "--normalization", "utterance"])  # fmt: skip
    assert load_tokenizer(tmp_path / "mfcc-utt").normalization == "utterance"

    model = tiny_hubert(tmp_path / "hubert")
    main(["tokenizer", "fit", "--kind", "hubert", "--model", str(model), "--layer", "2", "--audio", str(audio),
          "--k", "6", "--minibatch", "32", "--out", str(tmp_path / "hub")])  # fmt: skip
    fitted = load_tokenizer(tmp_path / "hub")
    assert fitted.identity["kind"] == "hubert" and fitted.identity["k"] == 6 and fitted.identity["layer"] == 2

    feats = torch.cat(HubertFeatures(str(model), layer=2)([torch.randn(16000)])).numpy()
    joblib.dump(SkKMeans(n_clusters=5, n_init=1, random_state=0).fit(feats), tmp_path / "km5.bin")
    args = [
        "tokenizer",
        "from-kmeans",
        "--model",
        str(model),
        "--layer",
        "2",
        "--kmeans",
        str(tmp_path / "km5.bin"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "refused")])
    assert exit_info.value.code == 2 and "trust_pickle" in capsys.readouterr().err
    main([*args, "--trust-pickle", "--out", str(tmp_path / "community")])
    assert load_tokenizer(tmp_path / "community").identity["k"] == 5
