"""Goal: the membership benchmark's simulator section runs and reports its shape.

Method: a tiny run (200 nodes, two rounds) through ``measure_simulator`` and the
table rows; check every figure is a finite positive number and reliability a
share. Speed is never asserted: figures belong in benchmark runs.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def membership(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks.membership``, importable however pytest was started."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.membership")


def test_a_small_simulator_run_gives_figures_and_rows(membership: ModuleType) -> None:
    result = membership.measure_simulator(nodes=200, fail=0.5, seed=1, rounds=2)
    assert result["parameters"]["nodes"] == 200
    for name, summary in result["figures"].items():
        assert len(summary["samples"]) == 1, name
        assert math.isfinite(summary["median"]), name
        assert summary["median"] > 0, name
    reliability = result["reliability"]
    assert len(reliability) == 3
    assert all(0.0 < value <= 1.0 for value in reliability)
    rows = membership.simulator_rows(result)
    assert rows[0]["figure"].startswith("200-node failure run")
    assert all(set(row) == set(membership.TABLE_COLUMNS) for row in rows)
