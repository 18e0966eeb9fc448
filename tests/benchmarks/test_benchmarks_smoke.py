"""Goal: the ceiling benchmark runs end to end and cleans up after itself.

Method: one quick repetition of every figure between two real processes; check
the shape and that every figure is a positive number, and that the child server
is gone afterwards. Speed is never asserted: figures belong in benchmark runs,
not in tests (DESIGN.md, Tests of time).
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ceiling(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The ``benchmarks.ceiling`` module, importable however pytest was started.

    ``benchmarks`` is not an installed package and ``--import-mode=importlib``
    does not put the repository root on ``sys.path``.
    """
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.ceiling")


def _figures(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "p50_us": result["ping_pong"]["p50_us"],
        "p99_us": result["ping_pong"]["p99_us"],
        "round_trips_per_s": result["ping_pong"]["round_trips_per_s"],
        "pipelined_msg_per_s": result["one_way_pipelined"]["msg_per_s"],
        "unbatched_msg_per_s": result["one_way_unbatched"]["msg_per_s"],
        "bulk_mb_per_s": result["bulk"]["mb_per_s"],
    }


@pytest.mark.e2e
async def test_quick_ceiling_gives_positive_figures_and_stops_its_child(
    ceiling: ModuleType,
) -> None:
    with trio.fail_after(60):
        result = await ceiling.measure_ceiling(repetitions=1, quick=True)

    assert 140 <= result["message_bytes"] <= 170
    assert result["repetitions"] == 1
    assert result["quick"] is True
    for name, summary in _figures(result).items():
        assert len(summary["samples"]) == 1, name
        value = summary["median"]
        assert math.isfinite(value), name
        assert value > 0, name
        assert summary["min"] <= value <= summary["max"], name
    assert (
        result["ping_pong"]["p50_us"]["median"]
        <= result["ping_pong"]["p99_us"]["median"]
    )

    child = result["child"]
    assert child["returncode"] is not None  # exited and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(child["pid"], 0)


def test_ceiling_rows_print_as_a_table(
    ceiling: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    report = importlib.import_module("benchmarks.report")
    summary = report.summarize([1.0, 2.0, 4.0])
    assert summary["median"] == 2.0
    assert summary["spread"] == pytest.approx(1.5)
    result = {
        "ping_pong": {
            "p50_us": summary,
            "p99_us": summary,
            "round_trips_per_s": summary,
        },
        "one_way_pipelined": {"frames_per_send": 128, "msg_per_s": summary},
        "one_way_unbatched": {"msg_per_s": summary},
        "bulk": {"mb_per_s": summary},
    }
    rows = ceiling.ceiling_rows(result)
    report.print_table(rows, ceiling.TABLE_COLUMNS)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(rows)
    assert "rerun" in lines[2]
