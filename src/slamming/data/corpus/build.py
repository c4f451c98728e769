"""Build a data folder atomically: write into ``<out_dir>.partial``, rename it when complete.

The builders of spoken data (preference triples, embedded benchmarks) take minutes and may be
interrupted; a folder that holds ``done.json`` must therefore always be whole. Everything is written
into a sibling ``.partial`` folder (a stale one, left by an interrupted build of ours, is removed
first), ``done.json`` is written last, and the folder is renamed into place; on any error the partial
folder is removed and nothing is left at ``out_dir``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_build(out_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield ``(partial folder, done)``; fill ``done`` with the summary to write as ``done.json``.

    On a clean exit ``done.json`` is written into the partial folder, which is then renamed to
    ``out_dir``; on an exception the partial folder is removed and the exception propagates.
    """
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():  # left by an interrupted build of ours
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    done: dict[str, Any] = {}
    try:
        yield partial, done
        (partial / "done.json").write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
