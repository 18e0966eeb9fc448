"""Goal: the PlumDB benchmark runs end to end at tiny sizes and reports sane shapes.

Method: each measurement once with small counts (local operations on memory and
SQLite, repair of a small divergence, resync and round bytes over a small
store, and, between three real processes, replication latency); then the rows
printed as a table. Figures must be positive and finite, and the bytes of a
round over an equal store smaller than over a changed one; speed itself is
never asserted (DESIGN.md, Tests of time).
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
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks.plumdb``, importable however pytest was started."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.plumdb")


def positive(summary: dict[str, float]) -> bool:
    value = summary["median"]
    return math.isfinite(value) and value > 0


async def test_local_repair_and_bytes_at_tiny_sizes(bench: ModuleType) -> None:
    with trio.fail_after(60):
        memory = await bench.measure_local("memory", 50, 1)
        sqlite = await bench.measure_local("sqlite-normal", 20, 1)
        repair = await bench.measure_repair(40, 1, base=50)
        sizes = await bench.measure_bytes(300, 1, changes=(0, 10))
    for figures in (memory, sqlite):
        assert positive(figures["put_per_s"])
        assert positive(figures["get_per_s"])
    assert positive(repair["seconds"])
    assert repair["bytes"][0] > 0
    assert positive(sizes["resync_seconds"])
    equal = sizes["round_bytes"]["0"]["median"]
    changed = sizes["round_bytes"]["10"]["median"]
    assert 0 < equal < changed


@pytest.mark.e2e
async def test_replication_latency_between_three_processes(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(120):
        replication = await bench.measure_replication(3, 1)
    assert positive(replication["p50_ms"])
    assert replication["p50_ms"]["median"] <= replication["p99_ms"]["median"]
    summary = {"median": 1.0, "min": 1.0, "max": 1.0, "spread": 0.0, "samples": [1.0]}
    result = {
        "local": {"memory": {"put_per_s": summary, "get_per_s": summary}},
        "replication": replication,
        "repair": [{"divergent_keys": 10, "seconds": summary}],
        "bytes": [
            {
                "store_keys": 100,
                "resync_seconds": summary,
                "round_bytes": {"0": summary},
            }
        ],
    }
    report = importlib.import_module("benchmarks.report")
    rows = bench.rows(result)
    report.print_table(rows, bench.COLUMNS)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(rows) == 9
