"""Outgoing connections: a bounded, coalescing send queue and its writer.

One :class:`OutboundConnection` exists per (peer, channel, connection index). It
outlives the TCP connections that carry it: the transport's dial loop attaches a
fresh stream after each (re)connect.

Theory of operation
-------------------
``enqueue`` is synchronous, as Erlang's ``!``: it appends a whole frame to the
queue and, if the writer task is parked, reschedules it. The writer wakes once,
joins *everything* queued into one buffer and writes it with one ``send_all``
(coalescing; measured 8x over one write per frame, DESIGN.md). Frames that were
queued while it wrote go out in the next batch.

Backpressure: ``queued_bytes`` counts frames from enqueue until their write
completes. Past ``send_queue_bytes_max`` ``enqueue`` refuses with OVERLOADED, so
a peer that stops reading costs at most twice that bound; and a write that makes
no progress for ``write_timeout`` seconds closes the connection.

Monotonic channels keep the queue as an insertion-ordered dict keyed by the
partition key: a newer frame for a key replaces the older one still waiting.
They are exempt from OVERLOADED, since they already drop superseded messages;
their queue holds at most one frame per key.

Invariants:
    * ``queued_bytes`` == bytes of frames queued + bytes of the batch in flight.
    * frames of one connection are written in enqueue order (except monotonic
      replacement, which moves the newest frame of a key to the back).
    * when the connection is down, ``enqueue`` refuses and the queue is empty.
"""

from __future__ import annotations

import enum
import logging
import math
import os
from collections import deque
from typing import Final, final

import attrs
import trio

from runtime.shell.parking import ParkingSpot

__all__ = ["ConnectionState", "OutboundConnection", "SendStatus", "SlotStatistics"]

# Most bytes joined into one write. Small frames coalesce up to this (about 1,800
# of 150 bytes); a larger frame goes alone. Bounds the memcpy one batch costs the
# event loop, so a backlog of 1 MiB frames cannot stall every other task.
BATCH_BYTES_MAX: Final = 256 * 1024
# A frame is written directly (no writer wake-up) only if the previous direct
# write is at least this old: isolated sends (requests, replies) leave at once,
# while a burst queues after its first frame and is coalesced by the writer.
DIRECT_WRITE_GAP: Final = 50e-6

log = logging.getLogger("runtime.transport")


class SendStatus(enum.Enum):
    """Why a message was or was not handed to a connection (``send_checked``)."""

    OK = "ok"
    NOT_CONNECTED = "not_connected"
    """The connection has not come up yet since the peer was added."""
    DISCONNECTED = "disconnected"
    """The connection was up and is now down (reconnecting)."""
    OVERLOADED = "overloaded"
    """The connection's send queue is past its byte bound."""
    NO_ROUTE = "no_route"
    """The node is not a peer, or the channel does not exist."""
    PARTITIONED = "partitioned"
    """A fault injected on this node drops traffic to that peer."""


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@final
@attrs.frozen
class SlotStatistics:
    """Counters of one outgoing connection slot."""

    peer: str
    channel: str
    index: int
    state: str
    queued_bytes: int
    frames_sent_count: int
    bytes_sent: int
    batches_sent_count: int
    refused_overloaded_count: int
    dropped_on_disconnect_count: int
    superseded_count: int
    connects_count: int
    last_disconnect_reason: str | None


@final
class OutboundConnection:
    """The send side of one (peer, channel, index) connection slot."""

    __slots__ = (
        "_direct_at",
        "_direct_fd",
        "_idle",
        "_keyed",
        "_queue",
        "_waiting_bytes",
        "_writer_spot",
        "batches_sent_count",
        "bytes_sent",
        "channel",
        "connects_count",
        "dropped_on_disconnect_count",
        "frames_sent_count",
        "index",
        "last_disconnect_reason",
        "monotonic",
        "peer",
        "queued_bytes",
        "queued_bytes_max",
        "refused_overloaded_count",
        "state",
        "superseded_count",
    )

    def __init__(
        self,
        *,
        peer: str,
        channel: str,
        index: int,
        monotonic: bool,
        queued_bytes_max: int,
    ) -> None:
        self.peer = peer
        self.channel = channel
        self.index = index
        self.monotonic = monotonic
        self.queued_bytes_max = queued_bytes_max
        self.state = ConnectionState.CONNECTING
        self._queue: deque[bytes] = deque()
        self._keyed: dict[object, bytes] = {}
        # Where the writer waits while nothing is queued.
        self._writer_spot = ParkingSpot()
        # A plain TCP socket's fd, written directly while the writer is idle.
        self._direct_fd: int | None = None
        # True only while the writer is parked with nothing queued or in flight.
        self._idle = False
        # When the last direct write happened (trio clock).
        self._direct_at = -math.inf
        self.queued_bytes = 0
        # Bytes queued and not yet taken by the writer (queued_bytes less the
        # batch in flight).
        self._waiting_bytes = 0
        self.frames_sent_count = 0
        self.bytes_sent = 0
        self.batches_sent_count = 0
        self.refused_overloaded_count = 0
        self.dropped_on_disconnect_count = 0
        self.superseded_count = 0
        self.connects_count = 0
        self.last_disconnect_reason: str | None = None

    def enqueue(self, frame: bytes, key: object = None) -> SendStatus:
        """Queue a whole frame for the writer; never blocks, never raises.

        When the writer is idle on a plain TCP connection and no direct write
        happened in the last ``DIRECT_WRITE_GAP`` seconds, the frame is written
        at once with one non-blocking ``write`` (what trio's own ``send_all``
        tries first), saving the writer's wake-up on the latency path; the
        frames of a burst after its first are queued and coalesced.
        """
        state = self.state
        if state is not ConnectionState.CONNECTED:
            if state is ConnectionState.CONNECTING:
                return SendStatus.NOT_CONNECTED
            return SendStatus.DISCONNECTED
        if self._direct_fd is not None and self._idle:
            now = trio.current_time()
            if now - self._direct_at >= DIRECT_WRITE_GAP:
                self._direct_at = now
                self._write_direct(frame)
                return SendStatus.OK
        if self.monotonic:
            old = self._keyed.pop(key, None) if key is not None else None
            if old is not None:
                self.queued_bytes -= len(old)
                self._waiting_bytes -= len(old)
                self.superseded_count += 1
            self._keyed[key if key is not None else object()] = frame
        else:
            if self.queued_bytes >= self.queued_bytes_max:
                self.refused_overloaded_count += 1
                return SendStatus.OVERLOADED
            self._queue.append(frame)
        self.queued_bytes += len(frame)
        self._waiting_bytes += len(frame)
        # Something is queued: no direct write may overtake it.
        self._idle = False
        self._writer_spot.wake()
        return SendStatus.OK

    def _write_direct(self, frame: bytes) -> None:
        assert self._direct_fd is not None
        assert not self._has_frames()
        try:
            written = os.write(self._direct_fd, frame)
        except OSError:
            # EAGAIN, or a broken connection: the writer's send_all retries or
            # surfaces the error, exactly as if the frame had been queued.
            written = 0
        self.frames_sent_count += 1
        self.bytes_sent += written
        if written < len(frame):
            rest = frame[written:]
            if self.monotonic:
                self._keyed[object()] = rest
            else:
                self._queue.append(rest)
            self.queued_bytes += len(rest)
            self._waiting_bytes += len(rest)
            # The partial frame is counted once, when its first bytes left.
            self.frames_sent_count -= 1
            self._idle = False
            self._writer_spot.wake()
        else:
            self.batches_sent_count += 1

    def _take_batch(self) -> bytes:
        """Up to ``BATCH_BYTES_MAX`` of queued frames as one buffer (a frame
        larger than that goes alone, uncopied), so one huge backlog is never
        joined in one go while every other task waits."""
        if self.monotonic:
            frames: list[bytes] = []
            size = 0
            keyed = self._keyed
            while keyed and size < BATCH_BYTES_MAX:
                frame = keyed.pop(next(iter(keyed)))
                frames.append(frame)
                size += len(frame)
        elif self._waiting_bytes <= BATCH_BYTES_MAX:
            frames = list(self._queue)
            self._queue.clear()
            size = self._waiting_bytes
        else:
            frames = []
            size = 0
            queue = self._queue
            while queue and size < BATCH_BYTES_MAX:
                frame = queue.popleft()
                frames.append(frame)
                size += len(frame)
        self._waiting_bytes -= size
        self.frames_sent_count += len(frames)
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _has_frames(self) -> bool:
        return bool(self._keyed) if self.monotonic else bool(self._queue)

    def attach(self, *, direct_fd: int | None = None) -> None:
        """The dial loop established a stream: accept frames again.

        Args:
            direct_fd: the socket's file descriptor when the stream is plain
                TCP, for direct writes while the writer is idle.
        """
        assert not self._has_frames()
        self.state = ConnectionState.CONNECTED
        self.connects_count += 1
        self._direct_fd = direct_fd
        self._idle = False

    def detach(self, reason: str, *, closed: bool = False) -> None:
        """The stream is gone: drop what is queued (counted) and refuse sends."""
        self._direct_fd = None
        self._idle = False
        if self.state is ConnectionState.CONNECTED:
            self.state = ConnectionState.DISCONNECTED
        if closed:
            self.state = ConnectionState.CLOSED
        dropped = len(self._keyed) if self.monotonic else len(self._queue)
        if dropped:
            self.dropped_on_disconnect_count += dropped
            log.info(
                "dropped %d queued frames to %s on channel %s: %s",
                dropped,
                self.peer,
                self.channel,
                reason,
            )
        self._queue.clear()
        self._keyed.clear()
        self.queued_bytes = 0
        self._waiting_bytes = 0
        self.last_disconnect_reason = reason

    async def run_writer(self, stream: trio.abc.Stream, write_timeout: float) -> None:
        """Write queued frames to *stream* until cancelled or the stream fails.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError, OSError: the
                stream failed.
            trio.TooSlowError: one batch took longer than *write_timeout*.
        """
        # One scope for the writer's life; its deadline is armed only while a
        # write is in progress (cheaper than a fail_after per batch).
        with trio.CancelScope() as watchdog:
            while True:
                if not self._has_frames():
                    self._idle = True
                    await self._writer_spot.park()
                    continue
                self._idle = False
                data = self._take_batch()
                watchdog.deadline = trio.current_time() + write_timeout
                await stream.send_all(data)
                watchdog.deadline = math.inf
                self.queued_bytes -= len(data)
                self.bytes_sent += len(data)
                self.batches_sent_count += 1
        raise trio.TooSlowError(f"no write progress for {write_timeout} s")

    async def wait_drained(self) -> None:
        """Wait until nothing is queued or in flight (used on graceful stop)."""
        # A stop-time poll, not a hot path: no event to keep on the writer.
        while self.queued_bytes > 0 and self.state is ConnectionState.CONNECTED:  # noqa: ASYNC110
            await trio.sleep(0.005)

    def statistics(self) -> SlotStatistics:
        return SlotStatistics(
            peer=self.peer,
            channel=self.channel,
            index=self.index,
            state=self.state.value,
            queued_bytes=self.queued_bytes,
            frames_sent_count=self.frames_sent_count,
            bytes_sent=self.bytes_sent,
            batches_sent_count=self.batches_sent_count,
            refused_overloaded_count=self.refused_overloaded_count,
            dropped_on_disconnect_count=self.dropped_on_disconnect_count,
            superseded_count=self.superseded_count,
            connects_count=self.connects_count,
            last_disconnect_reason=self.last_disconnect_reason,
        )
