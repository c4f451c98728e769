"""The authors' released checkpoints (``slprl/slam``, ``slprl/slam_scaled``) as plain causal LMs.

slamkit saves its ``UnitLM`` — a wrapper holding a ``transformers`` causal LM under the attribute
``lm`` — with ``save_pretrained``. The folder it writes:

* ``config.json`` with ``model_type`` ``speech_language_model``, the unit vocabulary size
  (``vocab_size``, 502 for 500 units) and the text LM's own config nested as ``base_config``, which
  keeps the *text* vocabulary size (the wrapper resizes the embeddings after building the LM, so the
  outer value is the one the weights have);
* ``model.safetensors`` (or shards with an index) whose keys are the causal LM's keys prefixed
  ``lm.``; with tied embeddings there is no ``lm.lm_head.weight``.

:func:`load_authors_folder` builds the causal LM from ``base_config`` with the outer vocabulary and
loads the weights under their unprefixed names, so everything in slamming (evaluation, generation,
DPO) sees an ordinary ``transformers`` model whose ids follow the same layout (PAD 0, ``<S>`` 1,
unit u → u + 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from slamming.data.corpus.meta import member_path
from slamming.errors import SlammingError
from slamming.vocab import BOS_ID, EOS_ID, PAD_ID

MODEL_TYPE = "speech_language_model"
_PREFIX = "lm."
# Entries of the nested config that describe how it was saved, not the architecture.
_SAVE_ONLY_KEYS = ("torch_dtype", "dtype", "transformers_version", "_name_or_path", "architectures")


def is_authors_folder(path: Path) -> bool:
    """Whether ``path`` holds a ``config.json`` of the authors' ``speech_language_model`` type."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


def _weights(path: Path) -> dict[str, Any]:
    single = path / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (OSError, ValueError, AttributeError) as err:
            raise SlammingError(
                f"{index}: not a readable weight index ({err}); get the model again"
            ) from None
        if not isinstance(weight_map, dict):
            raise SlammingError(f"{index}: has no 'weight_map' object; get the model again")
        files = {
            member_path(path, shard, f"{index} weight_map", error=SlammingError)
            for shard in weight_map.values()
        }
        state: dict[str, Any] = {}
        for file in sorted(files):
            state.update(load_file(file))
        return state
    raise SlammingError(
        f"{path}: no model.safetensors (nor an index of shards); the checkpoint is incomplete"
    )


def load_authors_folder(path: str | Path) -> PreTrainedModel:
    """Load a checkpoint folder in the authors' format as a plain ``transformers`` causal LM.

    Raises:
        SlammingError: The config has no ``base_config``, or the weights do not match it (names the
            missing and unexpected keys).
    """
    path = Path(path)
    outer = json.loads((path / "config.json").read_text(encoding="utf-8"))
    base = outer.get("base_config")
    if not isinstance(base, dict) or "model_type" not in base:
        raise SlammingError(
            f"{path / 'config.json'}: a speech_language_model config needs base_config with the text LM's "
            "model_type; this file is not one the authors' slamkit wrote"
        )
    settings = {k: v for k, v in base.items() if k not in _SAVE_ONLY_KEYS}
    model_type = settings.pop("model_type")
    # The outer vocabulary wins: the nested config still has the text LM's.
    settings["vocab_size"] = int(outer.get("vocab_size", settings.get("vocab_size")))
    settings["tie_word_embeddings"] = bool(
        outer.get("tie_word_embeddings", settings.get("tie_word_embeddings", False))
    )
    settings.update(pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    config = AutoConfig.for_model(model_type, **settings)
    model = AutoModelForCausalLM.from_config(config)
    state = {k.removeprefix(_PREFIX): v for k, v in _weights(path).items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that disagree with the config
        raise SlammingError(
            f"{path}: the weights do not fit base_config ({model_type}, vocab {config.vocab_size}): "
            f"{str(err).splitlines()[-1].strip()}"
        ) from None
    tied_head = config.tie_word_embeddings and set(missing) <= {"lm_head.weight"}
    if unexpected or (missing and not tied_head):
        raise SlammingError(
            f"{path}: the weights do not fit base_config ({model_type}, vocab {config.vocab_size}): "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.tie_weights()
    model.config.slamming_source_format = MODEL_TYPE
    return model.eval()
