"""``torch.compile`` where it can work, eager with one logged line where it cannot.

Inductor turns graphs into C++ (CPU) or Triton (CUDA, whose launchers are built with a C compiler)
at the first step. On a machine without a compiler that first step would crash deep inside
inductor; :func:`compile_or_eager` checks first and keeps the model eager instead.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


def compiler_missing(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device_type`` here, or None when it can."""
    if device_type == "cuda":
        names = [os.environ.get("CC"), "cc", "gcc", "clang"]
        if not any(name and shutil.which(name) for name in names):
            return "no C compiler (cc, gcc or clang, or $CC) for Triton's kernel launchers"
        return None
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except (InvalidCxxCompiler, OSError):
        wanted = ", ".join(str(c) for c in config.cpp.cxx if c)
        return f"no C++ compiler ({wanted}; set $CXX) for inductor's CPU kernels"
    return None


def compile_or_eager(model: torch.nn.Module, device_type: str) -> torch.nn.Module:
    """``torch.compile(model)``, or ``model`` itself (one logged line) when no compiler is present."""
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        return model
    reason = compiler_missing(device_type)
    if reason is not None:
        log.warning("compile: true but %s: training eagerly (install one to compile)", reason)
        return model
    return torch.compile(model)


def graphs_compiled() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's ``unique_graphs`` counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
