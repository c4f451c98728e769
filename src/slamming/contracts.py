"""Run-time contracts between floors: what a stage exposes to callbacks and data modules.

Callbacks (the compute budget, in-training evaluation) and data modules that build on the model's
tokeniser (spoken preference data) read a few attributes of the LightningModule or DataModule they
run with. Those attributes are declared here as :class:`typing.Protocol` classes, so the contract is
typed in one place; :func:`require` checks an object against one where it is used and names what is
missing in one line, instead of an ``AttributeError`` deep inside a fit.

Implemented by slamming's own classes: every training stage (``slamming.tasks.UnitLMStage``)
is a :class:`TokenizerRecord`, :class:`HFModelHolder`, :class:`ResizableSchedule` and
:class:`BudgetChild`; ``PairEvaluation``/``UnitGeneration`` are :class:`TokenizerRecord`s; the
pretraining and preference DataModules are :class:`UnitData`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from slamming.errors import SlammingError


@runtime_checkable
class TokenizerRecord(Protocol):
    """A stage that knows which tokeniser its units come from."""

    #: The tokeniser identity recorded with the model (kind, k, frame rate, ...), None when unknown.
    tokenizer_identity: dict[str, Any] | None
    #: The saved tokeniser folder, None when unknown; later stages tokenise new speech with it.
    tokenizer_dir: str | os.PathLike[str] | None


@runtime_checkable
class HFModelHolder(Protocol):
    """A stage whose network is a plain ``transformers`` model (unwrapped from ``torch.compile``)."""

    @property
    def hf_model(self) -> Any:
        """The ``transformers`` causal LM."""
        ...


@runtime_checkable
class ResizableSchedule(Protocol):
    """A stage whose learning-rate schedule can be re-sized (``budget.size_schedule``)."""

    def resize_schedule(self, total_steps: int) -> None:
        """Move the end of the schedule to ``total_steps`` optimizer steps."""
        ...


@runtime_checkable
class BudgetChild(Protocol):
    """A stage that continues a parent run's compute budget (DPO after pretraining)."""

    #: The parent's ComputeBudget state (``gpu_hours``, ``tokens``, ...), None for a first stage.
    parent_budget: dict[str, Any] | None


@runtime_checkable
class UnitData(Protocol):
    """A DataModule of unit sequences: how many units, and which tokeniser made them."""

    #: The number of units K of the data (the model's vocabulary is K + 2), None before setup.
    @property
    def num_units(self) -> int | None:
        """K, as the data's corpora record it."""
        ...

    #: The tokeniser identity of the data's units, None when the data does not record it.
    tokenizer: dict[str, Any] | None


@runtime_checkable
class BenchmarkScores(Protocol):
    """A callback that scored pair benchmarks during training (``BenchmarkEvaluation``): the model
    card of an export reports its latest results without importing the callback (and its audio stack)."""

    #: Benchmark name → accuracy figures of the latest scoring, empty before the first.
    results: dict[str, Any]
    #: The global step of the latest scoring.
    scored_step: int | None
    #: Pairs scored per benchmark (None: all).
    max_pairs: int | None


@runtime_checkable
class TokenizerFolder(Protocol):
    """A DataModule that made (or was given) the saved tokeniser folder of its units."""

    @property
    def tokenizer_dir(self) -> str | os.PathLike[str] | None:
        """The tokeniser folder; the model records it so later stages tokenise speech the same way."""
        ...


def members(protocol: type) -> list[str]:
    """The attribute and method names a protocol of this module declares, sorted."""
    names = set(vars(protocol).get("__annotations__", {}))
    names |= {name for name in vars(protocol) if not name.startswith("_")}
    return sorted(names)


def missing_members(obj: object, protocol: type) -> list[str]:
    """The names ``protocol`` declares that ``obj`` lacks (empty when ``obj`` conforms)."""
    return [name for name in members(protocol) if not hasattr(obj, name)]


def require(obj: object, protocol: type, user: str, fix: str) -> None:
    """Raise one clear line when ``obj`` does not provide ``protocol``.

    Args:
        obj: the LightningModule or DataModule at hand.
        protocol: one of this module's protocols.
        user: who needs it, for the message (e.g. ``"BenchmarkEvaluation"``).
        fix: what the user can do instead (a setting to change).

    Raises:
        SlammingError: naming the class, the protocol and its missing members.
    """
    missing = missing_members(obj, protocol)
    if missing:
        raise SlammingError(
            f"{user} needs a {protocol.__name__} ({', '.join(members(protocol))}); "
            f"{type(obj).__name__} lacks {', '.join(missing)}: {fix}"
        )


def read_num_tokens(outputs: Any) -> Any | None:
    """The ``num_tokens`` of what a stage's ``training_step`` returned (``{"loss", "num_tokens"}``).

    ``num_tokens`` counts the micro-batch's non-ignored targets (an int or a 0-d tensor, returned
    detached); ``None`` for a bare loss or a skipped step. The budget and throughput callbacks read it.
    """
    if isinstance(outputs, Mapping) and "num_tokens" in outputs:
        value = outputs["num_tokens"]
        return value.detach() if hasattr(value, "detach") else int(value)
    return None
