"""The runtime's transport between two OS processes, beside the bare-trio ceiling.

``python -m benchmarks.transport`` starts a second process running a node
(``--serve``), connects a node in this process to it over TCP on 127.0.0.1, and
measures, each figure with a warm-up and R repetitions:

* round trip p50/p99 of a small message (a process sends ``[self(), payload]``
  to an echo process, which sends the payload back);
* one-way small-message throughput with parallelism 1 and 4 (one sender per
  connection; the sink replies once it has counted them all);
* MB/s with 1 MiB payloads;
* p99 round trip on the ``default`` channel while 1 MiB payloads saturate another
  channel, against the same with the bulk traffic on ``default`` itself (one
  shared channel): the proof that channels remove head-of-line blocking.

In the same run it measures the bare trio ceiling (``benchmarks/ceiling.py``)
and prints every figure as a ratio to it, against the targets of
shared/TARGETS.md. The small message is the ceiling's payload (an IoT position
report) in the runtime's envelope. Results go to benchmarks/results/transport.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

import runtime
from benchmarks import ceiling, report
from runtime import ChannelSpec, Node, NodeConfig, NodeSpec, SendStatus, open_node
from runtime.shell.node import current_node

SECRET: Final = "benchmark-secret-0123456789"
PAYLOAD: Final = ceiling.MESSAGE[4]
BULK: Final = b"\x5a" * (1 << 20)
# Queue bounds stay at their defaults (8 MiB): the shared-channel latency below
# is what a user with default settings would see.
CHANNELS: Final = (
    ChannelSpec(name="par4", parallelism=4),
    ChannelSpec(name="bulk"),
)
# Sends between checkpoints of a blasting sender: the writer then coalesces
# about this many frames per write (the ceiling uses 128).
_BATCH: Final = 256


def _config(name: str) -> NodeConfig:
    return NodeConfig(name=name, secret=SECRET, channels=CHANNELS)


# ---------------------------------------------------------------- the child


async def _echo() -> None:
    while True:
        for message in await runtime.receive_batch():
            runtime.send(message[0], message[1])  # type: ignore[index]


async def _sink() -> None:
    """Counts data messages; answers an ``expect`` once that many arrived."""
    count = 0
    expected: int | None = None
    reply_to: object = None
    while True:
        for message in await runtime.receive_batch():
            if type(message) is list and message and message[0] == "expect":
                _, reply_to, expected = message
                count = 0
                runtime.send(reply_to, ["ready"])
            else:
                count += 1
        if expected is not None and count >= expected:
            runtime.send(reply_to, ["done", count])
            expected = None


async def _drain() -> None:
    while True:
        await runtime.receive_batch()


async def _serve() -> None:
    async with open_node(_config("server@127.0.0.1")) as node:
        assert node.address is not None
        print(json.dumps({"port": node.address[1]}), flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        peer = json.loads(line)
        node.add_peer(
            NodeSpec(name=peer["name"], addresses=[("127.0.0.1", peer["port"])])
        )
        node.spawn(_echo, name="echo")
        node.spawn(_sink, name="sink")
        node.spawn(_drain, name="drain")
        # Run until the parent closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


# --------------------------------------------------------------- the parent


@asynccontextmanager
async def _cluster() -> AsyncIterator[tuple[Node, str]]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "benchmarks.transport", "--serve"],
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
        async with open_node(_config("client@127.0.0.1")) as node:
            assert node.address is not None
            hello = {"name": node.name, "port": node.address[1]}
            await process.stdin.send_all(json.dumps(hello).encode() + b"\n")
            server = "server@127.0.0.1"
            node.add_peer(NodeSpec(name=server, addresses=[("127.0.0.1", port)]))
            with trio.fail_after(30):
                await node.wait_connected(server)
                await trio.sleep(0.2)  # the server dials back and spawns
            yield node, server
    finally:
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _in_process(node: Node, fn: Any, *args: Any) -> Any:
    """Run *fn* as a process on *node* and return its result."""
    result: list[Any] = []
    done = trio.Event()

    async def wrapper() -> None:
        try:
            result.append(await fn(*args))
        finally:
            done.set()

    node.spawn(wrapper)
    await done.wait()
    if not result:
        raise RuntimeError(f"{fn.__name__} failed (see the log)")
    return result[0]


async def _round_trips(server: str, count: int) -> list[float]:
    echo = ("echo", server)
    me = runtime.self()
    samples = []
    for _ in range(count):
        start = trio.current_time()
        # On a channel shared with bulk traffic the queue may be full: the
        # wait for room is part of what a shared channel costs.
        while runtime.send_checked(echo, [me, PAYLOAD]) is not SendStatus.OK:  # noqa: ASYNC110
            await trio.sleep(0.0005)
        await runtime.receive()
        samples.append(trio.current_time() - start)
    return samples


async def _blast(
    target: object, count: int, message: object, channel: str, key: object
) -> None:
    sent = 0
    send = current_node().send_checked
    while sent < count:
        status = send(target, message, channel=channel, key=key)
        if status is SendStatus.OK:
            sent += 1
            if sent % _BATCH == 0:
                await trio.lowlevel.checkpoint()
        elif status is SendStatus.OVERLOADED:
            await trio.sleep(0.0002)
        else:
            raise RuntimeError(f"send refused: {status}")


async def _one_way(
    node: Node, server: str, count: int, parallelism: int, message: object
) -> float:
    """Messages per second from *parallelism* senders to the server's sink."""
    sink = ("sink", server)
    channel = "par4" if parallelism > 1 else ("bulk" if message is BULK else "default")

    async def run() -> float:
        runtime.send(sink, ["expect", runtime.self(), count])
        await runtime.receive(lambda m: m == ["ready"], timeout=30)
        start = trio.current_time()
        per_sender = count // parallelism
        for index in range(parallelism):
            node.spawn(_blast, sink, per_sender, message, channel, index)
        await runtime.receive(lambda m: isinstance(m, list) and m[0] == "done", 120)
        return count / (trio.current_time() - start)

    return float(await _in_process(node, run))


async def _latency_under_bulk(
    node: Node, server: str, count: int, bulk_channel: str
) -> list[float]:
    """Round trips on ``default`` while a sender saturates *bulk_channel*."""
    drain = ("drain", server)

    async def saturate() -> None:
        while True:
            status = runtime.send_checked(drain, BULK, channel=bulk_channel)
            if status is not SendStatus.OK:
                await trio.sleep(0.001)
            else:
                await trio.lowlevel.checkpoint()

    async def run() -> list[float]:
        bulk_pid = runtime.spawn(saturate)
        try:
            await trio.sleep(0.3)  # let the bulk queue fill
            return await _round_trips(server, count)
        finally:
            runtime.exit(bulk_pid)

    samples: list[float] = await _in_process(node, run)
    await trio.sleep(1.0)  # let the queued bulk drain before the next figure
    return samples


# Round trips behind a full shared queue take tens of milliseconds each, so the
# head-of-line figure uses few of them.
_FULL: Final = {"rtt": 5000, "one_way": 200_000, "bulk": 200, "hol": 300}
_QUICK: Final = {"rtt": 200, "one_way": 5000, "bulk": 10, "hol": 50}


async def measure_transport(
    repetitions: int = 5, *, quick: bool = False
) -> dict[str, Any]:
    """The runtime's figures (medians over *repetitions*, after a warm-up)."""
    counts = _QUICK if quick else _FULL
    figures: dict[str, list[float]] = {
        "rtt_p50_us": [],
        "rtt_p99_us": [],
        "one_way_p1_msg_per_s": [],
        "one_way_p4_msg_per_s": [],
        "bulk_mb_per_s": [],
        "hol_separate_p99_us": [],
        "hol_shared_p99_us": [],
    }
    async with _cluster() as (node, server):
        # Warm-up of every path.
        await _in_process(node, _round_trips, server, counts["rtt"] // 5)
        await _one_way(node, server, counts["one_way"] // 5, 1, PAYLOAD)
        await _one_way(node, server, counts["one_way"] // 5, 4, PAYLOAD)
        await _one_way(node, server, max(2, counts["bulk"] // 5), 1, BULK)
        for _ in range(repetitions):
            trips = await _in_process(node, _round_trips, server, counts["rtt"])
            figures["rtt_p50_us"].append(report.percentile(trips, 0.5) * 1e6)
            figures["rtt_p99_us"].append(report.percentile(trips, 0.99) * 1e6)
            figures["one_way_p1_msg_per_s"].append(
                await _one_way(node, server, counts["one_way"], 1, PAYLOAD)
            )
            figures["one_way_p4_msg_per_s"].append(
                await _one_way(node, server, counts["one_way"], 4, PAYLOAD)
            )
            rate = await _one_way(node, server, counts["bulk"], 1, BULK)
            figures["bulk_mb_per_s"].append(rate * len(BULK) / 1e6)
            for channel, name in (("bulk", "separate"), ("default", "shared")):
                trips = await _latency_under_bulk(node, server, counts["hol"], channel)
                figures[f"hol_{name}_p99_us"].append(
                    report.percentile(trips, 0.99) * 1e6
                )
        stats = node.statistics()
    return {
        "counts": counts,
        "figures": {name: report.summarize(values) for name, values in figures.items()},
        "client_refused": stats.refused,
    }


def _rows(result: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    f = result["figures"]
    ping = base["ping_pong"]["p50_us"]["median"]
    pipelined = base["one_way_pipelined"]["msg_per_s"]["median"]
    bulk = base["bulk"]["mb_per_s"]["median"]
    ping99 = base["ping_pong"]["p99_us"]["median"]
    rows = [
        ("round trip p50", "us", f["rtt_p50_us"], ping, "<= 1.5x ceiling (aim 1.3x)"),
        ("round trip p99", "us", f["rtt_p99_us"], ping99, ""),
        ("one-way, parallelism 1", "msg/s", f["one_way_p1_msg_per_s"], pipelined,
         ">= 0.6x ceiling (aim 0.75x)"),
        ("one-way, parallelism 4", "msg/s", f["one_way_p4_msg_per_s"], pipelined, ""),
        ("bulk, 1 MiB messages", "MB/s", f["bulk_mb_per_s"], bulk, ""),
        ("default p99, bulk on own channel", "us", f["hol_separate_p99_us"], ping, ""),
        ("default p99, bulk on same channel", "us", f["hol_shared_p99_us"], ping, ""),
    ]  # fmt: skip
    table = []
    for name, unit, summary, ceiling_value, target in rows:
        table.append(
            {
                "figure": name,
                "unit": unit,
                "median": summary["median"],
                "spread": f"{summary['spread']:.0%}",
                "ceiling": ceiling_value,
                "ratio": f"{summary['median'] / ceiling_value:.2f}x",
                "target": target,
            }
        )
    separate = f["hol_separate_p99_us"]["median"]
    shared = f["hol_shared_p99_us"]["median"]
    table.append(
        {
            "figure": "head-of-line: shared p99 / separate p99",
            "unit": "x",
            "median": shared / separate,
            "spread": "",
            "ceiling": "",
            "ratio": "",
            "target": ">= 10x",
        }
    )
    return table


async def _main(repetitions: int, *, quick: bool) -> None:
    base = await ceiling.measure_ceiling(repetitions, quick=quick)
    result = await measure_transport(repetitions, quick=quick)
    print("\nbare trio ceiling (two processes):")
    report.print_table(ceiling.ceiling_rows(base), ceiling.TABLE_COLUMNS)
    print("\nruntime transport (two processes), as ratios to the ceiling:")
    rows = _rows(result, base)
    report.print_table(
        rows, ["figure", "unit", "median", "spread", "ceiling", "ratio", "target"]
    )
    path = report.write_json(
        "transport",
        {
            "machine": report.machine_info(),
            "repetitions": repetitions,
            "quick": quick,
            "ceiling": base,
            "runtime": result,
            "table": rows,
        },
    )
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport")
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
