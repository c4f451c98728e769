"""Strict imports of the authors' files and the unknown tokeniser identity (issue 12, item 6).

``slamming corpus import-*`` used to exit 0 after dropping lines (a too small ``--num-units`` drops
every line with a larger id) and to record the mHuBERT-L11 identity whether or not it was true.
Now a malformed line refuses the import unless ``--skip-bad`` is given, and an import records the
tokeniser ``--tokenizer`` names or ``{"kind": "unknown", "k": K}``, which training and evaluation
refuse to mix with a known identity.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import slamming.cli.lightning  # noqa: F401  (imported at collection: see tests/cli/conftest.py)
from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.slamkit import OUT_OF_RANGE, import_features_jsonl, import_tokens_jsonl
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.errors import CorpusError, TokenizerMismatchError
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers import MFCCTokenizer, check_identity, recorded_identity, unknown_identity
from slamming.tasks.evaluate import PairEvaluation
from tests.cli.user_mistake_helpers import refused
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE, fit_config, markov_documents, write_corpus

K = TEST_IDENTITY["k"]
GOOD = [[3, 4, 4, 7], [9, 1], [0, 2, 5]]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _line(kind: str, i: int, units: list[int]) -> str:
    if kind == "features":
        return json.dumps({"units": units, "duration": [2] * len(units), "file_name": f"{i}.wav"})
    return json.dumps({"file_name": f"{i}.wav", "audio_repr": "".join(f"<Un{u}>" for u in units)})


def _source(tmp_path: Path, kind: str, docs: list[list[int]]) -> Path:
    src = tmp_path / f"{kind}.jsonl"
    src.write_text("".join(_line(kind, i, d) + "\n" for i, d in enumerate(docs)))
    return src


def _tokenizer_folder(path: Path, k: int = K, seed: int = 0) -> Path:
    """A saved MFCC tokeniser with ``k`` random centroids (its identity hashes them)."""
    dim = MFCCTokenizer(k=k, normalization="utterance").features.dim
    centroids = torch.randn(k, dim, generator=torch.Generator().manual_seed(seed))
    MFCCTokenizer(k=k, normalization="utterance", kmeans=KMeans(centroids)).save(path)
    return path


# -- dropped lines ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["features", "tokens"])
def test_a_too_small_num_units_refuses_the_import_in_one_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = _source(tmp_path, kind, [*GOOD, [1, 12, 3]])  # unit 12 needs K >= 13
    dst = tmp_path / "c"
    before = _tree(tmp_path)
    line = refused(capsys, ["corpus", f"import-{kind}", str(src), str(dst), "--num-units", "10"], alone=True)
    assert line == (
        f"slamming: error: {src}: 1 of 4 lines are not valid {kind}.jsonl lines "
        f"({OUT_OF_RANGE}: 1, first at {src}:4) (unit ids out of range: is --num-units the K of the "
        f"tokeniser that made the file?); nothing was written to {dst}: fix the file, or pass "
        "--skip-bad (skip_bad=True) to import the 3 valid lines and skip these"
    )
    assert _tree(tmp_path) == before  # no corpus, no temporary folder


@pytest.mark.parametrize("kind", ["features", "tokens"])
def test_skip_bad_imports_the_valid_lines_and_reports_the_counts(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = _source(tmp_path, kind, [*GOOD, [1, 12, 3]])
    src.write_text(src.read_text() + "not json\n")
    dst = tmp_path / "c"
    capsys.readouterr()
    main(["corpus", f"import-{kind}", str(src), str(dst), "--num-units", "10", "--skip-bad"])
    assert capsys.readouterr().out == (
        f"{src}: imported 3 documents (9 units) into {dst}; skipped 2 of 5 lines\n"
        f"  bad JSON: 1 lines, first at {src}:5\n"
        f"  {OUT_OF_RANGE}: 1 lines, first at {src}:4\n"
    )
    corpus = UnitCorpus(dst)
    assert [corpus.document(i).tolist() for i in range(len(corpus))] == GOOD
    assert corpus.max_unit_id == 9 and corpus.num_units == 10
    assert _tree(tmp_path) == sorted([src.name, "c", *(f"c/{p.name}" for p in dst.iterdir())])


def test_a_clean_file_imports_without_skip_bad(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _source(tmp_path, "features", GOOD)
    main(["corpus", "import-features", str(src), str(tmp_path / "c"), "--num-units", "10"])
    assert (
        capsys.readouterr().out
        == f"{src}: imported 3 documents (9 units) into {tmp_path / 'c'}; skipped 0 of 3 lines\n"
    )
    assert len(UnitCorpus(tmp_path / "c")) == 3


def test_the_python_importers_refuse_bad_lines_with_skip_bad_false(tmp_path: Path) -> None:
    src = _source(tmp_path, "tokens", [*GOOD, [11]])
    before = _tree(tmp_path)
    for importer in (import_tokens_jsonl, import_features_jsonl):
        with pytest.raises(CorpusError, match=r"1 of 4 lines are not valid|no valid features.jsonl line"):
            importer(src, tmp_path / "c", 10, unknown_identity(10), skip_bad=False)
        assert _tree(tmp_path) == before
    # skip_bad=True (the Python default, as before) keeps the counting behaviour.
    report = import_tokens_jsonl(src, tmp_path / "c", 10, unknown_identity(10))
    assert (report.documents, report.num_skipped, report.skipped) == (3, 1, {OUT_OF_RANGE: 1})


# -- the identity an import records ----------------------------------------------------------------------
def test_an_import_records_an_unknown_tokeniser_unless_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = _source(tmp_path, "features", GOOD)
    main(["corpus", "import-features", str(src), str(tmp_path / "plain"), "--num-units", str(K)])
    assert UnitCorpus(tmp_path / "plain").tokenizer == {"kind": "unknown", "k": K} == unknown_identity(K)
    capsys.readouterr()
    main(["corpus", "summary", str(tmp_path / "plain")])
    assert "\n  tokenizer  kind=unknown k=20\n" in capsys.readouterr().out

    folder = _tokenizer_folder(tmp_path / "tok")
    main(["corpus", "import-features", str(src), str(tmp_path / "named"), "--num-units", str(K),
          "--tokenizer", str(folder)])  # fmt: skip
    named = UnitCorpus(tmp_path / "named").tokenizer
    assert (
        named == recorded_identity(folder) and named["kind"] == "mfcc" and len(named["settings_hash"]) == 16
    )

    main(["corpus", "import-features", str(src), str(tmp_path / "json"), "--num-units", str(K),
          "--tokenizer", json.dumps(TEST_IDENTITY)])  # fmt: skip
    assert UnitCorpus(tmp_path / "json").tokenizer == TEST_IDENTITY


def test_a_named_tokeniser_that_does_not_fit_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = _source(tmp_path, "tokens", GOOD)
    folder = _tokenizer_folder(tmp_path / "tok", k=12)
    before = _tree(tmp_path)
    line = refused(capsys, ["corpus", "import-tokens", str(src), str(tmp_path / "c"), "--num-units", str(K),
                            "--tokenizer", str(folder)], alone=True)  # fmt: skip
    assert line == (
        f"slamming: error: --tokenizer {folder} has k=12 but --num-units is {K}; name the tokeniser that "
        f"made the units of {src}, or give its K"
    )
    line = refused(capsys, ["corpus", "import-tokens", str(src), str(tmp_path / "c"), "--num-units", str(K),
                            "--tokenizer", "[1, 2]"], alone=True)  # fmt: skip
    assert "--tokenizer '[1, 2]' is JSON list, not an identity object" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = refused(capsys, ["corpus", "import-tokens", str(src), str(tmp_path / "c"), "--num-units", str(K),
                            "--tokenizer", str(empty)], alone=True)  # fmt: skip
    assert f"no tokeniser at {empty}" in line
    empty.rmdir()
    assert _tree(tmp_path) == before


def test_check_identity_never_mixes_unknown_with_known() -> None:
    unknown = unknown_identity(K)
    check_identity(unknown, {"kind": "unknown", "k": K}, "two unknowns")  # nothing tells them apart
    with pytest.raises(TokenizerMismatchError) as err:
        check_identity(TEST_IDENTITY, unknown, "corpus b (vs a)")
    assert str(err.value).startswith(
        "corpus b (vs a): tokeniser unknown on one side (got units of an unknown tokeniser, e.g. a corpus "
        "imported without --tokenizer; the other side's is kind 'test', k=20)"
    )
    with pytest.raises(
        TokenizerMismatchError, match=r"^model: tokeniser unknown on one side \(expected units"
    ):
        check_identity(unknown, TEST_IDENTITY, "model")
    with pytest.raises(TokenizerMismatchError, match=r"k: expected 20, got 10"):
        check_identity(unknown, unknown_identity(10), "two unknowns of other K")


def _unknown_corpus(path: Path, seed: int, capsys: pytest.CaptureFixture) -> Path:
    """A corpus imported from the authors' tokens.jsonl without --tokenizer."""
    src = _source(path.parent, f"tokens-{seed}", [d.tolist() for d in markov_documents(40, seed=seed)])
    main(["corpus", "import-tokens", str(src), str(path), "--num-units", str(K)])
    capsys.readouterr()
    return path


def test_training_refuses_to_mix_an_unknown_corpus_with_a_known_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    known = write_corpus(tmp_path / "known", markov_documents(40, seed=0))
    unknown = _unknown_corpus(tmp_path / "unknown", 1, capsys)
    config = fit_config(tmp_path, {"train": known, "val": unknown})
    line = refused(capsys, ["fit", "--config", str(config)])
    assert line.startswith(f"slamming: error: corpus {unknown} (vs {known}): tokeniser unknown on one side")
    assert not list(tmp_path.rglob("*.ckpt"))
    # Unknown with unknown (the same K) is one tokeniser as far as anything can tell.
    other = _unknown_corpus(tmp_path / "other", 2, capsys)
    data = UnitDataModule(train=[str(unknown), str(other)], context_length=16)
    assert data.tokenizer == unknown_identity(K) and data.num_units == K


def test_evaluation_refuses_a_model_of_unknown_units_with_a_known_tokeniser(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K)
    folder = export_hf(model, tmp_path / "model", unknown_identity(K))
    tokenizer = _tokenizer_folder(tmp_path / "tok")
    with pytest.raises(
        TokenizerMismatchError, match="tokeniser unknown on one side .expected units of an unknown"
    ):
        PairEvaluation(str(folder), tokenizer=str(tokenizer), results_dir=str(tmp_path / "results"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "tok"]  # no results written
