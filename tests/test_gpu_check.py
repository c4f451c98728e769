"""``scripts/gpu_check.py --dry-run``: the GPU check's code path end to end on CPU, and its imports.

The GPU machine has its own torch/transformers and no fairseq2, soundfile, torchaudio or Lightning,
so the second test runs the dry run with those modules made unimportable.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.py"
# Setting sys.modules[name] = None makes `import name` fail and importlib.util.find_spec(name) return
# None, which is how a machine without the package looks to transformers' availability checks too.
BLOCKED = ("fairseq2", "soundfile", "torchaudio", "lightning", "lightning_fabric", "pytorch_lightning")
BOOTSTRAP = (
    "import runpy, sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None\n"
    f"sys.argv = [{str(SCRIPT)!r}, '--dry-run']\n"
    f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
)


def run_dry(tmp_path: Path, args: list[str]) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "gpu_check.json").read_text()), proc.stdout


def check_report(report: dict[str, Any]) -> None:
    assert report["dry_run"] is True
    assert report["attention_path"] == "sdpa"
    assert report["errors"] == []
    assert report["tokens_per_s"] > 0
    assert "mfu" in report and report["mfu"] is None and "CPU" in report["mfu_reason"]
    assert report["peak_memory_bytes"] is None  # CUDA-only measurement
    assert report["config"]["context"] == 64 and report["config"]["compile"] is False
    assert report["heavy_modules_loaded"] == []
    (phase,) = report["phases"]
    assert phase["name"] == "eager" and phase["compiled"] is False
    assert 0.9 < phase["non_pad_fraction"] <= 1.0  # a few boundary targets per window are ignored
    assert phase["ids_per_s"] >= phase["tokens_per_s"] > 0
    # Random init over 502 ids: the first loss is close to ln 502 and training moves it.
    assert abs(phase["first_loss"] - math.log(502)) < 0.5
    assert math.isfinite(phase["last_loss"]) and phase["last_loss"] != phase["first_loss"]
    assert report["goals"]["tokens_per_s"]["status"] == "n/a"  # goals are judged on a GPU only


def test_dry_run_writes_sane_json(tmp_path: Path) -> None:
    report, stdout = run_dry(tmp_path, [str(SCRIPT), "--dry-run"])
    check_report(report)
    assert "attention sdpa" in stdout and "gpu_check.json" in stdout


def test_dry_run_without_the_packages_the_gpu_machine_lacks(tmp_path: Path) -> None:
    report, _ = run_dry(tmp_path, ["-c", BOOTSTRAP])
    check_report(report)
    assert report["heavy_modules_after_model_build"] == []


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_varlen_boundaries_match_the_segments() -> None:
    """cu_seqlens (for flash-attn varlen) start a sequence exactly where the document mask does."""
    gpu_check = load_script()
    batches = gpu_check.make_batches(3, batch=4, context=48, device=torch.device("cpu"))
    widths = {len(b["cu_seqlens"]) for b in batches}
    assert len(widths) == 1  # one length for all batches: static shapes under torch.compile
    for b in batches:
        seg = b["segment_ids"]
        # A sequence starts at every row start and wherever the segment id changes inside a row.
        starts = torch.zeros_like(seg, dtype=torch.bool)
        starts[:, 0] = True
        starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
        expected = torch.nonzero(starts.reshape(-1)).reshape(-1)
        cu = b["cu_seqlens"].long()
        n = len(expected)
        assert torch.equal(cu[:n], expected)
        assert torch.all(cu[n:] == seg.numel())  # padding: empty sequences at the end


def test_document_mask_isolates_documents_on_cpu() -> None:
    """With the 4-D mask, a window's later documents do not see the earlier ones (the check that
    gpu_check runs against flash varlen on a GPU)."""
    gpu_check = load_script()
    torch.set_num_threads(1)
    model = gpu_check.build_model(gpu_check.TINY_ARCH, "sdpa", "float32", torch.device("cpu")).eval()
    (batch,) = gpu_check.make_batches(1, batch=2, context=64, device=torch.device("cpu"))
    with torch.no_grad():
        masked = gpu_check.forward_logits(
            model, gpu_check.to_device(batch, torch.device("cpu"), "sdpa"), "sdpa"
        )
        plain = gpu_check.forward_logits(
            model, gpu_check.to_device(batch, torch.device("cpu"), "none"), "none"
        )
    first = batch["segment_ids"] == 0
    assert torch.allclose(masked[first], plain[first], atol=1e-5)  # the first piece: plain causal
    assert not torch.allclose(masked[~first], plain[~first], atol=1e-3)  # later pieces: isolated
