"""notebooks/quickstart.ipynb runs end to end and writes its figures (issue 5, acceptance D7).

The notebook is executed by nbclient on an ipykernel started with this very interpreter (a kernelspec
written into tmp_path, so no kernel, profile or runtime folder outside the venv and tmp_path is
used), with its working and figures folders pointed at tmp_path.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
FIGURES = ("units.png", "unit_histogram.png", "loss_curves.png", "benchmark_accuracy.png")
BENCHMARKS = {"lexical", "syntactic", "topic_cloze", "spoken_cloze"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _kernel(tmp_path: Path) -> KernelManager:
    """A kernel manager for an ipykernel on ``sys.executable``, from a kernelspec of our own."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "slamming-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "slamming test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="slamming-test", kernel_spec_manager=specs)


def _check_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG file"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert 200 <= height <= 3000 and 400 <= width <= 3000, (path.name, pixels.shape)
    assert pixels.std() > 0.05, f"{path.name} is blank"


def test_quickstart_notebook_runs_and_writes_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    work, figures = tmp_path / "work", tmp_path / "figures"
    monkeypatch.setenv("SLAMMING_NOTEBOOK_DIR", str(work))
    monkeypatch.setenv("SLAMMING_FIGURES_DIR", str(figures))
    # Keep IPython's profile and Jupyter's connection files out of the user's home.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter" / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs (its figures live in docs/figures)"
    )
    client = NotebookClient(
        notebook,
        km=_kernel(tmp_path),
        timeout=300,  # per cell; the whole notebook takes about 30 s on 2 cores
        # Started in notebooks/, as Jupyter would: the notebook finds the repository root itself.
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for name in FIGURES:
        _check_png(figures / name)

    summary = json.loads((figures / "benchmark_accuracy.json").read_text())
    assert set(summary["accuracy"]) == {"pretrained", "dpo"}
    for model, scores in summary["accuracy"].items():
        assert set(scores) == BENCHMARKS, model
        assert all(0.0 <= value <= 1.0 for value in scores.values()), (model, scores)
    # Lexical and syntactic pairs are spoken in both voices.
    assert summary["pairs"] == {"lexical": 32, "syntactic": 32, "topic_cloze": 16, "spoken_cloze": 16}
    assert set(summary["held_out_preference_accuracy"]) == {"before_dpo", "after_dpo"}
    # The numbers come from the two models' own eval-results.json, inside the working folder.
    for model, run in summary["models"].items():
        results = json.loads((work / run / "hf_model" / "eval-results.json").read_text())["benchmarks"]
        assert {name: results[name]["accuracy"] for name in BENCHMARKS} == summary["accuracy"][model]
    assert (work / summary["models"]["dpo"]).parent.name == "dpo"


def test_readme_shows_a_committed_notebook_figure() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\((docs/figures/[^)\s]+\.png)\)", readme)
    assert links, "the README shows no figure from docs/figures"
    for link in links:
        assert Path(link).name in FIGURES, link
        _check_png(ROOT / link)
