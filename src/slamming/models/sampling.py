"""The paper's sampling settings, defined once (slam-recipe §1.6).

:class:`SamplingSettings` says how continuations are sampled; its defaults are the paper's:
temperature 0.8, top-k 25, 150 new tokens, repetition penalty 1.1. :data:`PAPER_SAMPLING` is that
default. ``slamming predict`` samples with it (:mod:`slamming.eval.generate`,
:class:`slamming.tasks.UnitGeneration`), and every exported model folder carries it as
``generation_config.json`` (:func:`generation_config`), so a plain
``AutoModelForCausalLM.from_pretrained(folder).generate(ids)`` samples as the paper does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import GenerationConfig

from slamming.errors import SlammingError
from slamming.vocab import BOS_ID, EOS_ID, PAD_ID

__all__ = ["PAPER_SAMPLING", "SamplingSettings", "generation_config"]


@dataclass(frozen=True)
class SamplingSettings:
    """How continuations are sampled; the defaults are the paper's (slam-recipe §1.6).

    Attributes:
        temperature: logits are divided by it (> 0).
        top_k: keep the ``top_k`` most likely ids (ties with the k-th kept); 0 keeps all.
        max_new_tokens: most ids sampled after the prompt (the closing ``<S>`` included).
        repetition_penalty: CTRL-style penalty on every id already in the sequence (prompt included):
            a positive logit is divided by it, a negative one multiplied; 1.0 turns it off.
    """

    temperature: float = 0.8
    top_k: int = 25
    max_new_tokens: int = 150
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise SlammingError(f"model.temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise SlammingError(f"model.top_k must be >= 0 (0 = no top-k filter), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise SlammingError(f"model.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.repetition_penalty > 0:
            raise SlammingError(
                f"model.repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}"
            )

    def to_dict(self) -> dict[str, float | int]:
        """The settings as plain values (recorded beside every continuation)."""
        return asdict(self)


#: The paper's sampling: temperature 0.8, top-k 25, 150 new tokens, repetition penalty 1.1.
PAPER_SAMPLING = SamplingSettings()


def generation_config(settings: SamplingSettings = PAPER_SAMPLING) -> GenerationConfig:
    """``transformers``' ``GenerationConfig`` of ``settings`` over the unit vocabulary.

    Sampling on, the four settings, ``<S>`` (id 1) as BOS and EOS, PAD (id 0) as padding, and PAD
    suppressed, as :func:`slamming.eval.generate.sample_continuations` never samples it either: with
    one prompt, ``model.generate(ids)`` then draws what slamming's sampler draws from the same seed.
    """
    return GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_k=settings.top_k,
        max_new_tokens=settings.max_new_tokens,
        repetition_penalty=settings.repetition_penalty,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        suppress_tokens=[PAD_ID],
    )
