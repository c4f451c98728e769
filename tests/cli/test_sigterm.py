"""A run stopped by SIGTERM exits 143, not 0 as Lightning's graceful stop would.

Lightning catches SIGTERM, ends the loop at the next batch and raises ``SIGTERMException``, a
``SystemExit`` with status 0: a script running ``slamming fit`` then ``slamming test`` would go on
as if the fit had finished. The fit here is a real ``slamming fit`` that sends itself SIGTERM.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from slamming.cli import SIGTERM_EXIT, _exit_if_terminated, main
from slamming.tasks import NextUnitPretraining
from tests.conftest import TINY_BACKBONE, fit_config

#: The global step at which :class:`TerminatedAtStep` sends itself SIGTERM.
TERM_STEP = 5


class TerminatedAtStep(NextUnitPretraining):
    """Pretraining that sends its own process SIGTERM during step :data:`TERM_STEP`."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        if self.trainer.global_step == TERM_STEP:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(batch, batch_idx)


def test_a_fit_stopped_by_sigterm_exits_143_in_one_line(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture
) -> None:
    init_args = {"backbone": TINY_BACKBONE, "lr": 3e-3, "min_lr": 3e-4, "warmup_ratio": 0.1}
    config = fit_config(
        tmp_path, unit_corpora, model={"class_path": f"{__name__}.TerminatedAtStep", "init_args": init_args}
    )
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config)])
    assert signal.getsignal(signal.SIGTERM) == previous  # Lightning put the handler back
    assert info.value.code == SIGTERM_EXIT == 143
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("slamming: error:")]
    assert lines == [
        "slamming: error: stopped by SIGTERM before `slamming fit` finished (nothing after its last saved "
        "checkpoint was kept; resume from it with --ckpt_path); exit status 143"
    ]
    assert "Traceback" not in err
    run = tmp_path / "runs" / "t" / "version_0"
    # The checkpoints of step 4 were saved before the signal; the fit stopped in step 5 of its 12,
    # saved nothing after them and exported nothing.
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step=4.ckpt"]
    for name in ("last.ckpt", "step=4.ckpt"):
        saved: dict[str, Any] = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert saved["global_step"] == TERM_STEP - 1
    assert not (run / "hf_model").exists()


def test_only_lightnings_sigterm_stop_is_turned_into_143(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        _exit_if_terminated(SIGTERMException(), "test")
    assert info.value.code == 143
    assert capsys.readouterr().err == (
        "slamming: error: stopped by SIGTERM before `slamming test` finished (no results were written); "
        "exit status 143\n"
    )
    # Any other exit passes through untouched (the caller re-raises it).
    for other in (SystemExit(0), SystemExit(2), SystemExit(None)):
        assert _exit_if_terminated(other, "fit") is None
    assert capsys.readouterr().err == ""
