"""DPO improves a tiny model: held-out preference accuracy and reward margin rise after a short fit.

The preference is learnable and unambiguous: after a random prompt, the chosen completion counts
*down* from the prompt's last unit (u-1, u-2, ... mod K) and the rejected one counts *up* (u+1,
u+2, ...), both of the same length. The randomly initialised starting model happens to favour the
rising side (it prefers the chosen completion on almost no held-out pair), so DPO has to overturn
its prior; after a short fit it must prefer the chosen side on held-out pairs whose completions it
never saw in training.

Everything after the fit is measured independently of ``DPOAlignment``: the reference (the
exported starting model) and the aligned policy (the run's export) are loaded from disk and each
held-out pair is scored one sequence at a time, unpadded, with a plain ``log_softmax``. Were chosen
and rejected swapped inside ``DPOAlignment``, the policy would learn to count up and the
assertions on the aligned model below would fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slamming.cli import main
from slamming.data.preference.corpus import PreferenceCorpusWriter
from slamming.models.loading import load_unit_lm
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.vocab import BOS_ID, EOS_ID, UNIT_OFFSET
from tests.conftest import TEST_IDENTITY, TINY_BACKBONE
from tests.tasks.test_dpo import dpo_config

K = TEST_IDENTITY["k"]
BETA = 0.1
COMPLETION = 6


def _triples(n: int, seed: int, last_units: range) -> list[tuple[list[int], list[int], list[int]]]:
    """``n`` (prompt, chosen, rejected): a random prompt ending in one of ``last_units``; the chosen
    completion counts down from the prompt's last unit, the rejected one counts up."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = [int(u) for u in rng.integers(0, K, size=int(rng.integers(3, 8)))]
        last = int(rng.choice(last_units))
        prompt.append(last)
        up = [(last + 1 + i) % K for i in range(COMPLETION)]
        down = [(last - 1 - i) % K for i in range(COMPLETION)]
        out.append((prompt, down, up))
    return out


def _write(path: Path, triples: list[tuple[list[int], list[int], list[int]]]) -> Path:
    with PreferenceCorpusWriter(path, TEST_IDENTITY, K) as writer:
        for i, (prompt, chosen, rejected) in enumerate(triples):
            writer.add(np.asarray(prompt), np.asarray(chosen), np.asarray(rejected), source=f"p{i}")
    return path


@torch.no_grad()
def _completion_logp(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    """log p(completion, then <S> | <S> prompt), summed: the completion as the DPO batches score it."""
    ids = [BOS_ID, *(u + UNIT_OFFSET for u in prompt), *(u + UNIT_OFFSET for u in completion), EOS_ID]
    logits = model(input_ids=torch.tensor([ids[:-1]]), use_cache=False).logits[0].float()
    logps = torch.log_softmax(logits, dim=-1)
    first = len(prompt)  # position of the last prompt id; it predicts the first completion id
    return float(sum(logps[t, ids[t + 1]] for t in range(first, len(ids) - 1)))


def _score(policy: torch.nn.Module, reference: torch.nn.Module, triples: list) -> dict[str, float]:
    """Held-out metrics: raw preference accuracy, reward accuracy (relative to the reference), margin."""
    raw, margins = [], []
    for prompt, chosen, rejected in triples:
        pc, pr = _completion_logp(policy, prompt, chosen), _completion_logp(policy, prompt, rejected)
        rc, rr = _completion_logp(reference, prompt, chosen), _completion_logp(reference, prompt, rejected)
        raw.append(pc > pr)
        margins.append(BETA * ((pc - rc) - (pr - rr)))
    return {
        "pref_accuracy": float(np.mean(raw)),
        "reward_accuracy": float(np.mean([m > 0 for m in margins])),
        "margin": float(np.mean(margins)),
    }


def _scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_short_dpo_fit_raises_held_out_preference_accuracy_and_reward_margin(tmp_path: Path) -> None:
    # Held-out pairs are never trained on: their prompts end in units no training prompt ends in, so
    # not one held-out completion (chosen or rejected) occurs in the training data.
    train, held_out = (
        _triples(64, seed=11, last_units=range(0, 15)),
        _triples(40, seed=12, last_units=range(15, K)),
    )
    seen = {tuple(c) for _, c, _ in train} | {tuple(r) for _, _, r in train}
    assert not seen & ({tuple(c) for _, c, _ in held_out} | {tuple(r) for _, _, r in held_out})
    data = {"train": _write(tmp_path / "train", train), "val": _write(tmp_path / "val", held_out)}
    torch.manual_seed(0)
    start = export_hf(UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K), tmp_path / "start", TEST_IDENTITY)

    cfg = yaml.safe_load(dpo_config(tmp_path, start, data, beta=BETA).read_text())
    cfg["trainer"].update({"max_steps": 40, "val_check_interval": 20})
    cfg["data"]["init_args"]["batch_size"] = 8
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(tmp_path / "dpo.yaml")])
    run = tmp_path / "runs" / "dpo" / "version_0"

    reference = load_unit_lm(start).model
    before = _score(reference, reference, held_out)
    after = _score(load_unit_lm(run / "hf_model").model, reference, held_out)
    print(f"held-out before DPO: {before}\nheld-out after DPO:  {after}")

    # Before: the start model does not prefer the chosen side (it leans the other way); policy ==
    # reference, so every reward is exactly 0 (no pair has a positive margin).
    assert before["pref_accuracy"] <= 0.5
    assert before["reward_accuracy"] == 0.0 and before["margin"] == 0.0
    # After: the aligned policy prefers the chosen (counting-down) completion on the held-out pairs,
    # relative to the reference too, by a clear mean reward margin.
    assert after["pref_accuracy"] >= 0.9
    assert after["reward_accuracy"] >= 0.9
    assert after["margin"] > 0.5
    # The run's own final validation measured the same policy on the same pairs.
    assert _scalars(run, "val/rewards/margin")[40] == pytest.approx(after["margin"], rel=1e-3, abs=1e-4)
    assert _scalars(run, "val/pref_accuracy")[40] == pytest.approx(after["pref_accuracy"])
