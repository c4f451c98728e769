"""Load a trained unit LM from wherever it lives: a slamming checkpoint or an exported folder.

A later stage (DPO, evaluation) starts from the result of an earlier one. It needs more than the
weights: the identity of the tokeniser whose units the model reads, the tokeniser's folder (to turn
new speech into those units), and the compute budget the earlier stage consumed. A Lightning
checkpoint written by slamming keeps them in its ``slamming`` section and its ``ComputeBudget``
callback state; an exported Hugging Face folder keeps them in ``config.json``
(``slamming_tokenizer``, ``slamming_budget``) and in its ``tokenizer/`` sub-folder.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from slamming.errors import SlammingError
from slamming.models.authors import is_authors_folder, load_authors_folder
from slamming.models.card import TRAINING_KEY
from slamming.models.checkpoint import budget_state, read_checkpoint, stage_section
from slamming.models.unit_lm import DTYPES, require_hub, resolve_attention, unit_lm_from_checkpoint_dict
from slamming.vocab import NUM_SPECIAL

log = logging.getLogger(__name__)


@dataclass
class LoadedUnitLM:
    """A unit LM and what its stage needs to know about it.

    Attributes:
        model: The ``transformers`` causal LM (eval mode, on the CPU).
        num_units: K (the vocabulary is K + 2).
        tokenizer: The tokeniser identity the model was trained on, or None when unrecorded.
        tokenizer_dir: Folder of that tokeniser, when known and present.
        budget: The ComputeBudget state of the run that made the model (``gpu_hours``,
            ``tokens``, ...), or None.
        source: Where it was loaded from.
        training: What the stage that made it recorded of its training (objective, start, data,
            ``steps``, ...; see ``UnitLMStage.training_record``), or None; a checkpoint always
            gives at least its ``steps``.
    """

    model: PreTrainedModel
    num_units: int
    tokenizer: dict[str, Any] | None
    tokenizer_dir: Path | None
    budget: dict[str, Any] | None
    source: str
    training: dict[str, Any] | None = None


def _existing_dir(path: Any) -> Path | None:
    return Path(path) if path and Path(path).is_dir() else None


def load_unit_lm(
    source: str | Path, dtype: str | None = None, attn_implementation: str | None = None
) -> LoadedUnitLM:
    """Load a unit LM from a slamming ``.ckpt`` (pretraining or DPO), an exported folder, or a folder
    in the authors' format (:mod:`slamming.models.authors`), local or a hub id such as ``slprl/slam``.

    Args:
        source: The checkpoint file, the folder with ``config.json`` and the weights, or a hub id.
        dtype: ``float32``/``bfloat16``/``float16`` to cast the weights to; None keeps the stored
            dtype (a checkpoint's or an exported folder's; an authors' folder loads in fp32).
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2`` (falls back to ``sdpa``
            where flash-attn is missing); None keeps the model's.

    Raises:
        SlammingError: The source does not exist or is neither kind.
    """
    path = _local_path(source)
    if dtype is not None and dtype not in DTYPES:
        raise SlammingError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if path.is_file():
        # One read of the checkpoint for the weights, the tokeniser and the budget.
        ckpt = read_checkpoint(path)
        model, tokenizer = unit_lm_from_checkpoint_dict(ckpt, path)
        extra = stage_section(ckpt)
        tokenizer_dir = _existing_dir(extra.get("tokenizer_dir"))
        budget = budget_state(ckpt)
        training = _checkpoint_training(ckpt)
    elif is_authors_folder(path):
        model = load_authors_folder(path)
        tokenizer = tokenizer_dir = budget = training = None
    elif (path / "config.json").is_file():
        try:
            # "auto": the dtype the folder stores (transformers would load it in fp32 otherwise).
            model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype] if dtype else "auto")
        except (OSError, ValueError) as err:
            raise SlammingError(f"cannot load the model folder {path}: {str(err).splitlines()[0]}") from None
        tokenizer = getattr(model.config, "slamming_tokenizer", None)
        tokenizer_dir = _existing_dir(path / "tokenizer")
        budget = getattr(model.config, "slamming_budget", None)
        training = getattr(model.config, TRAINING_KEY, None)
    elif not path.exists():
        raise SlammingError(
            f"{path} does not exist; pass the .ckpt of a slamming run or an exported model folder"
        )
    else:
        raise SlammingError(
            f"{path}: not a checkpoint file nor a model folder with config.json; pass the .ckpt of a "
            "slamming run or a folder written by `slamming export`"
        )
    if attn_implementation is not None:
        model.config._attn_implementation = resolve_attention(attn_implementation)
    if dtype is not None:
        model = model.to(DTYPES[dtype])
    num_units = int(model.config.vocab_size) - NUM_SPECIAL
    return LoadedUnitLM(
        model.eval(),
        num_units,
        tokenizer,
        tokenizer_dir,
        budget and dict(budget),
        str(path),
        dict(training) if training else None,
    )


def _checkpoint_training(ckpt: Any) -> dict[str, Any] | None:
    """The training facts a checkpoint records, with its global step as ``steps``."""
    if not isinstance(ckpt, dict):
        return None
    record = dict(ckpt.get(TRAINING_KEY) or {})
    if ckpt.get("global_step") is not None:
        record["steps"] = int(ckpt["global_step"])
    return record or None


def _local_path(source: str | Path) -> Path:
    """``source`` as a local path; a hub id (``org/name``) is fetched, or found in the local cache.

    Raises:
        SlammingError: A hub id that is neither cached nor reachable (one line: how to get it).
    """
    path = Path(source)
    text = str(source)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")) or text.endswith(".ckpt"):
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer/*"]
    try:
        return Path(snapshot_download(text, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not cached: fetch it below
        pass
    try:
        require_hub(text)
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as err:  # any failure to fetch is the same problem for the user
        raise SlammingError(
            f"cannot get the model {text!r} ({str(err).splitlines()[0]}); where the hub is reachable, run "
            f"`huggingface-cli download {text} --local-dir DIR` and pass DIR"
        ) from None


def resolve_newest(pattern: str | Path) -> str:
    """``pattern`` itself, or when it is a glob (``*``, ``?``, ``[``), its newest match by mtime.

    Raises:
        SlammingError: A glob that matches nothing.
    """
    text = str(pattern)
    if not any(c in text for c in "*?["):
        return text
    matches = [Path(p) for p in glob.glob(text)]
    if not matches:
        raise SlammingError(f"nothing matches {text}; run the stage that writes it first, or give a path")
    newest = max(matches, key=lambda p: p.stat().st_mtime)
    log.info("%s -> %s (the newest of %d match(es))", text, newest, len(matches))
    return str(newest)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every parameter and buffer (16 hex digits).

    Names a model's weights exactly (the reference log-prob cache is keyed by it); ~1 s per GB.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]
