"""The bare trio ceiling: what two processes on loopback reach with trio and cbor2.

Every transport figure of the runtime is reported as a ratio to this ceiling,
measured in the same run on the same machine (shared/TARGETS.md): absolute
figures move from run to run, ratios much less. So this module is both a script
(``python -m benchmarks.ceiling`` prints a table and writes
``benchmarks/results/ceiling.json``) and a library: other benchmarks call
:func:`measure_ceiling` and divide by its medians.

The setup is the one DESIGN.md fixes ("The benchmark ceiling"): two OS
processes, one trio loop each, frames of a 4-byte big-endian length and a cbor2
body, and both sides encoding and decoding every message with ``cbor2.dumps`` /
``cbor2.loads`` (the codec is the floor no runtime can go under). Nothing else
runs on the path: no envelope checks, no routing, no tasks per message. That is
what makes it a ceiling, so the code here is written to be as fast as plain
trio allows: frames are coalesced into one ``send_all``, receives are large, and
frames are cut out of received bytes with as few copies as possible.

Figures, each with a warm-up and ``repetitions`` repetitions (interleaved, so a
slow patch of the machine spreads over all figures instead of sinking one):

* ping-pong: one frame each way per round trip; p50 and p99 latency, round trips/s.
* one-way pipelined: 128 frames per ``send_all``, the receiver replies once at
  the end; messages/s. The throughput ceiling.
* one-way unbatched: one frame per ``send_all``; messages/s, for reference (it
  shows what coalescing is worth).
* bulk: 1 MiB ``bytes`` payloads; MB/s (10^6 bytes a second).

The server side runs in a child process started as
``python -m benchmarks.ceiling --serve``. It prints its port on stdout and exits
when its stdin closes, so it cannot outlive the parent; the parent also
terminates it on any error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import attrs
import cbor2
import trio

from benchmarks import report

__all__ = [
    "BULK_PAYLOAD_BYTES",
    "FRAMES_PER_SEND",
    "MESSAGE",
    "ChildServer",
    "ceiling_rows",
    "main",
    "measure_ceiling",
    "message_bytes",
    "serve_in_child",
]

MESSAGE: Final[list[Any]] = [
    0,
    "partisan:pid:bench@127.0.0.1:1.7",
    "partisan:pid:bench@127.0.0.1:1.9",
    None,
    {
        "vehicle": "truck-00042",
        "lat": 52.3702,
        "lon": 4.8952,
        "speed": 57.5,
        "ts": 1764000000123,
        "status": "moving",
    },
]
"""A typical small message, shaped as the runtime's envelope
``[kind, target, sender, ref, payload]`` with an IoT position report as payload.
Its CBOR encoding must stay within :data:`MESSAGE_BYTES_RANGE` (159 bytes today)."""

MESSAGE_BYTES_RANGE: Final = (140, 170)
"""The "typical ~150-byte message" of shared/TARGETS.md, checked before measuring."""

FRAMES_PER_SEND: Final = 128
"""Frames coalesced into one ``send_all`` in the pipelined figure (DESIGN.md)."""

BULK_PAYLOAD_BYTES: Final = 1 << 20
"""One bulk message: 1 MiB of ``bytes``."""

RECEIVE_BYTES: Final = 65536
"""Bytes asked of each ``receive_some``: hundreds of small frames per wake-up.
Asking for more costs small frames dearly: a ``recv`` buffer above glibc's mmap
threshold (128 KiB) is mapped and unmapped on every call (+3 us a call here).
The rest of a frame larger than this is received straight into a reused buffer
instead (see :func:`_serve_sink`)."""

_HEADER: Final = 4
_END: Final = cbor2.dumps(None)
# Closes a one-way run: the receiver answers it with the count it decoded.
_END_FRAME: Final = len(_END).to_bytes(_HEADER, "big") + _END
_MODE_ECHO: Final = "echo"
_MODE_SINK: Final = "sink"
_ACK: Final = "ok"
_REPO_ROOT: Final = Path(__file__).resolve().parent.parent
_CHILD_START_SECONDS: Final = 30.0
_CHILD_STOP_SECONDS: Final = 5.0


@attrs.frozen
class _Counts:
    """How much each figure sends: once to warm up, then per repetition."""

    ping_pong: int
    pipelined: int
    unbatched: int
    bulk_messages: int
    warm_ping_pong: int
    warm_pipelined: int
    warm_unbatched: int
    warm_bulk_messages: int


_FULL: Final = _Counts(
    ping_pong=5_000,
    pipelined=200_000,
    unbatched=50_000,
    bulk_messages=200,
    warm_ping_pong=500,
    warm_pipelined=20_000,
    warm_unbatched=5_000,
    warm_bulk_messages=16,
)
# Enough to run every code path (several batches, a partial last batch, frames
# split across receives) in well under a second; the figures mean nothing.
_QUICK: Final = _Counts(
    ping_pong=200,
    pipelined=5_000,
    unbatched=1_000,
    bulk_messages=4,
    warm_ping_pong=20,
    warm_pipelined=300,
    warm_unbatched=100,
    warm_bulk_messages=1,
)


def message_bytes() -> int:
    """The encoded size of :data:`MESSAGE`, checked against its range.

    Raises:
        ValueError: the message drifted out of the 140-170 byte range, so the
            figures would no longer be comparable with earlier runs.
    """
    size = len(cbor2.dumps(MESSAGE))
    low, high = MESSAGE_BYTES_RANGE
    if not low <= size <= high:
        raise ValueError(
            f"the benchmark message encodes to {size} bytes, not {low}-{high}"
        )
    return size


def _frame(body: bytes) -> bytes:
    """Header and body in one buffer, so a frame leaves in one write."""
    return len(body).to_bytes(_HEADER, "big") + body


class _Reassembler:
    """Cuts a byte stream at frame boundaries with as few copies as possible.

    ``feed`` hands back a ``bytes`` object that begins at a frame boundary, so
    the caller parses it in place and slices bodies out of ``bytes`` (cbor2
    decodes ``bytes`` faster than ``bytearray``, and a slice of ``bytes`` is one
    copy). Only the incomplete tail of a receive is kept, in a ``bytearray``,
    and it is joined with later data only once the frame it starts is complete,
    so a 1 MiB frame arriving in pieces is not copied again per piece.
    """

    __slots__ = ("_need", "_pending")

    def __init__(self) -> None:
        self._pending = bytearray()
        # Bytes _pending must hold before a parse can make progress.
        self._need = 0

    def feed(self, data: bytes) -> bytes | None:
        """Bytes starting at a frame boundary, or None while a frame is partial."""
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._need:
                return None
            data = bytes(pending)
            pending.clear()
        return data

    def keep(self, data: bytes, pos: int) -> None:
        """Hold ``data[pos:]``, the incomplete tail left after a parse."""
        tail = len(data) - pos
        if tail:
            self._pending += data[pos:]
            self._need = (
                _HEADER + int.from_bytes(data[pos : pos + _HEADER], "big")
                if tail >= _HEADER
                else _HEADER
            )

    def split(self, data: bytes) -> list[bytes]:
        """The bodies of the frames *data* completes, in order."""
        view = self.feed(data)
        if view is None:
            return []
        bodies = []
        pos, end = 0, len(view)
        while end - pos >= _HEADER:
            stop = pos + _HEADER + int.from_bytes(view[pos : pos + _HEADER], "big")
            if stop > end:
                break
            bodies.append(view[pos + _HEADER : stop])
            pos = stop
        self.keep(view, pos)
        return bodies


class _FrameReader:
    """Frame bodies one at a time off a stream: for replies, not for throughput."""

    __slots__ = ("_frames", "_ready", "_stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._frames = _Reassembler()
        self._ready: deque[bytes] = deque()

    async def receive(self) -> bytes:
        """The next frame body.

        Raises:
            trio.BrokenResourceError: the peer closed before a whole frame came.
        """
        while not self._ready:
            data = await self._stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise trio.BrokenResourceError("peer closed the connection")
            self._ready.extend(self._frames.split(data))
        return self._ready.popleft()

    def take_reassembler(self) -> _Reassembler:
        """Hand the byte stream over to a hand-written loop.

        Only once nothing is queued: the peer waits for our answer to its first
        frame before sending more, so nothing can be.
        """
        if self._ready:
            raise RuntimeError("frames arrived before the first one was answered")
        return self._frames


# --- the child: the far side of every figure ----------------------------------


async def _serve_echo(stream: trio.SocketStream, frames: _Reassembler) -> None:
    """Decode each frame, encode it again and send it back.

    Replies to all frames of one receive leave in one ``send_all``; in
    ping-pong there is only ever one.
    """
    dumps, loads = cbor2.dumps, cbor2.loads
    receive_some, send_all = stream.receive_some, stream.send_all
    feed, keep = frames.feed, frames.keep
    out = bytearray()
    while True:
        data = await receive_some(RECEIVE_BYTES)
        if not data:
            return
        view = feed(data)
        if view is None:
            continue
        pos, end = 0, len(view)
        while end - pos >= _HEADER:
            stop = pos + _HEADER + int.from_bytes(view[pos : pos + _HEADER], "big")
            if stop > end:
                break
            reply = dumps(loads(view[pos + _HEADER : stop]))
            pos = stop
            out += len(reply).to_bytes(_HEADER, "big")
            out += reply
        keep(view, pos)
        if out:
            await send_all(out)
            out.clear()


async def _serve_sink(stream: trio.SocketStream, frames: _Reassembler) -> None:
    """Decode every frame; answer the end marker with the number decoded.

    This loop is the receiving half of the throughput ceiling, so it is written
    out by hand: one bound-method lookup per receive, not per frame.

    A frame whose rest is larger than :data:`RECEIVE_BYTES` is received with
    ``recv_into`` straight into one reused buffer and decoded from there. Fresh
    memory is what a large frame costs most where page faults are dear: on the
    machine this was written on, touching a fresh MiB takes ~2.4 ms, so
    assembling 1 MiB frames out of ``receive_some`` pieces ran at ~260 MB/s
    and this way at ~800 MB/s. Small frames never take this path.
    """
    dumps, loads = cbor2.dumps, cbor2.loads
    receive_some, send_all = stream.receive_some, stream.send_all
    recv_into = stream.socket.recv_into
    feed, keep = frames.feed, frames.keep
    large = bytearray()
    count = 0
    while True:
        data = await receive_some(RECEIVE_BYTES)
        if not data:
            return
        view = feed(data)
        if view is None:
            continue
        pos, end = 0, len(view)
        while end - pos >= _HEADER:
            stop = pos + _HEADER + int.from_bytes(view[pos : pos + _HEADER], "big")
            if stop > end:
                break
            message = loads(view[pos + _HEADER : stop])
            pos = stop
            if message is None:
                await send_all(_frame(dumps(count)))
                count = 0
            else:
                count += 1
        have = end - pos
        if have >= _HEADER:
            need = _HEADER + int.from_bytes(view[pos : pos + _HEADER], "big")
            if need - have > RECEIVE_BYTES:
                if len(large) < need:
                    large = bytearray(need)
                large[:have] = view[pos:]
                with memoryview(large) as buffer:
                    while have < need:
                        received = await recv_into(buffer[have:need], need - have)
                        if not received:
                            return
                        have += received
                    # Held until the next one, as a mailbox would hold it.
                    message = loads(buffer[_HEADER:need])
                count += 1
                continue
        keep(view, pos)


async def _handle_connection(stream: trio.SocketStream) -> None:
    """Read the mode frame, acknowledge it, then serve that mode until EOF."""
    async with stream:
        reader = _FrameReader(stream)
        try:
            mode = cbor2.loads(await reader.receive())
            serve: Callable[[trio.SocketStream, _Reassembler], Any]
            if mode == _MODE_ECHO:
                serve = _serve_echo
            elif mode == _MODE_SINK:
                serve = _serve_sink
            else:
                raise ValueError(f"unknown mode {mode!r}")
            await stream.send_all(_frame(cbor2.dumps(_ACK)))
            await serve(stream, reader.take_reassembler())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The parent hung up, as it does after an error of its own.
            return


async def _exit_on_stdin_eof(cancel_scope: trio.CancelScope) -> None:
    """Stop serving when stdin closes: the parent closed it, or died."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass
    cancel_scope.cancel()


async def _serve() -> None:
    """The child's main: listen on an ephemeral port, print it, serve."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(port, flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_exit_on_stdin_eof, nursery.cancel_scope)
        await trio.serve_listeners(_handle_connection, listeners)


# --- the parent: drives each figure --------------------------------------------


@attrs.define
class ChildServer:
    """The running child: where to connect, and its process once it exits."""

    port: int
    process: trio.Process


@asynccontextmanager
async def serve_in_child() -> AsyncIterator[ChildServer]:
    """Run the far side in a child process for the duration of the block.

    On leaving, however it is left, the child is stopped (see :func:`_stop`)
    and reaped before the block returns. No nursery wraps the ``yield``, so an
    error in the block comes out as itself, not inside an exception group.
    """
    command = [sys.executable, "-m", "benchmarks.ceiling", "--serve"]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_REPO_ROOT
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(_CHILD_START_SECONDS):
            line = bytearray()
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError(
                        "benchmark child exited before printing its port "
                        f"(exit code {await process.wait()})"
                    )
                line += chunk
        yield ChildServer(port=int(line), process=process)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: trio.Process) -> None:
    """Stop the child: politely, then firmly; return once it is reaped.

    Closing its stdin is the polite way (the child exits on EOF, as it does if
    we die); SIGTERM after a few seconds, SIGKILL after a few more.
    """
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            await stream.aclose()
    for signal_child in (process.terminate, process.kill):
        with trio.move_on_after(_CHILD_STOP_SECONDS):
            await process.wait()
            return
        signal_child()
    await process.wait()


async def _connect(port: int, mode: str) -> tuple[trio.SocketStream, _FrameReader]:
    """A connection to the child in *mode*, once the child has acknowledged it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        reader = _FrameReader(stream)
        await stream.send_all(_frame(cbor2.dumps(mode)))
        ack = cbor2.loads(await reader.receive())
        if ack != _ACK:
            raise RuntimeError(f"benchmark child answered {ack!r} to mode {mode!r}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream, reader


async def _ping_pong(
    stream: trio.SocketStream, reader: _FrameReader, count: int
) -> tuple[list[float], float]:
    """*count* round trips; per-trip latencies in seconds, and the total time.

    A round trip is timed from encoding the request to having decoded the
    reply, as a runtime's caller would see it.
    """
    dumps, loads = cbor2.dumps, cbor2.loads
    send_all, receive = stream.send_all, reader.receive
    message = MESSAGE
    latencies = [0.0] * count
    start = perf_counter()
    for i in range(count):
        sent = perf_counter()
        body = dumps(message)
        await send_all(len(body).to_bytes(_HEADER, "big") + body)
        loads(await receive())
        latencies[i] = perf_counter() - sent
    return latencies, perf_counter() - start


async def _one_way(
    stream: trio.SocketStream,
    reader: _FrameReader,
    message: object,
    count: int,
    frames_per_send: int,
) -> float:
    """Send *count* messages, *frames_per_send* to a write; seconds until the
    receiver confirmed it decoded them all.

    Every message is encoded afresh (the codec is part of the floor), into one
    reused buffer, so a batch costs one allocation-free ``send_all``.
    """
    dumps = cbor2.dumps
    send_all = stream.send_all
    out = bytearray()
    start = perf_counter()
    remaining = count
    while remaining:
        batch = min(frames_per_send, remaining)
        for _ in range(batch):
            body = dumps(message)
            out += len(body).to_bytes(_HEADER, "big")
            out += body
        await send_all(out)
        out.clear()
        remaining -= batch
    await send_all(_END_FRAME)
    decoded = cbor2.loads(await reader.receive())
    elapsed = perf_counter() - start
    if decoded != count:
        raise RuntimeError(f"sent {count} messages, the receiver decoded {decoded}")
    return elapsed


async def measure_ceiling(
    repetitions: int = 5, *, quick: bool = False
) -> dict[str, Any]:
    """Measure the bare trio ceiling between two processes; return the figures.

    Each figure is a :func:`benchmarks.report.summarize` dict (``median``,
    ``min``, ``max``, ``spread``, per-repetition ``samples``). Ratios against
    the runtime should use the ``median``. Layout::

        {"message_bytes": 159, "repetitions": 5, "quick": False, ...,
         "ping_pong": {"round_trips": 5000, "p50_us": {...}, "p99_us": {...},
                       "round_trips_per_s": {...}},
         "one_way_pipelined": {"messages": ..., "frames_per_send": 128,
                               "msg_per_s": {...}},
         "one_way_unbatched": {"messages": ..., "frames_per_send": 1,
                               "msg_per_s": {...}},
         "bulk": {"payload_bytes": 1048576, "total_bytes": ..., "mb_per_s": {...}},
         "child": {"pid": ..., "returncode": ...}}

    Args:
        repetitions: timed runs of each figure, after one warm-up run.
        quick: tiny counts, for a smoke test; the figures are then meaningless.
    """
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    size = message_bytes()
    counts = _QUICK if quick else _FULL
    payload = b"\x5a" * BULK_PAYLOAD_BYTES
    p50_us: list[float] = []
    p99_us: list[float] = []
    trips_per_s: list[float] = []
    pipelined: list[float] = []
    unbatched: list[float] = []
    bulk: list[float] = []
    async with serve_in_child() as child:
        echo, echo_reader = await _connect(child.port, _MODE_ECHO)
        async with echo:
            sink, sink_reader = await _connect(child.port, _MODE_SINK)
            async with sink:
                # Warm-up: connections, allocator, caches and the CPUs' clocks.
                await _ping_pong(echo, echo_reader, counts.warm_ping_pong)
                await _one_way(
                    sink, sink_reader, MESSAGE, counts.warm_pipelined, FRAMES_PER_SEND
                )
                await _one_way(sink, sink_reader, MESSAGE, counts.warm_unbatched, 1)
                await _one_way(sink, sink_reader, payload, counts.warm_bulk_messages, 1)
                for _ in range(repetitions):
                    latencies, total = await _ping_pong(
                        echo, echo_reader, counts.ping_pong
                    )
                    p50_us.append(report.percentile(latencies, 0.50) * 1e6)
                    p99_us.append(report.percentile(latencies, 0.99) * 1e6)
                    trips_per_s.append(counts.ping_pong / total)
                    seconds = await _one_way(
                        sink, sink_reader, MESSAGE, counts.pipelined, FRAMES_PER_SEND
                    )
                    pipelined.append(counts.pipelined / seconds)
                    seconds = await _one_way(
                        sink, sink_reader, MESSAGE, counts.unbatched, 1
                    )
                    unbatched.append(counts.unbatched / seconds)
                    seconds = await _one_way(
                        sink, sink_reader, payload, counts.bulk_messages, 1
                    )
                    bulk.append(
                        counts.bulk_messages * BULK_PAYLOAD_BYTES / seconds / 1e6
                    )
    return {
        "message_bytes": size,
        "repetitions": repetitions,
        "quick": quick,
        "receive_bytes": RECEIVE_BYTES,
        "ping_pong": {
            "round_trips": counts.ping_pong,
            "p50_us": report.summarize(p50_us),
            "p99_us": report.summarize(p99_us),
            "round_trips_per_s": report.summarize(trips_per_s),
        },
        "one_way_pipelined": {
            "messages": counts.pipelined,
            "frames_per_send": FRAMES_PER_SEND,
            "msg_per_s": report.summarize(pipelined),
        },
        "one_way_unbatched": {
            "messages": counts.unbatched,
            "frames_per_send": 1,
            "msg_per_s": report.summarize(unbatched),
        },
        "bulk": {
            "payload_bytes": BULK_PAYLOAD_BYTES,
            "total_bytes": counts.bulk_messages * BULK_PAYLOAD_BYTES,
            "mb_per_s": report.summarize(bulk),
        },
        "child": {"pid": child.process.pid, "returncode": child.process.returncode},
    }


TABLE_COLUMNS: Final = ["figure", "unit", "median", "min", "max", "spread", "note"]
"""The columns of :func:`ceiling_rows`, for :func:`benchmarks.report.print_table`."""


def ceiling_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows for a :func:`measure_ceiling` result, one per figure.

    Public so a benchmark that measures the ceiling beside the runtime prints it
    the same way. A figure whose repetitions spread more than
    :data:`benchmarks.report.SPREAD_RERUN` is marked for a rerun.
    """
    figures = [
        ("ping-pong round trip p50", "us", result["ping_pong"]["p50_us"]),
        ("ping-pong round trip p99", "us", result["ping_pong"]["p99_us"]),
        ("ping-pong round trips", "1/s", result["ping_pong"]["round_trips_per_s"]),
        (
            f"one-way, {result['one_way_pipelined']['frames_per_send']} frames/send",
            "msg/s",
            result["one_way_pipelined"]["msg_per_s"],
        ),
        ("one-way, 1 frame/send", "msg/s", result["one_way_unbatched"]["msg_per_s"]),
        ("bulk, 1 MiB messages", "MB/s", result["bulk"]["mb_per_s"]),
    ]
    rows = []
    for name, unit, summary in figures:
        rows.append(
            {
                "figure": name,
                "unit": unit,
                "median": summary["median"],
                "min": summary["min"],
                "max": summary["max"],
                "spread": f"{summary['spread']:.0%}",
                "note": "rerun: spread > 25%"
                if summary["spread"] > report.SPREAD_RERUN
                else "",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.ceiling``: measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ceiling",
        description="Measure the bare trio + cbor2 ceiling between two processes.",
    )
    parser.add_argument(
        "-r", "--repetitions", type=int, default=5, help="timed runs per figure"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny counts: a smoke run, not figures"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(_serve)
        return
    info = report.machine_info()
    print(
        f"bare trio ceiling: Python {info['python']}, trio {info['versions']['trio']}, "
        f"cbor2 {info['versions']['cbor2']} (C extension: "
        f"{info['cbor2_c_extension']}), {info['cpu_count']} CPUs, {info['platform']}"
    )
    result = trio.run(lambda: measure_ceiling(args.repetitions, quick=args.quick))
    print(
        f"message {result['message_bytes']} bytes encoded; "
        f"{args.repetitions} repetitions after a warm-up; two processes on 127.0.0.1"
    )
    print()
    report.print_table(ceiling_rows(result), TABLE_COLUMNS)
    path = report.write_json("ceiling", {"machine": info, "ceiling": result})
    print()
    print(f"written to {path}")


if __name__ == "__main__":
    main()
