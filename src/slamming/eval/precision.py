"""Scoring precision: score a unit LM in fp32, as the authors do, whatever precision it trains in.

A model may hold bf16 weights (a ``bf16-true`` run, a bf16 export, the authors' later pure-bf16
config), but the authors score in fp32 (slamkit's default model config loads weights with
``torch_dtype: null``, slam-recipe §1.5b). bf16 keeps 8 bits of mantissa: running
the same weights in bf16 moves the mean per-unit log-likelihood of a sequence (by about 3e-4
already for the 2-layer model of the tests; rounding errors add up over layers), which is enough
to flip close benchmark pairs and to change sampled continuations. So every scoring
path of slamming (``slamming test``, the in-training :class:`~slamming.callbacks.BenchmarkEvaluation`,
``slamming predict``) scores in :data:`SCORING_DTYPE` unless told otherwise, through
:func:`scoring_model`.

:func:`scoring_model` leaves the model it is given as it was: weights, dtype, gradients, train/eval
flags, and the random state (scoring draws nothing). When the weights already have the scoring
dtype (fp32 weights under ``bf16-mixed`` autocast) it scores them in place with autocast off. When
they do not (``bf16-true`` training), it scores a temporary copy whose weights are cast one tensor at
a time, so the copy costs 4 bytes per parameter (1.4 GB for the paper's 358M model) only while
scoring, with no intermediate copy in the training dtype. Casting the training model in place and
back would be exact (bf16 → fp32 → bf16 loses nothing) and free, but it would swap the storage of
every parameter under the optimizer and DDP's gradient buckets and recompile a compiled model; the
copy touches none of them.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator

import torch

from slamming.errors import SlammingError
from slamming.models.unit_lm import DTYPES

__all__ = ["SCORING_DTYPE", "check_dtype", "scoring_model"]

#: The dtype every scoring path uses by default (the authors score in fp32).
SCORING_DTYPE = "float32"


def check_dtype(dtype: str | None, setting: str) -> None:
    """Refuse a dtype name that is not ``float32``, ``bfloat16``, ``float16`` or None.

    Raises:
        SlammingError: one line naming ``setting`` and the choices.
    """
    if dtype is not None and dtype not in DTYPES:
        raise SlammingError(f"{setting} must be one of {sorted(DTYPES)} or null, got {dtype!r}")


def _cast_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A deep copy of ``model`` with every floating parameter and buffer cast to ``dtype``.

    The cast tensors are handed to ``deepcopy`` through its memo, so it never copies them in the
    original dtype first; a tensor shared by two modules (tied embeddings) stays shared.
    """
    memo: dict[int, object] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point() and id(tensor) not in memo:
            cast = tensor.detach().to(dtype)
            is_param = isinstance(tensor, torch.nn.Parameter)
            memo[id(tensor)] = torch.nn.Parameter(cast, requires_grad=False) if is_param else cast
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def scoring_model(model: torch.nn.Module, dtype: str | None = SCORING_DTYPE) -> Iterator[torch.nn.Module]:
    """Yield the model to score with, in eval mode; ``model`` is left exactly as it was.

    Args:
        model: The unit LM (a ``transformers`` causal LM or any module).
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``: score with weights of that dtype
            and autocast off. None: score ``model`` as it is, under whatever autocast is active.

    Yields:
        ``model`` itself when its floating weights already have ``dtype`` (or ``dtype`` is None),
        else a temporary copy cast to ``dtype`` (see the module docstring for its memory cost).
    """
    check_dtype(dtype, "the scoring dtype")
    tensors = [t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()]
    target = None if dtype is None else DTYPES[dtype]
    if target is not None and any(t.dtype != target for t in tensors):
        scorer = _cast_copy(model, target).eval()
        try:
            with _autocast_off(tensors):
                yield scorer
        finally:
            del scorer
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with _autocast_off(tensors) if target is not None else contextlib.nullcontext():
            yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _autocast_off(tensors: list[torch.Tensor]) -> Iterator[None]:
    """Autocast disabled on the device of ``tensors`` and on the CPU."""
    device = tensors[0].device.type if tensors else "cpu"
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys((device, "cpu")):
            stack.enter_context(torch.autocast(device_type=kind, enabled=False))
        yield
