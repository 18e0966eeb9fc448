"""PlumDB figures: local operations, replication latency, anti-entropy repair.

``python -m benchmarks.plumdb [-r R] [--quick]`` measures, each figure over R
repetitions (median, min, max, spread):

* **Local put and get per second** through the service (``PlumDB.put`` /
  ``get`` on a lone node: the store write, its tree update, and the hand-over
  to the broadcast group), on the memory backend and on SQLite with
  ``synchronous=FULL`` (an fsync per write) and ``NORMAL``.
* **Replication latency**, three OS processes (``plumdb node``, memory
  backend, full mesh over TCP on 127.0.0.1): a put on the first, then the time
  until each of the other two delivers the change to a subscriber, measured
  with ``time.monotonic_ns()`` in each process (one clock on one machine).
  Puts are sequential (each waits for both deliveries): latency without load.
* **Anti-entropy repair after a partition**: two nodes in this process over
  TCP, broadcast off (so writes on one side stay there, as in a network
  partition), both holding a common base; then N divergent keys (N/2 new on
  each side) and we time one full round (``synchronize``: every partition,
  truncated exchanges continued) until both sides hold everything. One
  process runs both nodes, so the time includes both sides' CPU.
* **Full resync** of an empty node from a node of S keys (the sync path), and
  **bytes exchanged** by a full round over S keys with 0, 10 and 100 keys
  changed: the cost must follow the difference, not S.

Results go to ``benchmarks/results/plumdb.json`` with the machine's facts.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, Literal

import trio

from benchmarks import report
from plumdb import PlumDB, PlumDBConfig, SqliteConfig, open_plumdb
from runtime import NodeConfig, NodeSpec, open_node
from runtime.cli import DEFAULT_SECRET_ENV, NodeProcess, start_node_process

__all__ = [
    "measure_bytes",
    "measure_local",
    "measure_repair",
    "measure_replication",
    "run",
]

SECRET: Final = "benchmark-plumdb-secret-0123456789"
FP: Final = ("bench", "twins")
# An IoT twin's state, of the size of shared/TARGETS.md's message.
VALUE: Final = {
    "device": "sensor-000042",
    "position": [48.8566, 2.3522, 35.0],
    "battery": 87,
    "status": "ok",
    "ts": 1_700_000_000_000,
    "tags": ["fleet-7", "eu-west"],
}
DEADLINE: Final = 600.0
# The anti-entropy benchmarks drive exchanges themselves.
QUIET: Final = PlumDBConfig(broadcast_enabled=False, exchange_interval=1e6)


def _config(name: str, peers: list[NodeSpec] | None = None) -> NodeConfig:
    return NodeConfig(
        name=name, secret=SECRET, listen=("127.0.0.1", 0), peers=peers or []
    )


# ----------------------------------------------------------- local operations


async def measure_local(
    backend: Literal["memory", "sqlite-full", "sqlite-normal"],
    count: int,
    repetitions: int,
) -> dict[str, Any]:
    """Puts and gets per second through one lone node's PlumDB."""
    puts: list[float] = []
    gets: list[float] = []
    synchronous: Literal["FULL", "NORMAL"] = (
        "FULL" if backend == "sqlite-full" else "NORMAL"
    )
    config = PlumDBConfig(sqlite=SqliteConfig(synchronous=synchronous))
    with tempfile.TemporaryDirectory() as tmp:
        path = None if backend == "memory" else os.path.join(tmp, "bench.sqlite")
        async with (
            open_node(_config("local@127.0.0.1")) as node,
            open_plumdb(node, path=path, config=config) as db,
        ):
            for rep in range(repetitions + 1):  # the first is a warm-up
                started = time.perf_counter()
                for n in range(count):
                    db.put(FP, (rep, n), VALUE)
                put_s = time.perf_counter() - started
                started = time.perf_counter()
                for n in range(count):
                    db.get(FP, (rep, n))
                get_s = time.perf_counter() - started
                await trio.lowlevel.checkpoint()
                if rep:
                    puts.append(count / put_s)
                    gets.append(count / get_s)
    return {
        "count": count,
        "put_per_s": report.summarize(puts),
        "get_per_s": report.summarize(gets),
    }


# ------------------------------------------------------- replication latency


async def _wait_change(node: NodeProcess, key: list[object]) -> dict[str, Any]:
    return await node.wait_event(
        lambda e: e.get("event") == "change" and e.get("key") == key,
        timeout=60.0,
    )


async def measure_replication(count: int, repetitions: int) -> dict[str, Any]:
    """Put on one process, visible on two others: latency percentiles (ms)."""
    environ = {k: v for k, v in os.environ.items() if k != DEFAULT_SECRET_ENV}
    secret = secrets.token_urlsafe(32)
    names = [f"r{i}@127.0.0.1" for i in range(3)]
    p50: list[float] = []
    p99: list[float] = []
    samples_all: list[float] = []
    async with trio.open_nursery() as nursery:
        nodes: list[NodeProcess] = []
        try:
            seed: list[str] = []
            for name in names:
                node = await start_node_process(
                    nursery,
                    name,
                    secret=secret,
                    env=environ,
                    module="plumdb.cli",
                    args=["--membership", "full_mesh", "--log-level", "warning", *seed],
                )
                nodes.append(node)
                host, port = await node.listening(timeout=60.0)
                if not seed:
                    seed = ["--peer", f"{name}={host}:{port}"]
            with trio.fail_after(60.0):
                for node in nodes:
                    while len((await node.request({"cmd": "members"}))["up"]) < 2:  # noqa: ASYNC110
                        await trio.sleep(0.05)
            writer, *readers = nodes
            for reader in readers:
                await reader.request(
                    {"cmd": "subscribe", "prefix": FP[0], "subprefix": FP[1]}
                )
            for rep in range(repetitions + 1):  # the first is a warm-up
                samples: list[float] = []
                for n in range(count):
                    key: list[object] = [rep, n]
                    reply = await writer.request(
                        {
                            "cmd": "put",
                            "prefix": FP[0],
                            "subprefix": FP[1],
                            "key": key,
                            "value": VALUE,
                        }
                    )
                    for reader in readers:
                        change = await _wait_change(reader, key)
                        samples.append(
                            (change["monotonic_ns"] - reply["monotonic_ns"]) / 1e6
                        )
                if rep:
                    p50.append(report.percentile(samples, 0.5))
                    p99.append(report.percentile(samples, 0.99))
                    samples_all.extend(samples)
        finally:
            for node in nodes:
                await node.aclose()
            nursery.cancel_scope.cancel()
    return {
        "count": count,
        "receivers": 2,
        "p50_ms": report.summarize(p50),
        "p99_ms": report.summarize(p99),
        "max_ms": max(samples_all),
    }


# ------------------------------------------------------------- anti-entropy


@asynccontextmanager
async def _pair(config: PlumDBConfig) -> AsyncIterator[tuple[PlumDB, PlumDB]]:
    """Two nodes over TCP in this process, each with an in-memory PlumDB."""
    async with AsyncExitStack() as stack:
        a_node = await stack.enter_async_context(open_node(_config("a@127.0.0.1")))
        b_node = await stack.enter_async_context(open_node(_config("b@127.0.0.1")))
        a = await stack.enter_async_context(open_plumdb(a_node, config=config))
        b = await stack.enter_async_context(open_plumdb(b_node, config=config))
        # Joined once both run PlumDB, so the rounds at node up find it there.
        b_node.membership.join(a_node.spec())
        with trio.fail_after(60.0):
            while not a_node.membership.is_up(b_node.name) or not (  # noqa: ASYNC110
                b_node.membership.is_up(a_node.name)
            ):
                await trio.sleep(0.01)
        await _settled([a, b])
        yield a, b


async def _settled(dbs: list[PlumDB]) -> None:
    """Wait until no exchange runs or is queued (the rounds at node up)."""
    with trio.fail_after(DEADLINE):
        while any(  # noqa: ASYNC110
            (s := db.statistics().anti_entropy).sessions_open or s.jobs_queued
            for db in dbs
        ):
            await trio.sleep(0.01)


def _fill(db: PlumDB, prefix: str, count: int, value: object = VALUE) -> None:
    for n in range(count):
        db.put((prefix, "k"), n, value)


def _stored(db: PlumDB) -> int:
    store = db.store
    return sum(len(store.tree(p)) for p in range(store.partition_count))


async def measure_repair(
    divergent: int, repetitions: int, *, base: int = 1000
) -> dict[str, Any]:
    """Seconds for one full round to repair *divergent* keys (both sides)."""
    seconds: list[float] = []
    keys_per_s: list[float] = []
    outcomes_bytes: list[int] = []
    async with _pair(QUIET) as (a, b):
        _fill(a, "base", base)
        await b.synchronize(a.node.name)
        for rep in range(repetitions):
            _fill(a, f"a{rep}", divergent // 2)
            _fill(b, f"b{rep}", divergent - divergent // 2)
            started = time.perf_counter()
            outcomes = await a.synchronize(b.node.name)
            elapsed = time.perf_counter() - started
            if _stored(a) != _stored(b):
                raise AssertionError("one round did not repair everything")
            seconds.append(elapsed)
            keys_per_s.append(divergent / elapsed)
            outcomes_bytes.append(
                sum(o.bytes_sent_count + o.bytes_received_count for o in outcomes)
            )
    return {
        "divergent_keys": divergent,
        "base_keys": base,
        "seconds": report.summarize(seconds),
        "keys_per_s": report.summarize(keys_per_s),
        "bytes": outcomes_bytes,
    }


async def measure_bytes(
    store_keys: int, repetitions: int, changes: tuple[int, ...] = (0, 10, 100)
) -> dict[str, Any]:
    """Full resync of an empty node, and bytes of a round per small difference."""
    resync: list[float] = []
    figures: dict[int, list[int]] = {change: [] for change in changes}
    for _ in range(repetitions):
        async with _pair(QUIET) as (a, b):
            _fill(a, "big", store_keys)
            started = time.perf_counter()
            await b.synchronize(a.node.name)
            resync.append(time.perf_counter() - started)
            if _stored(b) != store_keys:
                raise AssertionError("the resync missed keys")
            for change in changes:
                for n in range(change):
                    a.put(("big", "k"), n, {"changed": change})
                outcomes = await a.synchronize(b.node.name)
                figures[change].append(
                    sum(o.bytes_sent_count + o.bytes_received_count for o in outcomes)
                )
    return {
        "store_keys": store_keys,
        "resync_seconds": report.summarize(resync),
        "round_bytes": {
            str(change): report.summarize([float(v) for v in values])
            for change, values in figures.items()
        },
    }


# ------------------------------------------------------------------- output


async def run(
    repetitions: int, *, quick: bool, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every figure; the JSON-ready result."""
    local_count = 500 if quick else 5000
    sizes = (100, 1000) if quick else (1_000, 10_000, 100_000)
    stores = (2000,) if quick else (10_000, 100_000)
    result: dict[str, Any] = {"local": {}, "repair": [], "bytes": []}
    for backend in ("memory", "sqlite-normal", "sqlite-full"):
        count = local_count if backend != "sqlite-full" else local_count // 10
        progress(f"local {backend}...")
        result["local"][backend] = await measure_local(backend, count, repetitions)  # type: ignore[arg-type]
    progress("replication latency (3 processes)...")
    result["replication"] = await measure_replication(20 if quick else 200, repetitions)
    for size in sizes:
        progress(f"repair of {size:,} divergent keys...")
        result["repair"].append(await measure_repair(size, repetitions))
    for size in stores:
        progress(f"resync and round bytes over {size:,} keys...")
        result["bytes"].append(await measure_bytes(size, repetitions))
    return result


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result as table rows."""
    table: list[dict[str, Any]] = []

    def add(figure: str, unit: str, summary: dict[str, Any]) -> None:
        table.append(
            {
                "figure": figure,
                "unit": unit,
                "median": summary["median"],
                "min": summary["min"],
                "max": summary["max"],
                "spread": f"{summary['spread']:.0%}"
                + (" rerun" if summary["spread"] > report.SPREAD_RERUN else ""),
            }
        )

    for backend, figures in result["local"].items():
        add(f"put, {backend}", "ops/s", figures["put_per_s"])
        add(f"get, {backend}", "ops/s", figures["get_per_s"])
    replication = result["replication"]
    add("replication p50 (3 processes)", "ms", replication["p50_ms"])
    add("replication p99 (3 processes)", "ms", replication["p99_ms"])
    for repair in result["repair"]:
        add(
            f"repair {repair['divergent_keys']:,} divergent keys",
            "s",
            repair["seconds"],
        )
    for figures in result["bytes"]:
        size = figures["store_keys"]
        add(f"full resync, empty node, {size:,} keys", "s", figures["resync_seconds"])
        for change, summary in figures["round_bytes"].items():
            add(f"round bytes, {change} changed of {size:,}", "bytes", summary)
    return table


COLUMNS: Final = ["figure", "unit", "median", "min", "max", "spread"]


async def _main(repetitions: int, *, quick: bool) -> None:
    result = await run(repetitions, quick=quick)
    table = rows(result)
    print()
    report.print_table(table, COLUMNS)
    path = report.write_json(
        "plumdb",
        {
            "machine": report.machine_info(),
            "repetitions": repetitions,
            "quick": quick,
            "network": {
                "local": "one node, no peers",
                "replication": "3 OS processes, TCP on 127.0.0.1, memory backend",
                "repair": "2 nodes in one process, TCP on 127.0.0.1, memory backend",
            },
            "result": result,
            "table": table,
        },
    )
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plumdb")
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes")
    args = parser.parse_args(argv)
    trio.run(functools.partial(_main, args.repetitions, quick=args.quick))


if __name__ == "__main__":
    main()
