"""HubertTokenizerSpec: made into a folder once, reused when equal, refused when it names other parts."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
import torch
from sklearn.cluster import KMeans as SklearnKMeans

from slamming.data.audio.tokenizer_fit import tokenizer_from_kmeans
from slamming.errors import SlammingError
from slamming.speech.hubert import HubertFeatures
from slamming.speech.tokenizers import HubertTokenizer, HubertTokenizerSpec, load_tokenizer
from slamming.speech.tokenizers.spec import KMEANS_URL, MODEL_ID
from tests.speech.test_hubert import random_wavs, tiny_hubert

LAYER, K = 3, 20


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("spec")
    model = tiny_hubert(root / "hubert-tiny")
    features = torch.cat(HubertFeatures(model, layer=LAYER)(random_wavs(6, seed=20))).numpy()
    paths = {"root": root, "model": model}
    for name, seed in (("km_a.bin", 0), ("km_b.bin", 1)):  # two k-means of the same size, other centroids
        paths[name] = root / name
        joblib.dump(SklearnKMeans(n_clusters=K, n_init=1, random_state=seed).fit(features), paths[name])
    return paths


def _spec(parts: dict[str, Path], folder: Path, **changes: object) -> HubertTokenizerSpec:
    settings: dict[str, object] = {
        "model": str(parts["model"]), "kmeans": str(parts["km_a.bin"]), "layer": LAYER,
        "num_units": K, "trust_pickle": True, "folder": str(folder),
    }  # fmt: skip
    return HubertTokenizerSpec(**{**settings, **changes})  # type: ignore[arg-type]


def test_made_once_then_reused_unchanged(parts: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    made = _spec(parts, folder).materialize()
    assert isinstance(made, HubertTokenizer) and made.k == K and made.layer == LAYER
    saved = json.loads((folder / "tokenizer.json").read_text())
    assert saved["identity"] == made.identity
    assert load_tokenizer(folder).identity == made.identity
    # What UnitExtraction loads on a GPU rank: the folder, with the spec's model wherever it now is.
    assert HubertTokenizer.load(folder, model=str(parts["model"])).identity == made.identity
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    again = _spec(parts, folder, trust_pickle=False).materialize()  # the converted tensor file serves
    assert again.identity == made.identity
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == stamps
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temporary folder left beside it


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"layer": 2}, "layer: 3 there, 2 here"),
        ({"kmeans": "km_b.bin"}, "settings_hash"),  # same k, other centroids: the authors' cache bug
        ({"dedup": False}, "dedup: True there, False here"),
    ],
)
def test_a_different_spec_never_reuses_the_folder(
    parts: dict[str, Path], tmp_path: Path, change: dict[str, object], differs: str
) -> None:
    folder = tmp_path / "tok"
    _spec(parts, folder).materialize()
    before = (folder / "tokenizer.json").read_bytes()
    if "kmeans" in change:
        change = {"kmeans": str(parts[str(change["kmeans"])])}
    with pytest.raises(SlammingError) as err:
        _spec(parts, folder, **change).materialize()
    message = str(err.value)
    assert "\n" not in message and f"tokeniser folder {folder} was made from other parts" in message
    assert differs in message and f"delete {folder}" in message
    assert (folder / "tokenizer.json").read_bytes() == before


def test_the_from_kmeans_tool_and_the_spec_make_the_same_folder(
    parts: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "tok"
    made = tokenizer_from_kmeans(
        str(parts["model"]), str(parts["km_a.bin"]), str(folder), layer=LAYER, trust_pickle=True
    )
    assert _spec(parts, folder).materialize().identity == made["identity"]


def test_wrong_sizes_and_folders_are_refused(parts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        SlammingError, match=f"holds {K} centroids, not num_units=500; .*set num_units to {K}"
    ):
        _spec(parts, tmp_path / "tok", num_units=500).materialize()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SlammingError, match="is not empty but holds no tokeniser"):
        _spec(parts, tmp_path / "busy").materialize()
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "tok").exists()


def test_missing_model_and_kmeans_say_where_to_get_them(tmp_path: Path) -> None:
    spec = HubertTokenizerSpec(model=str(tmp_path / "mhubert-base-25hz"), kmeans=str(tmp_path / "km500.bin"))
    with pytest.raises(SlammingError) as err:
        spec.materialize()
    message = str(err.value)
    assert "\n" not in message
    assert f"HuBERT model folder {tmp_path / 'mhubert-base-25hz'} does not exist" in message
    assert f"huggingface-cli download {MODEL_ID}" in message
    assert f"k-means file {tmp_path / 'km500.bin'} does not exist" in message and KMEANS_URL in message


def test_default_folder_names_model_layer_and_k() -> None:
    paper = HubertTokenizerSpec(model=MODEL_ID, kmeans="km.bin")
    assert paper.directory == Path("data/tokenizer/mhubert-base-25hz-l11-k500")
    local = HubertTokenizerSpec(model="/models/mHuBERT-Base-25Hz", kmeans="km.bin", layer=9, num_units=200)
    assert local.directory == Path("data/tokenizer/mhubert-base-25hz-l9-k200")
    other = HubertTokenizerSpec(model=MODEL_ID, kmeans="km.bin", dtype="bfloat16", dedup=False)
    assert other.directory == Path("data/tokenizer/mhubert-base-25hz-l11-k500-bfloat16-nodedup")
    assert (
        HubertTokenizerSpec(model=MODEL_ID, kmeans="km.bin", folder="~/tok").directory
        == Path("~/tok").expanduser()
    )
