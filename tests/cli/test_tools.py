"""`slamming corpus|tokenizer|export …` tools, their `--overwrite`, and corrupt data reaching `slamming fit`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from tests.conftest import TEST_IDENTITY, fit_config, markov_documents, write_corpus


def _refused(capsys: pytest.CaptureFixture, argv: list[str], target: Path) -> str:
    """Run a command that must refuse ``target``; return its one error line (checked to name it)."""
    capsys.readouterr()  # only this command's output is checked
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("slamming: error: ")
    assert str(target) in lines[0] and "--overwrite" in lines[0], lines[0]
    assert captured.out == ""
    return lines[0]


def _tokens_line(i: int, doc: list[int]) -> str:
    return json.dumps({"file_name": f"doc-{i}.wav", "audio_repr": "".join(f"<Un{u}>" for u in doc)})


def _features_line(i: int, doc: list[int]) -> str:
    # write_corpus gives every unit a duration of one frame.
    return json.dumps({"units": doc, "duration": [1] * len(doc), "file_name": f"doc-{i}.wav"})


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
    main(["corpus", "import-features", str(src), str(tmp_path / "c"), "--num-units", "500", "--skip-bad"])
    out = capsys.readouterr().out
    # One document kept; two lines skipped, each kind with its count and first line.
    assert out == (
        f"{src}: imported 1 documents (3 units) into {tmp_path / 'c'}; skipped 2 of 3 lines\n"
        f"  bad JSON: 1 lines, first at {src}:2\n"
        f"  unit id out of range: 1 lines, first at {src}:3\n"
    )
    corpus = UnitCorpus(tmp_path / "c")
    assert len(corpus) == 1 and corpus.document(0).tolist() == [3, 4, 4]


def test_export_tokens_then_import_tokens_gives_the_same_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    docs = [d.tolist() for d in markov_documents(30, seed=5)]
    corpus = write_corpus(tmp_path / "c", [np.asarray(d) for d in docs])
    dst = tmp_path / "tokens.jsonl"
    main(["corpus", "export-tokens", str(corpus), str(dst)])
    assert capsys.readouterr().out == f"wrote 30 documents to {dst}\n"
    assert dst.read_text().splitlines() == [_tokens_line(i, d) for i, d in enumerate(docs)]

    back = tmp_path / "back"
    main(["corpus", "import-tokens", str(dst), str(back), "--num-units", "20",
          "--tokenizer", json.dumps(TEST_IDENTITY)])  # fmt: skip
    tokens = sum(map(len, docs))
    assert capsys.readouterr().out == (
        f"{dst}: imported 30 documents ({tokens:,} units) into {back}; skipped 0 of 30 lines\n"
    )
    imported = UnitCorpus(back)
    assert len(imported) == 30 and imported.tokenizer == TEST_IDENTITY
    assert [imported.document(i).tolist() for i in range(30)] == docs  # token for token
    assert [imported.source(i) for i in range(30)] == [f"doc-{i}.wav" for i in range(30)]
    assert imported.durations(0) is None  # tokens.jsonl has none

    # features.jsonl needs the durations this corpus lacks: the error names the command that works.
    with pytest.raises(SystemExit) as exit_info:
        main(["corpus", "export-features", str(back), str(tmp_path / "features.jsonl")])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"corpus {back} has no durations" in line and "`slamming corpus export-tokens`" in line
    assert not (tmp_path / "features.jsonl").exists()


def test_imports_replace_a_corpus_only_with_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "tokens.jsonl"
    src.write_text(_tokens_line(0, [1, 2, 3]) + "\n")
    dst = write_corpus(tmp_path / "c", markov_documents(5, seed=2))
    for action in ("import-tokens", "import-features"):
        _refused(capsys, ["corpus", action, str(src), str(dst), "--num-units", "20"], dst)
    assert len(UnitCorpus(dst)) == 5  # untouched
    # --num_units: the Lightning commands' snake_case spelling is accepted too.
    main(["corpus", "import-tokens", str(src), str(dst), "--num_units", "20", "--overwrite"])
    replaced = UnitCorpus(dst)
    assert len(replaced) == 1 and replaced.document(0).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("action", "line"), [("export-features", _features_line), ("export-tokens", _tokens_line)]
)
def test_corpus_exports_replace_a_file_only_with_overwrite(
    action: str, line: Callable[[int, list[int]], str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    docs = [d.tolist() for d in markov_documents(4, seed=7)]
    corpus = write_corpus(tmp_path / "c", [np.asarray(d) for d in docs])
    dst = tmp_path / "out.jsonl"
    dst.write_text("an earlier export\n")
    _refused(capsys, ["corpus", action, str(corpus), str(dst)], dst)
    assert dst.read_text() == "an earlier export\n"
    main(["corpus", action, str(corpus), str(dst), "--overwrite"])
    assert capsys.readouterr().out == f"wrote 4 documents to {dst}\n"
    assert dst.read_text().splitlines() == [line(i, d) for i, d in enumerate(docs)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "out.jsonl"]  # no temporary file left


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
    out = tmp_path / "exported"
    capsys.readouterr()
    main(["export", str(ckpt), str(out)])
    assert capsys.readouterr().out == f"exported {ckpt} to {out}\n"
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "t" / "version_0" / "hf_model").eval()
    ids = torch.randint(0, 22, (1, 30))

    def same_logits() -> bool:
        a = AutoModelForCausalLM.from_pretrained(out).eval()
        with torch.no_grad():
            return torch.equal(a(ids).logits, b(ids).logits)

    assert same_logits()

    # An existing export is kept unless --overwrite; with it, the folder is replaced whole.
    config = (out / "config.json").read_bytes()
    (out / "stale.txt").write_text("left by an earlier export")
    _refused(capsys, ["export", str(ckpt), str(out)], out)
    assert (out / "config.json").read_bytes() == config and (out / "stale.txt").is_file()
    main(["export", str(ckpt), str(out), "--overwrite"])
    assert capsys.readouterr().out == f"exported {ckpt} to {out}\n"
    assert not (out / "stale.txt").exists() and same_logits()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported")]  # no leftovers

    # What is not a model folder is never replaced, even with --overwrite.
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    line = _refused(capsys, ["export", str(ckpt), str(notes), "--overwrite"], notes)
    assert "is not a model folder" in line and notes.read_text() == "keep me"

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

    # A saved tokeniser is refused before any fitting, and replaced with --overwrite.
    saved = tmp_path / "mfcc" / "tokenizer.json"
    before = saved.read_bytes()
    refit = [
        "tokenizer",
        "fit",
        "--kind",
        "mfcc",
        "--audio",
        str(audio),
        "--k",
        "6",
        "--out",
        str(tmp_path / "mfcc"),
    ]
    _refused(capsys, refit, saved)
    assert saved.read_bytes() == before
    main([*refit, "--overwrite"])
    assert load_tokenizer(tmp_path / "mfcc").identity["k"] == 6

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
    saved = tmp_path / "community" / "tokenizer.json"
    before = saved.read_bytes()
    _refused(capsys, [*args, "--trust-pickle", "--out", str(tmp_path / "community")], saved)
    assert saved.read_bytes() == before
    main([*args, "--trust-pickle", "--layer", "1", "--out", str(tmp_path / "community"), "--overwrite"])
    assert load_tokenizer(tmp_path / "community").identity["layer"] == 1
