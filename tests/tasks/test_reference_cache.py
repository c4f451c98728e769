"""The DPO reference cache keeps presence apart from values, refuses NaN/Inf, and is built once.

A NaN used to mean "missing" in the cache, so a genuinely NaN reference log-prob was reported as a
gap. Now a boolean mask records which triples have values (format 2), a non-finite value is refused
in one line when computed, saved or loaded, and format-1 files stay readable. Two real processes
that want the same cache at once compute it once (:func:`load_or_build_reference` holds the cache's
build lock): run as ``python -m tests.tasks.test_reference_cache ROLE CACHE SIGNALS OUT``, this
module is one of them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.errors import SlammingError
from slamming.locks import build_lock
from slamming.tasks.reference import (
    FORMAT,
    ReferenceLogps,
    compute_reference_logps,
    load_or_build_reference,
    load_reference,
    save_reference,
)
from tests.tasks.test_preference import preference_side
from tests.tasks.test_reference import CHOSEN, KEY, REJECTED

TRIPLES = [([2, 3], [4, 5, 6], [7]), ([8], [9, 10], [11, 2, 3]), ([4, 4, 4], [5], [6, 7])]
REPO = Path(__file__).resolve().parents[2]


def _payload(version: int, **extra: object) -> dict:
    return {
        "format": FORMAT,
        "format_version": version,
        "key": {"model": KEY.model, "data": KEY.data, "precision": KEY.precision},
        "chosen": torch.tensor(CHOSEN),
        "rejected": torch.tensor(REJECTED),
        "tokens": 7,
        "seconds": 1.0,
        **extra,
    }


def _model(nan: bool = False) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa")  # fmt: skip
    model = Qwen2ForCausalLM(config)
    if nan:
        with torch.no_grad():
            model.model.norm.weight[0] = math.nan
    return model


def _batches() -> list[dict]:
    def batch(indices: list[int]) -> dict:
        items = [TRIPLES[i] for i in indices]
        return {
            "index": torch.tensor(indices),
            "chosen": preference_side([p for p, _, _ in items], [c for _, c, _ in items]),
            "rejected": preference_side([p for p, _, _ in items], [r for _, _, r in items]),
        }

    return [batch([2, 0]), batch([1])]


def _compute(model: torch.nn.Module) -> ReferenceLogps:
    return compute_reference_logps(model, _batches(), len(TRIPLES), torch.device("cpu"), progress=False)


def test_the_file_stores_a_presence_mask_beside_the_values(tmp_path: Path) -> None:
    path = save_reference(
        tmp_path / "ref.pt", KEY, ReferenceLogps(torch.tensor(CHOSEN), torch.tensor(REJECTED))
    )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format_version"] == 2
    assert payload["present"].dtype == torch.bool and payload["present"].tolist() == [True] * 4
    loaded = load_reference(path, KEY, 4)
    assert loaded.chosen.tolist() == CHOSEN and loaded.rejected.tolist() == REJECTED
    assert loaded.presence().tolist() == [True] * 4


def test_a_nan_reference_log_prob_is_reported_as_non_finite_not_as_missing() -> None:
    with pytest.raises(SlammingError) as info:
        _compute(_model(nan=True))
    assert str(info.value) == (
        "Reference log-probs: non-finite reference log-probs for 3 of 3 triples (first: triple 0, chosen nan, "
        "rejected nan); the reference model (model.init_from) must give finite log-probs: check that its weights "
        "are finite, or run in trainer.precision 32-true"
    )
    # A batch left out is still a gap, and says so.
    with pytest.raises(SlammingError) as info:
        compute_reference_logps(_model(), _batches()[:1], 3, torch.device("cpu"), progress=False)
    assert str(info.value) == (
        "Reference log-probs: 1 of 3 triples got no reference log-prob; the reference batches must cover every "
        "triple of the split"
    )


def test_nan_or_inf_values_are_never_saved(tmp_path: Path) -> None:
    chosen = torch.tensor(CHOSEN)
    chosen[1] = math.inf
    path = tmp_path / "ref.pt"
    with pytest.raises(SlammingError) as info:
        save_reference(path, KEY, ReferenceLogps(chosen, torch.tensor(REJECTED)))
    assert str(info.value) == (
        f"reference cache {path}: non-finite reference log-probs for 1 of 4 triples (first: triple 1, chosen inf, "
        "rejected -0.5); nothing written"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"present": torch.tensor([True, True, False, True])}, "1 of 4 triples got no reference log-prob"),
        (
            {
                "present": torch.ones(4, dtype=torch.bool),
                "rejected": torch.tensor([-3.0, math.nan, -41.75, -7.0]),
            },
            "non-finite reference log-probs for 1 of 4 triples (first: triple 1, chosen -2.25, rejected nan)",
        ),
    ],
    ids=["gap", "nan"],
)
def test_a_cache_with_a_gap_or_a_nan_is_refused(tmp_path: Path, extra: dict, problem: str) -> None:
    path = tmp_path / "ref.pt"
    torch.save(_payload(2, **extra), path)
    with pytest.raises(SlammingError) as info:
        load_reference(path, KEY, 4)
    assert str(info.value) == f"reference cache {path}: {problem}; delete it to recompute"


def test_format_1_caches_stay_readable_and_other_formats_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.pt"
    torch.save(_payload(1), old)  # format 1: no mask, NaN meant missing, only complete files written
    loaded = load_reference(old, KEY, 4)
    assert loaded.chosen.tolist() == CHOSEN and loaded.rejected.tolist() == REJECTED and loaded.tokens == 7
    damaged = tmp_path / "damaged.pt"
    torch.save(_payload(1, chosen=torch.tensor([-1.5, math.nan, -40.0, -0.125])), damaged)
    with pytest.raises(SlammingError) as info:
        load_reference(damaged, KEY, 4)
    assert str(info.value) == (
        f"reference cache {damaged}: non-finite reference log-probs for 1 of 4 triples (first: triple 1, chosen nan, "
        "rejected -0.5); delete it to recompute"
    )
    future = tmp_path / "future.pt"
    torch.save(_payload(3), future)
    with pytest.raises(SlammingError) as info:
        load_reference(future, KEY, 4)
    assert str(info.value) == (
        f"{future} is a reference cache of format 3, which this slamming does not read (it reads 1, 2); "
        "delete it to recompute"
    )
    maskless = tmp_path / "maskless.pt"
    torch.save(_payload(2), maskless)
    with pytest.raises(SlammingError, match=r"is a damaged reference cache \(no value or mask vectors\)"):
        load_reference(maskless, KEY, 4)


def test_load_or_build_computes_once_then_reads(tmp_path: Path) -> None:
    path = tmp_path / "ref.pt"
    stale = tmp_path / f".ref.pt.tmp-{2**22 + 12345}-1-0123abcd"  # left by a builder that died
    stale.write_bytes(b"half a file")
    calls: list[int] = []

    def compute() -> ReferenceLogps:
        calls.append(1)
        return _compute(_model())

    built, fresh = load_or_build_reference(path, KEY, 3, compute)
    read, again = load_or_build_reference(path, KEY, 3, compute)
    assert (fresh, again, len(calls)) == (True, False, 1)
    assert torch.equal(read.chosen, built.chosen) and torch.equal(read.rejected, built.rejected)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ref.pt"]


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def _worker(role: str, cache: Path, signals: Path, out: Path) -> None:
    """One of two processes building the same cache; writes what it got to ``out``."""
    torch.set_num_threads(1)
    model = _model()
    if role == "second":
        # Start once the first is inside its build, and check that it holds the lock there.
        _wait_for(signals / "first-computing")
        try:
            with build_lock(cache, timeout=0):
                raise RuntimeError("the first process does not hold the build lock while computing")
        except SlammingError:
            (signals / "second-saw-lock-held").touch()

    def compute() -> ReferenceLogps:
        if role == "first":
            (signals / "first-computing").touch()
            _wait_for(signals / "second-saw-lock-held")
        return _compute(model)

    logps, built = load_or_build_reference(cache, KEY, len(TRIPLES), compute)
    out.write_text(
        json.dumps({"built": built, "chosen": logps.chosen.tolist(), "rejected": logps.rejected.tolist()})
    )


def test_two_processes_building_one_cache_compute_it_once(tmp_path: Path) -> None:
    cache, signals = tmp_path / "cache" / "ref.pt", tmp_path / "signals"
    signals.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {
        role: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.tasks.test_reference_cache",
                role,
                str(cache),
                str(signals),
                str(tmp_path / f"{role}.json"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for role in ("first", "second")
    }
    for role, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{role}: {output}"
    first, second = (json.loads((tmp_path / f"{r}.json").read_text()) for r in ("first", "second"))
    assert (first["built"], second["built"]) == (True, False)
    assert first["chosen"] == second["chosen"] and first["rejected"] == second["rejected"]
    expected = _compute(_model())
    assert first["chosen"] == pytest.approx(expected.chosen.tolist(), abs=1e-6)
    assert first["rejected"] == pytest.approx(expected.rejected.tolist(), abs=1e-6)
    loaded = load_reference(cache, KEY, len(TRIPLES))
    assert loaded.chosen.tolist() == first["chosen"] and loaded.rejected.tolist() == first["rejected"]
    assert sorted(p.name for p in cache.parent.iterdir() if not p.name.endswith(".lock")) == ["ref.pt"]


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
