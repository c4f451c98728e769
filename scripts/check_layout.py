"""House rules that import-linter cannot express, checked by `make lint` and tests/test_layers.py.

1. No private name crosses modules: ``from slamming.x import _name`` (or ``import`` of a private
   module attribute) is allowed only inside the module that defines it.
2. No module of the package exceeds ``MAX_LINES`` lines (files of one concept each).
3. ``src/slamming/data/`` holds subpackages only: no module at its top level but ``__init__.py``.

Usage: ``python scripts/check_layout.py [SRC_DIR]`` (default ``src``); prints one line per
violation and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 450


def private_imports(src: Path) -> list[str]:
    """``file:line: imports private NAME from MODULE`` for every cross-module private import."""
    found = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slamming"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(
                            f"{path}:{node.lineno}: imports private {alias.name} from {node.module}; "
                            "make it public or move the code that needs it"
                        )
    return found


def long_modules(src: Path) -> list[str]:
    """``file: N lines`` for every module over :data:`MAX_LINES`."""
    found = []
    for path in sorted(src.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found.append(f"{path}: {lines} lines (at most {MAX_LINES}); split it by concept")
    return found


def loose_data_modules(src: Path) -> list[str]:
    """Modules at the top level of ``slamming/data`` other than ``__init__.py``."""
    data = src / "slamming" / "data"
    return [
        f"{path}: data/ holds subpackages only; move it into the subpackage of its concept"
        for path in sorted(data.glob("*.py"))
        if path.name != "__init__.py"
    ]


def check(src: Path) -> list[str]:
    """Every violation of the three rules under ``src``."""
    return private_imports(src) + long_modules(src) + loose_data_modules(src)


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path("src")
    problems = check(src)
    for line in problems:
        print(line)
    if not problems:
        print(
            f"layout: {src} keeps the house rules (no private imports across modules, modules ≤ {MAX_LINES} lines)"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
