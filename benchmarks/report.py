"""Helpers every benchmark uses: machine facts, summaries of repetitions, output.

Absolute figures move from machine to machine and run to run, so a benchmark
reports each figure as the median of repetitions together with their spread, and
records the machine it ran on beside the figures (shared/TARGETS.md). These
helpers keep that reporting identical across benchmarks, so results can be
compared and ratios against the ceiling computed from the same shapes.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

__all__ = [
    "RESULTS_DIR",
    "SPREAD_RERUN",
    "format_value",
    "machine_info",
    "percentile",
    "print_table",
    "summarize",
    "write_json",
]

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
"""Where :func:`write_json` writes; git-ignored, results are not source."""

SPREAD_RERUN: Final = 0.25
"""A figure whose repetitions spread more than this is not trusted: rerun it
(DESIGN.md, Decisions, "The benchmark ceiling")."""

_PACKAGES: Final = ("trio", "cbor2", "attrs")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cbor2_is_compiled() -> bool | None:
    """Whether cbor2's codec is its C extension (None: cbor2 is not installed).

    Asked of the functions themselves, since the extension's module name has
    moved between cbor2 releases.
    """
    try:
        import cbor2
    except ImportError:
        return None
    return isinstance(cbor2.loads, types.BuiltinFunctionType) and isinstance(
        cbor2.dumps, types.BuiltinFunctionType
    )


def machine_info() -> dict[str, Any]:
    """Facts about this machine and run that the figures depend on.

    Recorded beside every result because a figure without them cannot be
    compared: the cbor2 C extension alone changes the codec cost several times
    over, and the core count decides whether two processes compete for one CPU.
    """
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in _PACKAGES},
        "cbor2_c_extension": _cbor2_is_compiled(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity(0)) if affinity is not None else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        # Contention from other work on the machine (a figure taken while
        # another job holds a core is not the machine's figure).
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # Allocator settings change the bulk figures several times over where
        # page faults are dear (fresh memory for every large buffer).
        "environment": {
            name: os.environ[name]
            for name in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "PYTHONMALLOC")
            if name in os.environ
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in (0, 1]) of *samples*.

    Nearest rank rather than interpolation: a reported p99 is then a latency
    that was actually observed.
    """
    if not samples:
        raise ValueError("no samples")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction {fraction} not in (0, 1]")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and spread of one figure's repetitions.

    ``spread`` is ``(max - min) / median``: how far the repetitions disagree,
    relative to the figure. Above :data:`SPREAD_RERUN` the figure should be
    rerun rather than trusted. The samples themselves are kept too, so a result
    file shows every repetition and not only what was made of them.
    """
    if not samples:
        raise ValueError("no samples")
    median = statistics.median(samples)
    low, high = min(samples), max(samples)
    spread = (high - low) / median if median else math.inf
    return {
        "median": median,
        "min": low,
        "max": high,
        "spread": spread,
        "samples": list(samples),
    }


def format_value(value: object) -> str:
    """A table cell: thousands separators, and fewer decimals as numbers grow.

    Benchmark figures span microseconds to hundreds of thousands of messages a
    second; a fixed format would either hide the small ones or clutter the big.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print *rows* as an aligned plain-text table with *columns* in that order.

    Plain text, so it reads the same in a terminal, a CI log and a pasted note.
    Numbers are right-aligned and text left-aligned; a missing cell prints "-".
    """
    cells = [[format_value(row.get(column)) for column in columns] for row in rows]
    numeric = [
        all(
            isinstance(row.get(column), int | float) or row.get(column) is None
            for row in rows
        )
        and any(isinstance(row.get(column), int | float) for row in rows)
        for column in columns
    ]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)])
        for i, column in enumerate(columns)
    ]

    def render(values: list[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(render(columns))
    print("  ".join("-" * width for width in widths))
    for line in cells:
        print(render(line))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write *payload* to ``benchmarks/results/<name>.json``; return the path.

    One file per benchmark, overwritten by each run: the newest result is the
    one to read, and history belongs in the notes that quote it.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad result name {name!r}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
