"""Unit language models: Hugging Face causal LMs over speech units.

A :class:`UnitLMBuilder` builds a ``transformers`` causal LM whose vocabulary is ``K + 2`` ids
(PAD, ``<S>``, K units; see :mod:`slamming.vocab`), either

* from a config (``config``: keyword arguments of the architecture's config class, e.g.
  ``Qwen2Config``), with random weights; or
* from a pretrained text LM (``base``: a local folder or a hub id) with **TWIST init**: the
  transformer weights are kept and the vocabulary is swapped to ``K + 2`` ids. Shrinking with
  ``resize_token_embeddings`` keeps the first ``K + 2`` rows (Hugging Face semantics), as the
  authors' slamkit does.

RoPE θ, dropout and the attention implementation are set from the builder in both cases. The
LightningModules own the objective; the architecture lives here, and a trained model exports with
``save_pretrained`` so plain ``transformers.AutoModelForCausalLM.from_pretrained`` loads it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from huggingface_hub.constants import ENDPOINT as HF_ENDPOINT
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.utils import GENERATION_CONFIG_NAME

from slamming.atomic import atomic_folder, write_text_atomic
from slamming.errors import SlammingError
from slamming.models.attention import CHOICES as ATTENTION_CHOICES
from slamming.models.attention import resolve_attention
from slamming.models.card import CARD_NAME, TRAINING_KEY, is_our_card, write_model_card
from slamming.models.checkpoint import read_checkpoint, stage_section
from slamming.models.sampling import generation_config
from slamming.vocab import BOS_ID, EOS_ID, PAD_ID, vocab_size

log = logging.getLogger(__name__)

_DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _set_config_dropout(config: PretrainedConfig, p: float) -> None:
    for key in _DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, float(p))


def set_dropout(model: PreTrainedModel, p: float) -> None:
    """Set every dropout probability of a loaded model to ``p``: its config's and its modules'.

    A transformers model copies its config's rates into its modules when built (Qwen2's attention
    keeps ``attention_dropout``), so changing the config after loading is not enough.
    """
    _set_config_dropout(model.config, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = float(p)
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = float(p)


def require_hub(name: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when the hub cannot be reached.

    Without this, ``huggingface_hub`` retries for about 20 s and prints a warning per retry before
    the same error. In offline mode (``HF_HUB_OFFLINE``, read now or at import) it tries no connection.
    """
    from huggingface_hub import constants

    host = urlparse(HF_ENDPOINT).hostname or "huggingface.co"
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    if offline or constants.HF_HUB_OFFLINE:
        raise OSError(f"hub offline (HF_HUB_OFFLINE) and {name!r} is neither a local folder nor cached")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        raise OSError(f"{host} cannot be reached and {name!r} is neither a local folder nor cached") from None


class UnitLMBuilder:
    """Recipe for a unit LM; ``build(num_units)`` returns the ``transformers`` model.

    Args:
        base: a pretrained text LM (local folder or hub id) to warm-start from (TWIST init when
            ``twist_init``), or ``None`` to build from ``config``.
        config: config keyword arguments (``hidden_size``, ``num_hidden_layers``, ...) for a model
            built from scratch, or overrides applied to the base model's config.
        model_type: the architecture used when ``base`` is ``None`` (any ``transformers`` causal-LM
            model type; Qwen2 by default, as in the paper).
        twist_init: keep the base model's transformer weights (``False``: same architecture,
            random weights).
        rope_theta: RoPE base frequency (the paper: 10,000 instead of Qwen's 1e6); ``None`` keeps it.
        dropout: value for every dropout probability of the config (the paper removes dropout).
        attn_implementation: ``auto`` (the fastest kernel that isolates packed documents on this
            device, see :mod:`slamming.models.attention`), ``flash_attention_2`` (falls back to
            ``sdpa`` where flash-attn is unavailable), ``flex_attention``, ``sdpa`` or ``eager``.
        dtype: parameter dtype: ``float32`` or ``bfloat16`` (the paper trains pure bf16).
        max_position_embeddings: overrides the config's value when given.
    """

    def __init__(
        self,
        base: str | None = None,
        config: dict[str, Any] | None = None,
        model_type: str = "qwen2",
        twist_init: bool = True,
        rope_theta: float | None = 10000.0,
        dropout: float = 0.0,
        attn_implementation: str = "auto",
        dtype: str = "float32",
        max_position_embeddings: int | None = None,
    ) -> None:
        if base is None and not config:
            raise SlammingError("model backbone: give either `base` (a text LM folder or hub id) or `config`")
        if dtype not in DTYPES:
            raise SlammingError(f"model backbone: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if attn_implementation not in ATTENTION_CHOICES:
            raise SlammingError(
                f"model backbone: attn_implementation must be one of {', '.join(ATTENTION_CHOICES)}, "
                f"got {attn_implementation!r}"
            )
        self.base = base
        self.config = dict(config or {})
        self.model_type = model_type
        self.twist_init = twist_init
        self.rope_theta = rope_theta
        self.dropout = dropout
        self.attn_implementation = attn_implementation
        self.dtype = dtype
        self.max_position_embeddings = max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        """Plain settings, stored in checkpoints so a model can be rebuilt without the CLI."""
        return {
            "base": self.base,
            "config": self.config,
            "model_type": self.model_type,
            "twist_init": self.twist_init,
            "rope_theta": self.rope_theta,
            "dropout": self.dropout,
            "attn_implementation": self.attn_implementation,
            "dtype": self.dtype,
            "max_position_embeddings": self.max_position_embeddings,
        }

    def _base_config(self) -> PretrainedConfig:
        assert self.base is not None
        try:
            if not os.path.isdir(self.base):
                try:  # a model already in the local Hugging Face cache needs no network
                    return AutoConfig.from_pretrained(self.base, local_files_only=True)
                except OSError:
                    require_hub(self.base)
            return AutoConfig.from_pretrained(self.base)
        except (OSError, ValueError) as err:
            where = "folder" if os.path.isdir(self.base) else "hub id"
            raise SlammingError(
                f"cannot load the base model {self.base!r} ({where}: {str(err).splitlines()[0]}); "
                "with no hub access, download it where you can (e.g. `huggingface-cli download "
                f"{self.base} --local-dir DIR`) and set model.init_args.backbone.init_args.base=DIR"
            ) from None

    def make_config(self, num_units: int) -> PretrainedConfig:
        """The final model config: base or from-scratch config, vocabulary K + 2, overrides applied."""
        if self.base is not None:
            cfg = self._base_config()
            for key, value in self.config.items():
                setattr(cfg, key, value)
        else:
            cfg = AutoConfig.for_model(self.model_type, **self.config)
        cfg.vocab_size = vocab_size(num_units)
        cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = PAD_ID, BOS_ID, EOS_ID
        if self.rope_theta is not None:
            cfg.rope_theta = float(self.rope_theta)
            # transformers 5 keeps RoPE settings in `rope_parameters`; set it there too when present.
            if isinstance(getattr(cfg, "rope_parameters", None), dict):
                cfg.rope_parameters["rope_theta"] = float(self.rope_theta)
        _set_config_dropout(cfg, self.dropout)
        if self.max_position_embeddings is not None:
            cfg.max_position_embeddings = int(self.max_position_embeddings)
        cfg.use_cache = False
        return cfg

    def build(self, num_units: int) -> PreTrainedModel:
        """Build the unit LM with ``num_units + 2`` ids, in train mode.

        ``from_pretrained`` (TWIST init) returns a model in eval mode, and neither Lightning nor the
        stages switch it back: it would train with every dropout off (and Lightning would warn of
        modules in eval mode). A builder makes models to train, so both paths end in train mode.
        """
        cfg = self.make_config(num_units)
        attn = resolve_attention(self.attn_implementation, dropout=self.dropout)
        dtype = DTYPES[self.dtype]
        if self.base is not None and self.twist_init:
            # Load with the base's own vocabulary, then shrink: the rows kept are ids 0..K+1.
            base_cfg = self._base_config()
            cfg_for_load = self.make_config(num_units)
            cfg_for_load.vocab_size = base_cfg.vocab_size
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    self.base, config=cfg_for_load, dtype=dtype, attn_implementation=attn
                )
            except OSError as err:
                raise SlammingError(
                    f"cannot load the weights of base model {self.base!r}: {str(err).splitlines()[0]}"
                ) from None
            model.resize_token_embeddings(cfg.vocab_size, mean_resizing=False)
            model.config.vocab_size = cfg.vocab_size
            model.config.pad_token_id, model.config.bos_token_id = PAD_ID, BOS_ID
            model.config.eos_token_id = EOS_ID
        else:
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype)
        if model.generation_config is not None:
            model.generation_config.pad_token_id = PAD_ID
            model.generation_config.bos_token_id = BOS_ID
            model.generation_config.eos_token_id = EOS_ID
        log.info(
            "unit LM: %s, %.1fM parameters, vocab %d, attention %s, %s",
            type(model).__name__,
            sum(p.numel() for p in model.parameters()) / 1e6,
            cfg.vocab_size,
            model.config._attn_implementation,
            "TWIST init from " + str(self.base) if self.base and self.twist_init else "random init",
        )
        return model.train()


def export_hf(
    model: PreTrainedModel,
    out_dir: str | Path,
    tokenizer: dict[str, Any] | None,
    tokenizer_dir: str | Path | None = None,
    budget: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    shown_as: str | Path | None = None,
) -> Path:
    """Save ``model`` with ``save_pretrained`` (safetensors), with its recipe, tokeniser and budget.

    The tokeniser identity is written into ``config.json`` under ``slamming_tokenizer`` so that
    whoever loads the model knows which units it reads; plain ``AutoModelForCausalLM.from_pretrained``
    ignores it. When the tokeniser's folder is known it is copied to ``<out_dir>/tokenizer``, so the
    export alone can turn new audio into the model's units. ``budget`` (the ComputeBudget state of
    the run) lands under ``slamming_budget``: a later stage started from the export shares it;
    ``training`` (objective, start, data, steps, ...) under ``slamming_training``.

    Beside the weights the folder gets ``generation_config.json`` with the paper's sampling
    (:func:`slamming.models.sampling.generation_config`), so ``model.generate(ids)`` samples as the
    paper does, and a model card ``README.md`` (:mod:`slamming.models.card`); a ``README.md``
    slamming did not write is kept.

    The export is atomic: everything is written into the hidden ``.NAME.tmp-PID-…`` beside
    ``out_dir`` (which a glob such as ``version_*/hf_model`` never matches), and that folder is renamed
    to ``out_dir`` once complete, replacing an earlier export there whole. A failed export leaves the
    earlier one as it was and no temporary folder; a killed one leaves a hidden folder that the next
    export of that folder removes (:func:`slamming.atomic.atomic_folder`).

    Args:
        model: The unit LM.
        out_dir: The folder to write: absent, empty, an earlier export (it is replaced, keeping a
            user's ``README.md``) or a folder holding only a user's ``README.md``.
        tokenizer: The tokeniser identity, or None when unknown.
        tokenizer_dir: The tokeniser's folder, copied when it exists.
        budget: The ComputeBudget state of the run.
        training: What the stage knows of its training (:meth:`slamming.tasks.UnitLMStage.training_record`).
        shown_as: How the model card names the folder; default ``out_dir``.

    Returns:
        ``out_dir``.

    Raises:
        SlammingError: ``out_dir`` exists and is not a model folder (no ``config.json``) nor only a
            model card; it is left untouched.
    """
    out = Path(out_dir)
    model.config.slamming_tokenizer = dict(tokenizer) if tokenizer else None
    model.config.slamming_budget = dict(budget) if budget else None
    setattr(model.config, TRAINING_KEY, dict(training) if training else None)
    with atomic_folder(out, marker="config.json", kind="a model folder", carry=_users_card) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_text_atomic(tmp / GENERATION_CONFIG_NAME, generation_config().to_json_string())
        if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
            shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        if _users_card(tmp):  # carried over from the folder replaced: the user's, kept as it is
            log.warning(
                "%s was not written by slamming: kept as it is, no model card written", out / CARD_NAME
            )
        else:
            write_model_card(tmp, shown_as or out)
    return out


def _users_card(folder: Path) -> list[str]:
    """What an export keeps of the folder it replaces: a ``README.md`` that slamming did not write."""
    card = folder / CARD_NAME
    return [CARD_NAME] if card.is_file() and not is_our_card(card) else []


def unit_lm_from_checkpoint(checkpoint: str | Path) -> tuple[PreTrainedModel, dict[str, Any] | None]:
    """Rebuild the unit LM stored in a slamming checkpoint (pretraining or DPO), with its tokeniser.

    The architecture comes from the settings the checkpoint records: the builder of a pretraining
    run (a TWIST-init base is read for its config only; its weights are not loaded, the
    checkpoint's are), or the full model config (``hf_config``) that a DPO run stores.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise SlammingError(f"checkpoint {path} does not exist")
    return unit_lm_from_checkpoint_dict(read_checkpoint(path), path)


def unit_lm_from_checkpoint_dict(
    ckpt: dict[str, Any], path: str | Path
) -> tuple[PreTrainedModel, dict[str, Any] | None]:
    """:func:`unit_lm_from_checkpoint` on a checkpoint already loaded (``path`` names it in errors)."""
    extra = stage_section(ckpt)
    if not extra or not ("backbone" in extra or "hf_config" in extra):
        raise SlammingError(f"{path} is not a slamming checkpoint (no 'slamming' section)")
    if "hf_config" in extra:
        config = dict(extra["hf_config"])
        cfg = AutoConfig.for_model(config.pop("model_type"), **config)
        model = AutoModelForCausalLM.from_config(
            cfg,
            attn_implementation=resolve_attention(extra.get("attn_implementation", "sdpa")),
            dtype=DTYPES[extra.get("dtype", "float32")],
        )
    else:
        builder = UnitLMBuilder(**{**extra["backbone"], "twist_init": False})
        model = builder.build(int(extra.get("num_units") or ckpt["hyper_parameters"]["num_units"]))
    state = {
        k.removeprefix("model.").replace("_orig_mod.", ""): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("model.")
    }
    model.load_state_dict(state)
    return model.eval(), extra.get("tokenizer")
