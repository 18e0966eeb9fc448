"""GenServer calls and rpc, locally and between two OS processes, beside the
bare-trio ceiling measured in the same run.

``python -m benchmarks.behaviours`` measures, each figure with a warm-up and R
repetitions (interleaved, so a slow patch of the machine spreads over all of
them):

* GenServer ``call`` on one node (caller and server processes in one trio
  loop): latency p50/p99 with 1 caller, calls/s with 1 and 100 callers;
* the same between two OS processes over TCP on 127.0.0.1 (the server runs in
  a child started as ``--serve``): latency p50/p99 and calls/s with 1 and 100
  concurrent callers, and the runtime's plain send/receive round trip for
  reference;
* ``rpc.call`` of an exported function across the two processes: calls/s and
  p50 with 1 and 100 callers.

The request and the reply are the ceiling's ~150-byte position report. Every
remote figure is printed as a ratio to the ceiling (``benchmarks/ceiling.py``):
latency against the bare ping-pong p50 (DESIGN.md: a call should cost about
1.4-1.5x), throughput against the bare ping-pong round trips per second.
Results go to benchmarks/results/behaviours.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

import runtime
from benchmarks import ceiling, report
from runtime import Node, NodeConfig, NodeSpec, open_node, rpc
from runtime.behaviours import From, GenServer, Reply, call, start

SECRET: Final = "benchmark-secret-0123456789"
PAYLOAD: Final = ceiling.MESSAGE[4]
SERVER: Final = "server@127.0.0.1"
CONCURRENT: Final = 100

_FULL: Final = {"single": 3000, "each": 100, "rtt": 3000}
_QUICK: Final = {"single": 100, "each": 5, "rtt": 100}


def _config(name: str, peers: list[NodeSpec] | None = None) -> NodeConfig:
    return NodeConfig(
        name=name, secret=SECRET, listen=("127.0.0.1", 0), peers=peers or []
    )


class Echo(GenServer[None]):
    """Replies with the request: the call path and nothing else."""

    async def init(self, _: object) -> None:
        return None

    async def handle_call(self, request: Any, from_: From, state: None) -> Any:
        return Reply(request, state)


def echo(value: object) -> object:
    """The exported rpc function."""
    return value


async def _ping() -> None:
    while True:
        for message in await runtime.receive_batch():
            runtime.send(message[0], message[1])  # type: ignore[index]


# ---------------------------------------------------------------- the child


async def _serve() -> None:
    async with open_node(_config(SERVER)) as node:
        assert node.address is not None
        await start(Echo(), name="echo")
        await rpc.export("echo", echo)
        node.spawn(_ping, name="ping")
        print(json.dumps({"port": node.address[1]}), flush=True)
        # The parent joins through us (full-mesh membership); run until it
        # closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


@asynccontextmanager
async def _child() -> AsyncIterator[Node]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "benchmarks.behaviours", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise RuntimeError("benchmark server exited before listening")
                line += chunk
        port = json.loads(line)["port"]
        seed = NodeSpec(name=SERVER, addresses=[("127.0.0.1", port)])
        async with open_node(_config("client@127.0.0.1", peers=[seed])) as node:
            with trio.fail_after(30):
                await node.membership.wait_up([SERVER])
                await node.wait_connected(SERVER)
            yield node
    finally:
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


# --------------------------------------------------------------- measuring


Op = Callable[[], Awaitable[object]]


async def _callers(
    node: Node, op: Op, callers: int, each: int
) -> tuple[list[float], float]:
    """Run *callers* processes doing *each* ops; latencies and ops/s."""
    latencies: list[float] = []
    done = trio.Event()
    remaining = [callers]

    async def caller() -> None:
        now = trio.current_time
        mine = []
        try:
            for _ in range(each):
                start_at = now()
                await op()
                mine.append(now() - start_at)
        finally:
            latencies.extend(mine)
            remaining[0] -= 1
            if not remaining[0]:
                done.set()

    started = trio.current_time()
    for _ in range(callers):
        node.spawn(caller)
    await done.wait()
    elapsed = trio.current_time() - started
    if len(latencies) != callers * each:
        raise RuntimeError("a caller failed (see the log)")
    return latencies, len(latencies) / elapsed


async def _round_trips(node: Node, target: object, count: int) -> list[float]:
    """The runtime's plain send/receive round trip, for reference."""
    samples: list[float] = []
    done = trio.Event()

    async def body() -> None:
        me = runtime.self()
        for _ in range(count):
            started = trio.current_time()
            runtime.send(target, [me, PAYLOAD])
            await runtime.receive()
            samples.append(trio.current_time() - started)
        done.set()

    node.spawn(body)
    await done.wait()
    return samples


async def measure_behaviours(
    repetitions: int = 5, *, quick: bool = False
) -> dict[str, Any]:
    """The figures (medians over *repetitions*, after a warm-up)."""
    counts = _QUICK if quick else _FULL
    single, each = counts["single"], counts["each"]
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    async with _child() as node:
        local = await start(Echo())

        def local_call() -> Awaitable[object]:
            return call(local, PAYLOAD)

        remote = ("echo", SERVER)

        def remote_call() -> Awaitable[object]:
            return call(remote, PAYLOAD)

        def rpc_call() -> Awaitable[object]:
            return rpc.call(SERVER, "echo", [PAYLOAD])

        ops = {"local": local_call, "remote": remote_call, "rpc": rpc_call}
        # Warm-up of every path.
        for op in ops.values():
            await _callers(node, op, 1, max(10, single // 5))
            await _callers(node, op, CONCURRENT, max(2, each // 5))
        await _round_trips(node, ("ping", SERVER), max(10, counts["rtt"] // 5))
        for _ in range(repetitions):
            trips = await _round_trips(node, ("ping", SERVER), counts["rtt"])
            add("ping_p50_us", report.percentile(trips, 0.5) * 1e6)
            for kind, op in ops.items():
                latencies, rate = await _callers(node, op, 1, single)
                add(f"{kind}_1_p50_us", report.percentile(latencies, 0.5) * 1e6)
                add(f"{kind}_1_p99_us", report.percentile(latencies, 0.99) * 1e6)
                add(f"{kind}_1_per_s", rate)
                latencies, rate = await _callers(node, op, CONCURRENT, each)
                add(f"{kind}_100_p50_us", report.percentile(latencies, 0.5) * 1e6)
                add(f"{kind}_100_p99_us", report.percentile(latencies, 0.99) * 1e6)
                add(f"{kind}_100_per_s", rate)
        stats = node.statistics()
    return {
        "counts": {**counts, "concurrent_callers": CONCURRENT},
        "figures": {name: report.summarize(values) for name, values in figures.items()},
        "client_refused": stats.refused,
        "client_dropped_no_target": stats.dropped_no_target_count,
    }


TABLE_COLUMNS: Final = [
    "figure",
    "unit",
    "median",
    "spread",
    "ceiling",
    "ratio",
    "note",
]


def behaviours_rows(
    result: dict[str, Any], base: dict[str, Any]
) -> list[dict[str, Any]]:
    """Table rows: each figure, with its ratio to the ceiling where one applies."""
    f = result["figures"]
    ping = base["ping_pong"]["p50_us"]["median"]
    ping99 = base["ping_pong"]["p99_us"]["median"]
    trips = base["ping_pong"]["round_trips_per_s"]["median"]
    rows: list[tuple[str, str, str, float | None, str]] = [
        ("runtime send/receive round trip p50", "us", "ping_p50_us", ping, ""),
        ("GenServer call, remote, 1 caller p50", "us", "remote_1_p50_us", ping,
         "aim <= 1.5x"),
        ("GenServer call, remote, 1 caller p99", "us", "remote_1_p99_us", ping99, ""),
        ("GenServer call, remote, 1 caller", "calls/s", "remote_1_per_s", trips, ""),
        ("GenServer call, remote, 100 callers", "calls/s", "remote_100_per_s", trips,
         "DESIGN: ~9x"),
        ("GenServer call, remote, 100 callers p50", "us", "remote_100_p50_us", None,
         ""),
        ("GenServer call, remote, 100 callers p99", "us", "remote_100_p99_us", None,
         ""),
        ("rpc.call, remote, 1 caller p50", "us", "rpc_1_p50_us", ping, ""),
        ("rpc.call, remote, 1 caller", "calls/s", "rpc_1_per_s", trips, ""),
        ("rpc.call, remote, 100 callers", "calls/s", "rpc_100_per_s", trips, ""),
        ("rpc.call, remote, 100 callers p99", "us", "rpc_100_p99_us", None, ""),
        ("GenServer call, local, 1 caller p50", "us", "local_1_p50_us", None, ""),
        ("GenServer call, local, 1 caller p99", "us", "local_1_p99_us", None, ""),
        ("GenServer call, local, 1 caller", "calls/s", "local_1_per_s", None, ""),
        ("GenServer call, local, 100 callers", "calls/s", "local_100_per_s", None, ""),
        ("GenServer call, local, 100 callers p99", "us", "local_100_p99_us", None, ""),
    ]  # fmt: skip
    table = []
    for name, unit, key, base_value, note in rows:
        summary = f[key]
        spread = summary["spread"]
        table.append(
            {
                "figure": name,
                "unit": unit,
                "median": summary["median"],
                "spread": f"{spread:.0%}",
                "ceiling": base_value,
                "ratio": (
                    f"{summary['median'] / base_value:.2f}x" if base_value else ""
                ),
                "note": (
                    f"{note}; rerun: spread > 25%" if note else "rerun: spread > 25%"
                )
                if spread > report.SPREAD_RERUN
                else note,
            }
        )
    return table


async def _main(repetitions: int, *, quick: bool) -> None:
    info = report.machine_info()
    print(
        f"behaviours: Python {info['python']}, trio {info['versions']['trio']}, "
        f"cbor2 {info['versions']['cbor2']}, {info['cpu_count']} CPUs, "
        f"load {info['load_average']}"
    )
    base = await ceiling.measure_ceiling(repetitions, quick=quick)
    result = await measure_behaviours(repetitions, quick=quick)
    print("\nbare trio ceiling (two processes):")
    report.print_table(ceiling.ceiling_rows(base), ceiling.TABLE_COLUMNS)
    print(
        f"\nGenServer calls and rpc ({repetitions} repetitions, "
        f"{CONCURRENT} concurrent callers where said), ratios to the ceiling:"
    )
    rows = behaviours_rows(result, base)
    report.print_table(rows, TABLE_COLUMNS)
    path = report.write_json(
        "behaviours",
        {
            "machine": info,
            "repetitions": repetitions,
            "quick": quick,
            "ceiling": base,
            "behaviours": result,
            "table": rows,
        },
    )
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.behaviours``: measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.behaviours")
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke-test counts")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(_serve)
    else:
        trio.run(functools.partial(_main, args.repetitions, quick=args.quick))


if __name__ == "__main__":
    main()
