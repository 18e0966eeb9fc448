"""Goal: the behaviours benchmark runs end to end and prints its table.

Method: one quick repetition of every figure against a real child process;
check that every figure is a positive number and that the child is gone.
Speed is never asserted (DESIGN.md, Tests of time).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def behaviours(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks.behaviours`` (``benchmarks`` is not an installed package)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.behaviours")


def _fake_base(value: float) -> dict[str, object]:
    summary = {"median": value, "min": value, "max": value, "spread": 0.0}
    return {
        "ping_pong": {
            "p50_us": summary,
            "p99_us": summary,
            "round_trips_per_s": summary,
        }
    }


@pytest.mark.e2e
async def test_quick_behaviours_benchmark_gives_positive_figures(
    behaviours: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(120):
        result = await behaviours.measure_behaviours(repetitions=1, quick=True)
    figures = result["figures"]
    for kind in ("local", "remote", "rpc"):
        for name in ("1_p50_us", "1_per_s", "100_per_s", "100_p99_us"):
            value = figures[f"{kind}_{name}"]["median"]
            assert math.isfinite(value), (kind, name)
            assert value > 0, (kind, name)
    rows = behaviours.behaviours_rows(result, _fake_base(100.0))
    report = importlib.import_module("benchmarks.report")
    report.print_table(rows, behaviours.TABLE_COLUMNS)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(rows)
    assert any("aim <= 1.5x" in line for line in lines)
