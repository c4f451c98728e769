"""The model card of an exported folder: ``README.md``, saying what the model is and how it was made.

Hugging Face shows a folder's ``README.md`` as its model card. Ours is rendered from the folder
alone, so whoever rewrites it needs nothing else:

- ``config.json``: the architecture, the tokeniser identity (``slamming_tokenizer``), the compute
  budget of the run (``slamming_budget``) and the training facts (``slamming_training``,
  :data:`TRAINING_KEY`: objective, initialisation, data, steps, precision, in-training benchmark
  scores), all written by :func:`slamming.models.unit_lm.export_hf`;
- ``eval-results.json``: the pair benchmarks, once ``slamming test`` has scored the folder (it then
  rewrites the card); without it the card says "not yet evaluated";
- ``generation_config.json``: the paper's sampling, which ``model.generate`` uses.

A ``README.md`` without :data:`CARD_MARK` is someone else's and is never replaced.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from slamming.atomic import write_text_atomic
from slamming.models.sampling import PAPER_SAMPLING
from slamming.vocab import NUM_SPECIAL

log = logging.getLogger(__name__)

__all__ = [
    "CARD_MARK",
    "CARD_NAME",
    "RESULTS_NAME",
    "TRAINING_KEY",
    "is_our_card",
    "render_model_card",
    "results_table",
    "write_model_card",
]

#: The key of the training facts in ``config.json`` and in slamming's checkpoints.
TRAINING_KEY = "slamming_training"
CARD_NAME = "README.md"
#: The stem of the results files ``slamming test`` writes (``eval-results.json``, ``.md``).
RESULTS_NAME = "eval-results"
#: The line that marks a card as ours (and so replaceable).
CARD_MARK = "<!-- model card written by slamming: an export or `slamming test` of this folder rewrites it -->"

_IDENTITY_LABELS = {
    "kind": "kind",
    "name": "name",
    "model": "feature model",
    "layer": "layer",
    "k": "units (k)",
    "frame_rate": "frame rate (Hz)",
    "dedup": "repeats collapsed (dedup)",
    "segment": "change-point segments",
    "settings_hash": "settings hash",
}


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table of pair-benchmark results: one row per benchmark and group.

    Args:
        results: ``{benchmark: summarize_pairs(...) dict}`` (``pairs``, ``accuracy``, optional
            ``ci95``, ``zerospeech_accuracy`` and ``groups``), as ``slamming test`` and
            ``BenchmarkEvaluation`` produce.
    """

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.2f}"

    def interval(value: list[float] | None) -> str:
        return "" if not value else f"{100 * value[0]:.1f}–{100 * value[1]:.1f}"

    rows = [
        "| benchmark | pairs | accuracy | 95 % interval | ZeroSpeech accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, summary in results.items():
        lines = [(name, summary)] + [(f"{name} / {g}", v) for g, v in summary.get("groups", {}).items()]
        rows += [
            f"| {label} | {v['pairs']} | {pct(v['accuracy'])} | {interval(v.get('ci95'))} "
            f"| {pct(v.get('zerospeech_accuracy'))} |"
            for label, v in lines
        ]
    return "\n".join(rows)


def _tokenizer_section(identity: dict[str, Any] | None, has_folder: bool) -> list[str]:
    if not identity:
        return ["No tokeniser identity was recorded: the units this model reads are unknown."]
    parts = [str(identity.get("kind", "unknown"))]
    named = identity.get("name") or identity.get("model")
    if named:
        parts.append(f"`{named}`")
    if identity.get("layer") is not None:
        parts.append(f"layer {identity['layer']}")
    if identity.get("k") is not None:
        parts.append(f"k = {identity['k']}")
    lines = [f"Units: {', '.join(parts)}.", "", "| setting | value |", "|---|---|"]
    keys = [key for key in _IDENTITY_LABELS if key in identity] + sorted(
        set(identity) - set(_IDENTITY_LABELS)
    )
    lines += [f"| {_IDENTITY_LABELS.get(key, key)} | {identity[key]} |" for key in keys]
    lines.append("")
    if has_folder:
        lines.append("The tokeniser itself is in `tokenizer/` here: it turns 16 kHz speech into these units.")
    else:
        lines.append("The tokeniser folder was not exported: use the one these settings name.")
    return lines


def _training_section(training: dict[str, Any], budget: dict[str, Any] | None) -> list[str]:
    lines = []
    if training.get("objective"):
        lines.append(f"- Objective: `{training['objective']}`")
    if training.get("init"):
        lines.append(f"- Start: {training['init']}")
    train_data, val_data = training.get("train_data") or [], training.get("val_data") or []
    lines.append(
        "- Training data: " + (", ".join(f"`{p}`" for p in train_data) if train_data else "not recorded")
    )
    if val_data:
        lines.append("- Validation data: " + ", ".join(f"`{p}`" for p in val_data))
    lines.append(f"- Steps: {training['steps'] if training.get('steps') is not None else 'not recorded'}")
    if training.get("precision"):
        devices = training.get("devices")
        lines.append(
            f"- Precision: {training['precision']}" + (f" on {devices} device(s)" if devices else "")
        )
    if budget:
        used, limit = float(budget.get("gpu_hours", 0.0)), budget.get("max_gpu_hours")
        share = f" ({100 * used / float(limit):.1f} %)" if limit else ""
        text = f"{used:.4g} of {float(limit):.4g} GPU-hours{share}" if limit else f"{used:.4g} GPU-hours"
        if budget.get("parent_gpu_hours") is not None:
            text += f", {float(budget['parent_gpu_hours']):.4g} of them by the run it started from"
        if budget.get("stopped_by"):
            text += f"; stopped by the {budget['stopped_by']} budget at step {budget.get('stop_step')}"
        lines.append(f"- Compute budget used: {text}")
        if budget.get("tokens") is not None:
            lines.append(f"- Tokens: {int(budget['tokens'])} target tokens trained on in this stage")
    else:
        lines.append("- Compute budget used: not recorded")
    return lines


def _results_section(folder: Path, results: dict[str, Any] | None, training: dict[str, Any]) -> list[str]:
    if results and results.get("benchmarks"):
        score = results.get("score", "")
        return [
            f"From `slamming test` ({RESULTS_NAME}.json here; score: {score}). Accuracy in %: flat over "
            "pairs (the paper's), ZeroSpeech = voices per id, then ids.",
            "",
            results_table(results["benchmarks"]),
        ]
    check = training.get("benchmarks")
    if check and check.get("results"):
        cap = check.get("max_pairs")
        return [
            f"Not yet evaluated with `slamming test`. The in-training check (`BenchmarkEvaluation`) at step "
            f"{check.get('step')}" + (f", on at most {cap} pairs per benchmark" if cap else "") + ":",
            "",
            results_table(check["results"]),
        ]
    return [
        "Not yet evaluated. `slamming test --config configs/eval.yaml "
        f"--model.init_args.model {folder}` scores the pair benchmarks, writes {RESULTS_NAME}.json here "
        "and rewrites this card with the results."
    ]


def render_model_card(
    folder: str | Path,
    config: dict[str, Any],
    results: dict[str, Any] | None = None,
    tokenizer_folder: bool = False,
) -> str:
    """The text of the model card.

    Args:
        folder: How the card names the folder (in the loading examples).
        config: The folder's ``config.json``.
        results: Its ``eval-results.json``, when ``slamming test`` has scored it.
        tokenizer_folder: Whether the folder holds the tokeniser (``tokenizer/``).
    """
    folder = Path(folder)
    identity = config.get("slamming_tokenizer")
    training = dict(config.get(TRAINING_KEY) or {})
    architecture = (config.get("architectures") or [config.get("model_type", "causal LM")])[0]
    vocab = int(config.get("vocab_size", NUM_SPECIAL))
    shape = ", ".join(
        f"{config[key]} {label}"
        for key, label in (("num_hidden_layers", "layers"), ("hidden_size", "wide"))
        if key in config
    )
    s = PAPER_SAMPLING
    lines = [
        "---",
        "library_name: transformers",
        "tags: [speech-language-model, speech-units, slamming]",
        "---",
        CARD_MARK,
        "",
        f"# Speech unit language model `{folder.name}`",
        "",
        f"A `{architecture}` ({shape}) over {vocab} ids: PAD = 0, `<S>` = 1 (both BOS and EOS), unit u = "
        f"id u + 2 ({vocab - NUM_SPECIAL} units). Trained with slamming, after *Slamming: Training a Speech "
        "Language Model on One GPU in a Day* (Maimon, Elmakies, Adi, 2025, arXiv 2502.15814).",
        "",
        "## Tokeniser",
        "",
        *_tokenizer_section(identity, tokenizer_folder),
        "",
        "## Training",
        "",
        *_training_section(training, config.get("slamming_budget")),
        "",
        "## Benchmarks",
        "",
        *_results_section(folder, results, training),
        "",
        "## Sampling",
        "",
        f"`generation_config.json` holds the paper's sampling: temperature {s.temperature}, top-k {s.top_k}, "
        f"{s.max_new_tokens} new tokens, repetition penalty {s.repetition_penalty}, PAD never sampled, "
        "stop at `<S>`. `model.generate(ids)` uses it; keyword arguments override it.",
        "",
        "## How to load",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{folder}")',
        "units = [3, 1, 4]  # a prompt in the units of the tokeniser above (0..k-1)",
        "ids = torch.tensor([[1] + [u + 2 for u in units]])  # <S>, then unit u as id u + 2",
        "out = model.generate(ids)  # the paper's sampling, from generation_config.json",
        "continuation = [i - 2 for i in out[0, ids.shape[1]:].tolist() if i != 1]",
        "```",
        "",
        "With slamming, `slamming.models.load_unit_lm(folder)` also returns the tokeniser identity, its "
        "folder and the budget; `slamming predict --config configs/tiny/generate.yaml "
        f"--model.init_args.model {folder}` continues spoken prompts, and `slamming fit --config "
        f"configs/dpo.yaml --model.init_args.init_from {folder}` aligns it with DPO.",
        "",
    ]
    return "\n".join(lines)


def is_our_card(path: Path) -> bool:
    """Whether ``path`` is a card slamming wrote (it holds :data:`CARD_MARK` near its top)."""
    return CARD_MARK in path.read_text(encoding="utf-8", errors="replace")[:2000]


def write_model_card(folder: str | Path, shown_as: str | Path | None = None) -> Path | None:
    """Write (or rewrite) ``README.md`` in an exported model folder, atomically.

    Args:
        folder: The model folder (its ``config.json`` must exist).
        shown_as: How the card names the folder; default ``folder`` (an export staged under a
            temporary name passes its final one).

    Returns:
        The card's path, or None when a ``README.md`` that is not ours is in the way (it is kept,
        and a warning says so).
    """
    folder = Path(folder)
    path = folder / CARD_NAME
    if path.exists() and not is_our_card(path):
        log.warning("%s was not written by slamming: kept as it is, no model card written", path)
        return None
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    results_path = folder / f"{RESULTS_NAME}.json"
    results = None
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("%s is not valid JSON: the model card leaves the results out", results_path)
    text = render_model_card(shown_as or folder, config, results, (folder / "tokenizer").is_dir())
    write_text_atomic(path, text)
    return path
