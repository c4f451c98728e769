"""Lazy re-exports: a package names its public classes without importing their modules up front.

Each subpackage's ``__init__`` maps public names to the module that defines them. The module is
imported on first access (PEP 562 ``__getattr__``), so ``slamming.data.UnitDataModule`` resolves for a
config's ``class_path`` while ``import slamming.data.pretrain.packing`` stays as light as that one
module (``scripts/gpu_check.py`` runs without Lightning or fairseq2 installed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``names[attr]`` on first use.

    Args:
        package: the package's ``__name__``.
        names: public name → module path relative to ``package`` (``".writer"``) or absolute.

    Returns:
        The pair to assign to the package's ``__getattr__`` and ``__dir__``.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
