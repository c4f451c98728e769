"""`make test` starts the long test modules first (tests/conftest.py): the list must name real modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LONG_MODULES

REPO = Path(__file__).resolve().parent.parent


def test_long_modules_exist_and_are_collected_first(request: pytest.FixtureRequest) -> None:
    missing = [m for m in LONG_MODULES if not (REPO / m).is_file()]
    assert missing == [], f"LONG_MODULES names files that do not exist: {missing}"
    collected = [item.nodeid.split("::", 1)[0] for item in request.session.items]
    present = [m for m in LONG_MODULES if m in collected]
    # Those collected in this run lead the collection, in LONG_MODULES order, each module's tests together.
    modules_in_order = list(dict.fromkeys(collected))
    assert modules_in_order[: len(present)] == present
    assert sorted(collected, key=modules_in_order.index) == collected
