"""ComputeBudget's ledger: the time since the last checkpoint survives a crash and a real kill -9 (issue 12, item 4).

The arithmetic tests run on a :class:`FakeClock` (steps of 1/16 s, exact in floats) and crash a fit
with an exception at a chosen step, which ends it as a kill would for the budget: no hook after the
crash runs, no checkpoint is written. The acceptance test kills a real ``slamming fit`` with SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import slamming.callbacks.budget
from slamming.callbacks.budget import ComputeBudget
from slamming.callbacks.budget_ledger import LEDGER_NAME
from slamming.cli import main
from slamming.errors import SlammingError
from tests.conftest import fit_config

from .ddp_budget_script import FakeClock, TinyRegression, make_loader
from .test_budget import make_trainer, steps_to_spend

HOUR = 3600.0
STEP_S = 1 / 16  # seconds per training step on the fake clock
LEDGER_S = 1.0  # ledger interval of these tests, on the fake clock
EVERY = 25  # steps between checkpoints
CRASH = 45  # the step at whose end the first fit dies


class Crash(RuntimeError):
    """The simulated death of the process."""


class CrashAt(Callback):
    """Raises :class:`Crash` at the end of the batch that reaches ``step`` (after the budget's hook)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return FakeClock.install(monkeypatch, slamming.callbacks.budget)


def _fit(
    folder: Path,
    budget: ComputeBudget,
    extra: list[Callback] | None = None,
    ckpt_path: str | None = None,
    max_steps: int = 100_000,
) -> pl.Trainer:
    checkpoint = ModelCheckpoint(
        dirpath=folder, every_n_train_steps=EVERY, save_top_k=-1, filename="{step}", save_last=True
    )
    trainer = make_trainer(
        folder, [budget, *(extra or []), checkpoint], limit_val_batches=0, max_steps=max_steps
    )
    trainer.fit(TinyRegression(step_sleep=STEP_S), make_loader(4000), ckpt_path=ckpt_path)
    return trainer


def _crashed_run(folder: Path, crash: int = CRASH) -> ComputeBudget:
    """A fit that checkpoints every 25 steps and dies at the end of step ``crash``; its ledger is
    written at the start and every 16 steps (1 s)."""
    budget = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    with pytest.raises(Crash):
        _fit(folder, budget, [CrashAt(crash)])
    return budget


def seconds(gpu_hours: float) -> float:
    """GPU-hours as seconds, rounded to 1e-9 s: the fake clock's dyadic seconds are exact, hours are not."""
    return round(gpu_hours * HOUR, 9)


def _ledger(folder: Path) -> dict[str, Any]:
    return json.loads((folder / LEDGER_NAME).read_text())


def test_resume_counts_the_time_after_the_last_checkpoint(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    first = _crashed_run(tmp_path / "a")
    # Written at the start (0 s), then at the first step 1 s later: steps 16 (1.0 s) and 32 (2.0 s).
    # The crash at step 45 (2.8125 s) comes before step 48's write; the checkpoint is at step 25.
    ledger = _ledger(tmp_path / "a")
    assert seconds(ledger["gpu_hours"]) == 32 * STEP_S == 2.0
    assert ledger["global_step"] == 32 and ledger["world_size"] == 1 and ledger["checkpoint_step"] == 25
    assert ledger["tokens"] == sum(i % 5 + 1 for i in range(4 * 32))
    checkpoint = tmp_path / "a" / "step=25.ckpt"
    saved = ComputeBudget.read_consumed(checkpoint)
    assert seconds(saved["gpu_hours"]) == 25 * STEP_S
    assert saved["lineage"] == ledger["lineage"] == first.ledger.lineage and len(first.ledger.lineage) == 1
    assert not (tmp_path / "a" / "step=50.ckpt").exists()

    # Resumed under a total of 4.01 s: it starts from the ledger's 2.0 s, not the checkpoint's 1.5625 s.
    total_s = 4.01
    resumed = ComputeBudget(max_gpu_hours=total_s / HOUR, ledger_every_s=LEDGER_S)
    trainer = _fit(tmp_path / "b", resumed, ckpt_path=str(checkpoint))
    assert seconds(resumed.ledger_lost_gpu_hours) == 2.0 - 25 * STEP_S == 0.4375
    more = steps_to_spend(total_s - 2.0)
    assert more == 33
    assert resumed.stopped_by == "gpu_hours" and resumed.stop_step == trainer.global_step == 25 + more
    assert seconds(resumed.stop_gpu_hours) == 2.0 + more * STEP_S
    logged = caplog.text + capfd.readouterr().err
    line = f"Compute budget: counted 0.4 s lost since the last checkpoint (0.0001 GPU-hours at 1 device(s), from the ledger {tmp_path / 'a' / LEDGER_NAME})"
    assert line in logged
    # Its ledger (in its own folder and beside the checkpoint it resumed from) continues the lineage,
    # and was last written when training ended, with the final consumption.
    for folder in ("a", "b"):
        ledger = _ledger(tmp_path / folder)
        assert ledger["lineage"] == [first.ledger.lineage[0], resumed.ledger.lineage[1]]
        assert seconds(ledger["gpu_hours"]) == 2.0 + more * STEP_S and ledger["global_step"] == 25 + more
    final = ComputeBudget.read_consumed(resumed.stop_checkpoint_path or tmp_path / "b" / "last.ckpt")
    assert seconds(final["gpu_hours"]) == 2.0 + more * STEP_S and final["lineage"] == resumed.ledger.lineage

    # Without the ledger the resumed run would start from 1.5625 s and train 7 steps more.
    blind = ComputeBudget(max_gpu_hours=total_s / HOUR, ledger_every_s=None)
    trainer = _fit(tmp_path / "c", blind, ckpt_path=str(checkpoint))
    assert blind.ledger_lost_gpu_hours == 0.0
    assert blind.stop_step == 25 + steps_to_spend(total_s - 25 * STEP_S) == 25 + 40
    assert not (tmp_path / "c" / LEDGER_NAME).exists()


def test_a_fresh_fit_never_uses_an_old_ledger(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    first = _crashed_run(tmp_path / "a")
    assert seconds(_ledger(tmp_path / "a")["gpu_hours"]) == 2.0
    # A new fit without ckpt_path in the same folder starts from zero and replaces the ledger.
    fresh = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    _fit(tmp_path / "a", fresh, max_steps=3)
    assert seconds(fresh.consumed_gpu_hours) == 3 * STEP_S
    ledger = _ledger(tmp_path / "a")
    assert ledger["lineage"] == fresh.ledger.lineage and fresh.ledger.lineage[0] != first.ledger.lineage[0]
    assert seconds(ledger["gpu_hours"]) == 3 * STEP_S
    # Resuming the first run's checkpoint now finds a ledger of another run: it is not used.
    resumed = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    _fit(tmp_path / "b", resumed, ckpt_path=str(tmp_path / "a" / "step=25.ckpt"), max_steps=26)
    assert resumed.ledger_lost_gpu_hours == 0.0
    assert seconds(resumed.consumed_gpu_hours) == 26 * STEP_S
    assert resumed.ledger.lineage[0] == first.ledger.lineage[0]
    logged = caplog.text + capfd.readouterr().err
    assert f"the ledger {tmp_path / 'a' / LEDGER_NAME} belongs to another run" in logged
    assert "lost since the last checkpoint" not in logged


def test_resuming_an_older_checkpoint_keeps_its_accounting(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    """Checkpoints at steps 25 and 50, the ledger last at step 64 (4.0 s), the crash at step 70: the
    ledger continues step 50's checkpoint, not step 25's."""
    _crashed_run(tmp_path / "a", crash=70)
    ledger = _ledger(tmp_path / "a")
    assert seconds(ledger["gpu_hours"]) == 64 * STEP_S == 4.0 and ledger["checkpoint_step"] == 50
    latest = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    _fit(tmp_path / "b", latest, ckpt_path=str(tmp_path / "a" / "step=50.ckpt"), max_steps=51)
    assert seconds(latest.ledger_lost_gpu_hours) == 4.0 - 50 * STEP_S
    assert seconds(latest.consumed_gpu_hours) == 4.0 + STEP_S
    # The ledger beside step 50's checkpoint is now the resumed fit's: it still continues step 50
    # (that fit saved no checkpoint of its own), so a return to step 25 does not use it.
    older = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    _fit(tmp_path / "c", older, ckpt_path=str(tmp_path / "a" / "step=25.ckpt"), max_steps=26)
    assert older.ledger_lost_gpu_hours == 0.0
    assert seconds(older.consumed_gpu_hours) == 26 * STEP_S
    logged = caplog.text + capfd.readouterr().err
    assert (
        f"the ledger {tmp_path / 'a' / LEDGER_NAME} continues a later checkpoint (step 50) than the resumed "
        "one (step 25); using the checkpoint's consumption"
    ) in logged


@pytest.mark.parametrize("damage", ["truncated", "wrong values"])
def test_a_damaged_ledger_is_one_warning_and_the_checkpoint_counts(
    tmp_path: Path, clock: FakeClock, damage: str, recwarn: pytest.WarningsRecorder
) -> None:
    _crashed_run(tmp_path / "a")
    path = tmp_path / "a" / LEDGER_NAME
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    else:
        path.write_text(text.replace('"world_size": 1', '"world_size": 0'))
    resumed = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    _fit(tmp_path / "b", resumed, ckpt_path=str(tmp_path / "a" / "step=25.ckpt"), max_steps=26)
    assert resumed.ledger_lost_gpu_hours == 0.0
    assert seconds(resumed.consumed_gpu_hours) == 26 * STEP_S
    warnings = [str(w.message) for w in recwarn if str(w.message).startswith("Compute budget")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"Compute budget: ignoring the unreadable ledger {path} ("
    )
    assert ("JSONDecodeError" if damage == "truncated" else "unexpected values") in warnings[0]


def test_a_full_disk_warns_once_and_training_goes_on(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    """ENOSPC while writing the ledger (injected: a full disk cannot be made in a test): the half
    written temporary file is removed, one warning names the file, and the fit ends normally."""
    original = Path.write_text
    attempts: list[Path] = []

    def full_disk(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if f"{LEDGER_NAME}.tmp-" in self.name:
            attempts.append(self)
            original(self, data[:10], *args, **kwargs)  # what a full disk leaves: a partial file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    budget = ComputeBudget(max_gpu_hours=1.0, ledger_every_s=LEDGER_S)
    trainer = _fit(tmp_path, budget, max_steps=40)
    assert trainer.global_step == 40 and seconds(budget.consumed_gpu_hours) == 40 * STEP_S
    assert len(attempts) == 4  # at the start, steps 16 and 32, and the end
    assert not list(tmp_path.glob(f".{LEDGER_NAME}*")) and not (tmp_path / LEDGER_NAME).exists()
    warnings = [str(w.message) for w in recwarn if str(w.message).startswith("Compute budget")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"Compute budget: cannot write the ledger {tmp_path / LEDGER_NAME} (")
    assert "No space left on device" in warnings[0]


def test_ledger_interval_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture, unit_corpora: dict
) -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(SlammingError, match="ledger_every_s must be > 0 seconds or null"):
            ComputeBudget(ledger_every_s=bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(fit_config(tmp_path, unit_corpora)), "--budget.ledger_every_s=0"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "ledger_every_s" in line]
    assert lines == [
        "slamming: error: ComputeBudget: ledger_every_s must be > 0 seconds or null (no ledger), got 0.0."
    ]


def _ddp_phase(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "src"), env.get("PYTHONPATH", "")])
    env.pop("MASTER_PORT", None)  # let Lightning pick a free port
    script = Path(__file__).with_name("ddp_ledger_script.py")
    # A hang in a collective would block for ever: the timeout turns it into a failure.
    return subprocess.run(
        [sys.executable, str(script), str(out), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_two_process_resume_adopts_the_ledger_on_every_rank(tmp_path: Path) -> None:
    """Rank 0 reads the ledger and broadcasts it: both ranks start the resumed fit from the same
    consumption, and stop on the step rank 0's clock sets (rank 1's clock runs 3x slower)."""
    first = _ddp_phase(tmp_path, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    # Rank 0's steps take 1/32 s: the checkpoint at step 25 holds 25/32 s x 2 devices; the ledger
    # was last written when the fit ended at step 45: 45/32 s x 2.
    assert seconds(ComputeBudget.read_consumed(tmp_path / "ckpt" / "step=25.ckpt")["gpu_hours"]) == 25 / 16
    ledger = _ledger(tmp_path / "ckpt")
    assert (
        seconds(ledger["gpu_hours"]) == 45 / 16 and ledger["world_size"] == 2 and ledger["global_step"] == 45
    )
    budget_s = 2.01  # per device: 4.02 GPU-seconds
    resumed = _ddp_phase(tmp_path, "resume", str(budget_s))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"resume-rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in ranks:
        assert seconds(rank["start_gpu_hours"]) == 45 / 16
        assert seconds(rank["ledger_lost_gpu_hours"]) == (45 - 25) / 16
        assert rank["lineage"] == ranks[0]["lineage"] and rank["lineage"][:-1] == ledger["lineage"]
    # 2.8125 GPU-s + n steps x 2/32 reaches 4.02 after n = 20: step 45 (the checkpoint's 1.5625
    # would have needed 40 steps: 65).
    assert (
        ranks[0]["stop_step"] == ranks[1]["stop_step"] == ranks[0]["global_step"] == ranks[1]["global_step"]
    )
    assert ranks[0]["stop_step"] == 25 + steps_to_spend(2 * budget_s - 45 / 16, 2 / 32) == 45
    assert 25 + steps_to_spend(2 * budget_s - 25 / 16, 2 / 32) == 65
    assert resumed.stderr.count("lost since the last checkpoint") == 1  # rank 0 reads and says it


# ------------------------------------------------------------------------------------ real SIGKILL

#: Steps between checkpoints of the killed run: step 4 early, step 8 some 80 s later.
KILL_EVERY = 4
#: Real seconds each training step of the killed run sleeps after the first checkpoint.
SLOW_S = 20.0


def _events(timeline: Path) -> list[dict[str, Any]]:
    if not timeline.exists():
        return []
    return [json.loads(line) for line in timeline.read_text().splitlines() if line.endswith("}")]


def _kill_config(folder: Path, unit_corpora: dict, timeline: Path, seconds: float, max_steps: int) -> Path:
    folder.mkdir(exist_ok=True)
    slow = {
        "class_path": "tests.callbacks.ledger_kill_helpers.SlowSteps",
        "init_args": {"timeline": str(timeline), "seconds": seconds, "from_step": KILL_EVERY},
    }
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "save_last": True,
            "every_n_train_steps": KILL_EVERY,
            "save_top_k": -1,
            "filename": "{step}",
        },
    }
    return fit_config(
        folder,
        unit_corpora,
        trainer={"max_steps": max_steps, "limit_val_batches": 0, "callbacks": [slow, checkpoint]},
        budget={"max_gpu_hours": 1.0},  # and the default ledger interval: 60 s
    )


def test_sigkill_then_resume_counts_the_time_actually_spent(tmp_path: Path, unit_corpora: dict) -> None:
    """Acceptance: a real ``slamming fit`` is killed with SIGKILL more than 60 s after its last
    checkpoint; the resumed fit reports a consumption within 60 s of the wall time both runs spent
    training, where the checkpoint alone would have lost more than 60 s.

    The killed run checkpoints at step 4 and then sleeps 20 s per step; it is killed 3 s after step
    7 ends (during step 8, before that step's checkpoint), so about 63 s after its checkpoint. Its
    ledger was written at the start and at the first step end 60 s later (step 6 or 7). The resumed
    run (its steps at full speed) trains step 5 and ends.
    """
    timeline = tmp_path / "timeline.jsonl"
    config = _kill_config(tmp_path / "killed", unit_corpora, timeline, SLOW_S, max_steps=1000)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, str(Path(root) / "src"), env.get("PYTHONPATH", "")])
    slamming = [sys.executable, "-c", "from slamming.cli import main; main()", "fit"]
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            [*slamming, "--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            last_slow = 2 * KILL_EVERY - 1
            deadline = time.time() + 300
            while not any(e["event"] == "step" and e["step"] == last_slow for e in _events(timeline)):
                assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.time() < deadline, f"the run did not reach step {last_slow} in time"
                time.sleep(0.2)
            time.sleep(3.0)
            killed_at = time.time()
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    first = _events(timeline)
    first_spent = killed_at - next(e["t"] for e in first if e["event"] == "start")
    saved = [e for e in first if e["event"] == "checkpoint"]
    assert {e["step"] for e in saved} == {KILL_EVERY}  # step 8's checkpoint never happened
    lost_without_ledger = killed_at - saved[-1]["t"]
    assert lost_without_ledger > 60.0  # the checkpoint alone loses more than the tolerance
    run = tmp_path / "killed" / "runs" / "t" / "version_0" / "checkpoints"
    ledger = json.loads((run / LEDGER_NAME).read_text())
    assert KILL_EVERY < ledger["global_step"] < 2 * KILL_EVERY  # written 60 s after the start
    checkpoint_s = ComputeBudget.read_consumed(run / "last.ckpt")["gpu_hours"] * HOUR

    # Resume from the last checkpoint (version_0's) for one step at full speed.
    config = _kill_config(tmp_path / "resumed", unit_corpora, timeline, 0.0, max_steps=KILL_EVERY + 1)
    resumed = subprocess.run(
        [*slamming, "--config", str(config), "--ckpt_path", str(run / "last.ckpt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = _events(timeline)[len(first) :]
    end = next(e for e in second if e["event"] == "end")
    spent = first_spent + end["t"] - next(e["t"] for e in second if e["event"] == "start")
    reported = next(line for line in resumed.stdout.splitlines() if line.startswith("slamming fit done: "))
    used = float(reported.split("budget used=")[1].split(" GPU-h")[0]) * HOUR
    assert abs(used - end["gpu_hours"] * HOUR) <= 0.2  # the line rounds to 4 decimals of an hour
    assert spent - 60.0 <= used <= spent + 0.5, (used, spent)
    lost_lines = [line for line in resumed.stderr.splitlines() if "lost since the last checkpoint" in line]
    assert len(lost_lines) == 1
    counted = float(lost_lines[0].split("counted ")[1].split(" s lost")[0])
    assert counted == pytest.approx(ledger["gpu_hours"] * HOUR - checkpoint_s, abs=0.1)
    # Without the ledger the report would have been `counted` seconds lower: more than 60 s short.
    assert spent - (used - counted) > 60.0
