"""An in-memory :class:`~runtime.shell.network.Network` with faults, for cluster tests.

Whole clusters run in one trio process under ``trio.testing.MockClock``: every node
of a test is given the same :class:`MemoryNetwork` and passes its own node name as
``local_name`` when it listens or dials. The network then knows, for every byte,
which node sent it and which node it is for, and can apply faults between *named
nodes* (DESIGN.md: "an in-memory network that can drop, delay and partition").

Theory of operation
-------------------
A connection is two one-way *pipes* (``src`` node -> ``dst`` node). A pipe is a
queue of chunks, each stamped with the virtual time at which it becomes readable
(its *due* time). ``send_all`` follows the runtime's framing (a 4-byte big-endian
length and a body; the runtime's writer passes whole frames, often many in one
call) and, per complete frame, consults the link ``src -> dst``:

* **drop** (probability): the frame is never queued.
* **duplicate** (probability): the frame is queued twice, back to back.
* **delay** plus uniform **jitter** (seconds): the frame's due time is
  ``max(previous due time, now + delay)``, so a slow frame holds back the frames
  behind it and a stream never reorders, as TCP never does.
* **partition**: the frame is *blackholed*: held in the pipe, not readable. A real
  partition does not close a TCP connection, it only stops bytes moving; so too
  here. On :meth:`MemoryNetwork.heal` the held frames become readable, in order
  (as TCP retransmission delivers them once the path is back). A test that wants
  the connection to die as well (a TCP user timeout, a heartbeat that gave up)
  calls :meth:`MemoryNetwork.disconnect`, or lets the runtime close it.

Only drop and duplicate need a whole frame, so only while the link has one of
them does the pipe hold back the bytes of an incomplete frame (a caller sending a
frame in pieces); otherwise bytes go as they come and the pipe merely tracks where
each frame ends, so that a link without those faults is byte-transparent. A frame
already partly sent when drop or duplicate is set goes through whole; faults start
at the next frame boundary. A link without faults and without a partition takes
the fast path: all the bytes of one ``send_all`` become one chunk, due at once.

Bytes that do not parse as our frames (a header announcing more than
``frame_bytes_max``, which is what the first bytes of a TLS record look like) turn
that pipe *opaque* for good: from then on each write is one chunk, which delay and
partitions still apply to, but drop and duplicate do not, since removing bytes from
the middle of an unframed stream corrupts it, which no network under TCP does.
To fault TLS traffic, partition or disconnect.

**Delivery is lazy; there is no background task.** A reader whose head chunk is
not yet due sleeps until its due time (``trio.move_on_at``), which the MockClock's
autojump reaches at once. So a :class:`MemoryNetwork` is a plain object that needs
no nursery (no ``async with``, no ``run(task_status)``) and cannot leak a task.
It may be made outside ``trio.run`` (in a fixture); its async methods and
:meth:`MemoryNetwork.heal` (which reads the clock) run inside it.

**Flow control.** Each pipe admits at most ``receive_buffer_bytes_max`` unread
bytes: queued, in flight (delayed) and blackholed alike, as TCP's window counts
unacknowledged bytes. ``send_all`` blocks while the pipe is full, so a node that
stops reading exerts backpressure on the writer, and a writer across a long
partition blocks too. Bytes held back of an incomplete frame are not counted, so
a frame larger than the buffer still gets through.

**Randomness** comes from one ``random.Random`` per pipe, seeded from the
constructor's ``seed``, both node names and the ordinal of the connection between
those two nodes. One shared generator would make the fault pattern depend on the
order in which trio schedules the sending tasks, which trio deliberately varies
from run to run; per pipe, the same seed and the same traffic on a connection give
the same faults, whatever the other connections do.

Invariants:
    * A stream delivers a prefix of what was sent, in order, minus dropped frames
      and plus duplicated ones; it never reorders bytes. It loses data only by
      breaking (``disconnect``, a listener closed with the connection unaccepted,
      or the reader closing its end), which both ends observe.
    * Due times in a pipe's queue never decrease; held chunks come after all of
      the queue.
    * No global state: everything lives in one :class:`MemoryNetwork`.
"""

from __future__ import annotations

import errno
import math
import operator
import random
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Final, NewType, final

import attrs
import trio

from runtime.core.framing import FRAME_BYTES_MAX_DEFAULT
from runtime.shell.network import Address

if TYPE_CHECKING:
    from runtime.shell.network import Network

__all__ = [
    "RECEIVE_BUFFER_BYTES_MAX_DEFAULT",
    "LinkFaults",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryNetworkStatistics",
    "MemoryStream",
    "PartitionId",
]

# Of the order of a Linux TCP receive buffer (tcp_rmem autotunes up to 6 MiB): room
# for a writer to coalesce freely, small enough that a test whose reader stalls
# sees its writer block after a megabyte, not after a gigabyte of memory.
RECEIVE_BUFFER_BYTES_MAX_DEFAULT: Final = 1024 * 1024
# As trio's SocketStream: what receive_some(None) returns at most.
_RECEIVE_BYTES_DEFAULT: Final = 65536
_HEADER_BYTES: Final = 4
# IANA's dynamic port range, where an OS picks the port for a bind to port 0.
_PORT_EPHEMERAL_FIRST: Final = 49152
_PORT_LAST: Final = 65535

PartitionId = NewType("PartitionId", int)
"""Names one :meth:`MemoryNetwork.partition`, to :meth:`MemoryNetwork.heal` it."""


def _check_probability(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{attribute.name} must be a probability in [0, 1], not {value!r}"
        )


def _check_duration(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be finite seconds >= 0, not {value!r}")


@final
@attrs.frozen(kw_only=True)
class LinkFaults:
    """Faults applied to every frame sent from one node to another.

    Attributes:
        drop: probability that a frame is lost.
        duplicate: probability that a frame arrives twice.
        delay: seconds a frame spends in flight.
        jitter: at most this many seconds more, uniformly drawn per frame. Jitter
            never reorders a stream: a frame is never due before the one ahead.
    """

    drop: float = attrs.field(default=0.0, validator=_check_probability)
    duplicate: float = attrs.field(default=0.0, validator=_check_probability)
    delay: float = attrs.field(default=0.0, validator=_check_duration)
    jitter: float = attrs.field(default=0.0, validator=_check_duration)


_NO_FAULTS: Final = LinkFaults()


@final
@attrs.frozen(kw_only=True)
class MemoryNetworkStatistics:
    """Counters since the network was made; every loss is counted somewhere.

    Attributes:
        frames_delivered: frames read in full by the receiving end.
        frames_dropped: frames lost to a link's ``drop``.
        frames_duplicated: frames sent twice by a link's ``duplicate``.
        frames_discarded: frames queued but never read, because the stream broke
            or its reader closed it.
        bytes_delivered: bytes read by receiving ends (framed or not).
        bytes_blackholed: bytes held back by a partition (delivered on heal,
            unless the stream breaks first).
        connections_opened: successful ``connect`` calls.
        connections_refused: ``connect`` calls to an address nobody listens on.
        connections_unreachable: ``connect`` calls that timed out on a partition.
    """

    frames_delivered: int
    frames_dropped: int
    frames_duplicated: int
    frames_discarded: int
    bytes_delivered: int
    bytes_blackholed: int
    connections_opened: int
    connections_refused: int
    connections_unreachable: int


@final
@attrs.define
class _Counters:
    """The mutable twin of :class:`MemoryNetworkStatistics`."""

    frames_delivered: int = 0
    frames_dropped: int = 0
    frames_duplicated: int = 0
    frames_discarded: int = 0
    bytes_delivered: int = 0
    bytes_blackholed: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    connections_unreachable: int = 0


@final
@attrs.frozen
class _Partition:
    """Cuts ``side_a -> side_b`` and, unless one-way, ``side_b -> side_a``."""

    side_a: frozenset[str]
    side_b: frozenset[str]
    one_way: bool

    def blocks(self, src: str, dst: str) -> bool:
        if src in self.side_a and dst in self.side_b:
            return True
        return not self.one_way and src in self.side_b and dst in self.side_a


@final
class _Guard:
    """Raises BusyResourceError when two tasks use one side of a stream at once.

    As trio's own (private) ConflictDetector: concurrent ``send_all`` calls would
    interleave their bytes, concurrent ``receive_some`` calls would split them.
    """

    __slots__ = ("_held", "_message")

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._held = False


@final
class _Chunk:
    """Bytes that become readable together at ``due``."""

    __slots__ = ("data", "due", "frames", "offset")

    def __init__(self, data: bytes, frames: int, due: float) -> None:
        self.data = data
        # Whole frames in data (0 for opaque bytes, a truncated frame or EOF), so
        # that frames_delivered counts frames, not chunks.
        self.frames = frames
        self.due = due
        # Bytes of data already read; 0 <= offset < len(data) while queued.
        self.offset = 0


@final
class _Piece:
    """Bytes the cutter releases, and how the faults may treat them."""

    __slots__ = ("data", "faultable", "frames")

    def __init__(self, data: bytes, frames: int, *, faultable: bool) -> None:
        self.data = data
        # 1 when these bytes end a frame, else 0.
        self.frames = frames
        # A whole frame, none of it released before: drop and duplicate apply.
        self.faultable = faultable


@final
class _FrameCutter:
    """Finds frame boundaries in the bytes one side sends (sans-IO).

    Bytes are held back only when ``whole`` frames are asked for (drop and
    duplicate need them); otherwise they are released as they come, and the
    cutter only keeps track of where the current frame ends, so that a stream
    without those faults is byte-transparent and never stalls on a partial frame.
    A frame of which some bytes were already released is never faultable: its
    remainder goes through, and faults start at the next boundary.
    """

    __slots__ = (
        "_committed",
        "_frame_bytes_max",
        "_header",
        "_pending",
        "_seen",
        "_total",
        "opaque",
    )

    def __init__(self, frame_bytes_max: int) -> None:
        self._frame_bytes_max = frame_bytes_max
        # The current frame: its header bytes so far (at most 4), its length with
        # the header once known (0 before), and how many of its bytes we have seen.
        self._header = bytearray()
        self._total = 0
        self._seen = 0
        # Bytes of the current frame held back (only when whole frames are asked
        # for). Invariant: never a whole frame between calls.
        self._pending = bytearray()
        # Some bytes of the current frame were already released.
        self._committed = False
        # A header announced more than frame_bytes_max: these are not our frames
        # (TLS, or a test's raw bytes), and every later byte passes as it is.
        self.opaque = False

    def cut(self, data: memoryview, *, whole: bool) -> list[_Piece]:
        """Take the bytes of one write; return what may go now, in order."""
        if self.opaque:
            return [_Piece(bytes(data), 0, faultable=False)] if data else []
        pieces: list[_Piece] = []
        pending = self._pending
        if pending and not whole:
            # Drop and duplicate were lifted mid-frame: let the held bytes go.
            pieces.append(_Piece(bytes(pending), 0, faultable=False))
            pending.clear()
            self._committed = True
        size_max = self._frame_bytes_max
        end_all = len(data)
        start = 0  # The first byte of data not yet in a piece or pending.
        pos = 0
        while pos < end_all:
            if self._total == 0:
                take = min(_HEADER_BYTES - len(self._header), end_all - pos)
                self._header += data[pos : pos + take]
                pos += take
                self._seen += take
                if len(self._header) < _HEADER_BYTES:
                    break
                size = int.from_bytes(self._header, "big")
                if size > size_max:
                    self.opaque = True
                    rest = bytes(pending) + bytes(data[start:])
                    pending.clear()
                    pieces.append(_Piece(rest, 0, faultable=False))
                    return pieces
                self._total = _HEADER_BYTES + size
            else:
                take = min(self._total - self._seen, end_all - pos)
                pos += take
                self._seen += take
            if self._seen == self._total:
                frame = (
                    bytes(pending) + bytes(data[start:pos])
                    if pending
                    else bytes(data[start:pos])
                )
                pending.clear()
                pieces.append(_Piece(frame, 1, faultable=not self._committed))
                start = pos
                self._header.clear()
                self._total = 0
                self._seen = 0
                self._committed = False
        if start < end_all:
            if whole and not self._committed:
                pending += data[start:]
            else:
                tail = bytes(pending) + bytes(data[start:])
                pending.clear()
                pieces.append(_Piece(tail, 0, faultable=False))
                self._committed = True
        return pieces

    def flush(self) -> bytes:
        """The sender closed: give back the bytes held of an incomplete frame."""
        held = bytes(self._pending)
        self._pending.clear()
        return held


@final
class _Pipe:
    """One direction of a connection: the bytes node ``src`` sends node ``dst``."""

    __slots__ = (
        "_buffered_bytes",
        "_cutter",
        "_held",
        "_last_due",
        "_network",
        "_queue",
        "_rng",
        "broken",
        "dst",
        "eof",
        "read_closed",
        "readers",
        "src",
        "writers",
    )

    def __init__(
        self, network: MemoryNetwork, src: str, dst: str, rng: random.Random
    ) -> None:
        self._network = network
        self.src = src
        self.dst = dst
        self._rng = rng
        self._cutter = _FrameCutter(network._frame_bytes_max)
        # Readable chunks in order; due times never decrease.
        self._queue: deque[_Chunk] = deque()
        # Chunks blackholed by a partition, in order; they follow all of _queue.
        self._held: list[_Chunk] = []
        # Unread bytes in _queue and _held (not the cutter's): what flow control
        # bounds.
        self._buffered_bytes = 0
        self._last_due = -math.inf
        # The sender closed its stream: after the queue drains, the reader sees EOF.
        self.eof = False
        # The reader closed its stream: sending fails with BrokenResourceError.
        self.read_closed = False
        # disconnect() broke the connection: data is gone, reads EOF, sends fail.
        self.broken = False
        # The task in the receiver's receive_some and the one in the sender's
        # send_all / wait_send_all_might_not_block park here (one each, by _Guard).
        self.readers = trio.lowlevel.ParkingLot()
        self.writers = trio.lowlevel.ParkingLot()

    @property
    def writable(self) -> bool:
        return not (self.broken or self.read_closed)

    @property
    def room_bytes(self) -> int:
        return self._network._receive_buffer_bytes_max - self._buffered_bytes

    def is_full(self) -> bool:
        """Whether a send would block: writable, but no room."""
        return self.writable and self.room_bytes <= 0

    @property
    def has_held(self) -> bool:
        return bool(self._held)

    @property
    def at_eof(self) -> bool:
        return self.broken or (self.eof and not self._queue and not self._held)

    @property
    def next_due(self) -> float:
        return self._queue[0].due if self._queue else math.inf

    # -- the sending side ----------------------------------------------------

    def write(self, data: memoryview, now: float) -> None:
        """Accept bytes from ``send_all``; queue them, faults applied per frame."""
        network = self._network
        link = network._links.get((self.src, self.dst), _NO_FAULTS)
        blocked = network._is_blocked(self.src, self.dst)
        pieces = self._cutter.cut(data, whole=link.drop > 0.0 or link.duplicate > 0.0)
        if link is _NO_FAULTS:
            # The fast path: one chunk for everything this write completes.
            joined = b"".join(piece.data for piece in pieces)
            if joined:
                frames = sum(piece.frames for piece in pieces)
                self._enqueue(joined, frames, now, blocked=blocked)
        else:
            for piece in pieces:
                if piece.faultable:
                    self._enqueue_with_faults(piece.data, link, now, blocked=blocked)
                else:
                    earliest = now + self._draw_delay(link)
                    self._enqueue(piece.data, piece.frames, earliest, blocked=blocked)
        self.readers.unpark_all()

    def _draw_delay(self, link: LinkFaults) -> float:
        if link.jitter > 0.0:
            return link.delay + self._rng.uniform(0.0, link.jitter)
        return link.delay

    def _enqueue_with_faults(
        self, frame: bytes, link: LinkFaults, now: float, *, blocked: bool
    ) -> None:
        counters = self._network._counters
        rng = self._rng
        if link.drop > 0.0 and rng.random() < link.drop:
            counters.frames_dropped += 1
            return
        copies = 1
        if link.duplicate > 0.0 and rng.random() < link.duplicate:
            counters.frames_duplicated += 1
            copies = 2
        for _ in range(copies):
            self._enqueue(frame, 1, now + self._draw_delay(link), blocked=blocked)

    def _enqueue(
        self, data: bytes, frames: int, earliest: float, *, blocked: bool
    ) -> None:
        if blocked:
            self._held.append(_Chunk(data, frames, math.inf))
            self._network._counters.bytes_blackholed += len(data)
        else:
            due = max(self._last_due, earliest)
            self._last_due = due
            self._queue.append(_Chunk(data, frames, due))
        self._buffered_bytes += len(data)

    def close_write(self, now: float) -> None:
        """The sender closed: flush a truncated frame, then EOF, both in order."""
        truncated = self._cutter.flush()
        if not self.writable:
            return
        blocked = self._network._is_blocked(self.src, self.dst)
        if truncated:
            # TCP would deliver these bytes; the reader's decoder sees a
            # truncated frame before EOF.
            self._enqueue(truncated, 0, now, blocked=blocked)
        # EOF travels as an empty chunk, so it waits behind delayed and held frames.
        self._enqueue(b"", 0, now, blocked=blocked)
        self.eof = True
        self.readers.unpark_all()

    def release(self, now: float) -> None:
        """A partition healed: the held chunks become readable, in order."""
        due = max(self._last_due, now)
        self._last_due = due
        for chunk in self._held:
            chunk.due = due
            self._queue.append(chunk)
        self._held.clear()
        self.readers.unpark_all()

    # -- the receiving side --------------------------------------------------

    def take(self, now: float, max_bytes: int) -> bytes:
        """Read up to ``max_bytes`` of what is due; ``b""`` if nothing is."""
        queue = self._queue
        counters = self._network._counters
        parts: list[bytes] = []
        taken = 0
        while queue and taken < max_bytes and queue[0].due <= now:
            chunk = queue[0]
            available = len(chunk.data) - chunk.offset
            wanted = max_bytes - taken
            if available <= wanted:
                parts.append(chunk.data[chunk.offset :] if chunk.offset else chunk.data)
                taken += available
                queue.popleft()
                counters.frames_delivered += chunk.frames
            else:
                parts.append(chunk.data[chunk.offset : chunk.offset + wanted])
                chunk.offset += wanted
                taken += wanted
        if taken:
            self._buffered_bytes -= taken
            counters.bytes_delivered += taken
            self.writers.unpark_all()
        return b"".join(parts)

    def close_read(self) -> None:
        """The receiver closed: nobody will read, so the sender must fail."""
        self.read_closed = True
        self._discard()
        self.writers.unpark_all()

    def break_(self) -> None:
        """The connection broke: the data is gone, both ends are told."""
        self.broken = True
        self._discard()
        self.readers.unpark_all()
        self.writers.unpark_all()

    def _discard(self) -> None:
        counters = self._network._counters
        counters.frames_discarded += sum(c.frames for c in self._queue)
        counters.frames_discarded += sum(c.frames for c in self._held)
        self._queue.clear()
        self._held.clear()
        self._cutter.flush()
        self._buffered_bytes = 0


@final
class MemoryStream(trio.abc.Stream):
    """One end of an in-memory connection: a full-duplex ``trio.abc.Stream``.

    Attributes:
        local_name: the node name of this end (given to ``listen`` or ``connect``).
        peer_name: the node name of the other end.

    ``send_all``, ``wait_send_all_might_not_block``, ``receive_some`` and
    ``aclose`` are checkpoints.

    Error handling:
        * Using a stream after ``aclose``: ``trio.ClosedResourceError``, also for a
          task blocked in it when another task closes it.
        * Two tasks sending (or waiting to send) at once, or receiving at once:
          ``trio.BusyResourceError``.
        * Sending after the peer closed, or after ``disconnect``:
          ``trio.BrokenResourceError``. Receiving then returns ``b""``.
    """

    __slots__ = (
        "_closed",
        "_connection",
        "_incoming",
        "_outgoing",
        "_receive_guard",
        "_send_guard",
        "local_name",
        "peer_name",
    )

    def __init__(
        self,
        connection: _Connection,
        *,
        local_name: str,
        peer_name: str,
        outgoing: _Pipe,
        incoming: _Pipe,
    ) -> None:
        self._connection = connection
        self.local_name = local_name
        self.peer_name = peer_name
        self._outgoing = outgoing
        self._incoming = incoming
        self._closed = False
        self._send_guard = _Guard("another task is sending on this stream")
        self._receive_guard = _Guard("another task is receiving on this stream")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryStream {self.local_name} -> {self.peer_name} {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")

    def _check_sendable(self) -> None:
        self._check_open()
        if not self._outgoing.writable:
            raise trio.BrokenResourceError(
                f"the connection {self.local_name} -> {self.peer_name} is broken"
            )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``, blocking while the peer's receive buffer is full.

        Raises:
            trio.ClosedResourceError: this stream was closed.
            trio.BrokenResourceError: the peer closed, or the connection broke.
            trio.BusyResourceError: another task is sending on this stream.
        """
        with self._send_guard:
            self._check_open()
            # Copy now: the caller may reuse its buffer once we return, and we
            # may return before the peer has read it.
            view = memoryview(bytes(data))
            await trio.lowlevel.checkpoint()
            pipe = self._outgoing
            pos = 0
            while True:
                self._check_sendable()
                if pos == len(view):
                    return
                room = pipe.room_bytes
                if room <= 0:
                    await pipe.writers.park()
                    continue
                end = min(len(view), pos + room)
                pipe.write(view[pos:end], trio.current_time())
                pos = end

    async def wait_send_all_might_not_block(self) -> None:
        """Return once the peer's receive buffer has room, or sending would fail.

        Raises:
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is sending or waiting on this stream.
        """
        with self._send_guard:
            self._check_open()
            pipe = self._outgoing
            if not pipe.is_full():
                await trio.lowlevel.checkpoint()
                return
            while pipe.is_full():
                await pipe.writers.park()
                self._check_open()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait for bytes that are due; return ``b""`` at end of stream.

        Args:
            max_bytes: return at most this many bytes (default 64 KiB).

        Raises:
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is receiving on this stream.
            ValueError: ``max_bytes`` is less than 1.
        """
        if max_bytes is None:
            max_bytes = _RECEIVE_BYTES_DEFAULT
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._receive_guard:
            self._check_open()
            await trio.lowlevel.checkpoint()
            pipe = self._incoming
            while True:
                self._check_open()
                data = pipe.take(trio.current_time(), max_bytes)
                if data:
                    return data
                if pipe.at_eof:
                    return b""
                # Sleep until the head chunk is due or something changes (more
                # bytes, EOF, a heal, a break, our own close).
                with trio.move_on_at(pipe.next_due):
                    await pipe.readers.park()

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._outgoing.close_write(trio.current_time())
        self._incoming.close_read()
        # Wake our own tasks blocked in this stream, so they raise Closed.
        self._incoming.readers.unpark_all()
        self._outgoing.writers.unpark_all()
        self._connection.stream_closed()

    async def aclose(self) -> None:
        """Close this end: the peer reads what was sent, then EOF. Idempotent.

        Resource handling:
            The stream is closed even if this call is cancelled. Bytes sent to us
            and not yet read are discarded; the peer's next send fails.
        """
        self._close_now()
        await trio.lowlevel.checkpoint()


@final
class _Connection:
    """Both pipes and both streams of one connection, for breaking and healing."""

    __slots__ = ("_network", "_open_streams", "client", "down", "server", "up")

    def __init__(
        self, network: MemoryNetwork, client_name: str, server_name: str, ordinal: int
    ) -> None:
        self._network = network
        seed = network._seed

        def rng(src: str, dst: str) -> random.Random:
            return random.Random(f"{seed}\x00{src}\x00{dst}\x00{ordinal}")

        self.up = _Pipe(
            network, client_name, server_name, rng(client_name, server_name)
        )
        self.down = _Pipe(
            network, server_name, client_name, rng(server_name, client_name)
        )
        self.client = MemoryStream(
            self,
            local_name=client_name,
            peer_name=server_name,
            outgoing=self.up,
            incoming=self.down,
        )
        self.server = MemoryStream(
            self,
            local_name=server_name,
            peer_name=client_name,
            outgoing=self.down,
            incoming=self.up,
        )
        self._open_streams = 2

    def joins(self, a: str, b: str) -> bool:
        return {self.up.src, self.up.dst} == {a, b}

    def break_(self) -> None:
        self.up.break_()
        self.down.break_()

    def stream_closed(self) -> None:
        self._open_streams -= 1
        if self._open_streams == 0:
            self._network._connections.discard(self)


@final
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts connections made to one address of a :class:`MemoryNetwork`.

    As with TCP, ``connect`` succeeds as soon as the connection is queued here;
    ``accept`` takes it off the queue.

    Attributes:
        address: the address bound.
        local_name: the node name given to ``listen``.

    Resource handling:
        ``aclose`` frees the address (a later ``connect`` is refused) and breaks
        connections not yet accepted; accepted ones live on.
    """

    __slots__ = (
        "_backlog",
        "_closed",
        "_guard",
        "_network",
        "_waiters",
        "address",
        "local_name",
    )

    def __init__(
        self, network: MemoryNetwork, address: Address, local_name: str
    ) -> None:
        self._network = network
        self.address = address
        self.local_name = local_name
        self._backlog: deque[MemoryStream] = deque()
        self._waiters = trio.lowlevel.ParkingLot()
        self._closed = False
        self._guard = _Guard("another task is accepting on this listener")

    def __repr__(self) -> str:
        host, port = self.address
        return f"<MemoryListener {self.local_name} on {host}:{port}>"

    def _enqueue(self, stream: MemoryStream) -> None:
        self._backlog.append(stream)
        self._waiters.unpark_all()

    async def accept(self) -> MemoryStream:
        """Wait for a connection and return its server end. A checkpoint.

        Raises:
            trio.ClosedResourceError: the listener was closed.
            trio.BusyResourceError: another task is accepting.
        """
        with self._guard:
            if self._closed:
                raise trio.ClosedResourceError("this listener was closed")
            await trio.lowlevel.checkpoint()
            while not self._backlog:
                await self._waiters.park()
                if self._closed:
                    raise trio.ClosedResourceError("this listener was closed")
            return self._backlog.popleft()

    async def aclose(self) -> None:
        """Stop listening. Idempotent; closes even if cancelled."""
        if not self._closed:
            self._closed = True
            self._network._unbind(self)
            while self._backlog:
                stream = self._backlog.popleft()
                stream._connection.break_()
                stream._close_now()
            self._waiters.unpark_all()
        await trio.lowlevel.checkpoint()


@final
class MemoryNetwork:
    """An in-memory network of named nodes with faults set at any time.

    Implements :class:`runtime.shell.network.Network`. Give every node of a test
    the same instance; each passes its node name as ``local_name``. Make it
    anywhere (it needs no nursery, see the module docstring) and use it inside
    ``trio.run``, normally under ``MockClock(autojump_threshold=0)``.

    Args:
        seed: seeds the fault draws (drop, duplicate, jitter).
        receive_buffer_bytes_max: unread bytes each direction of a connection
            holds before ``send_all`` blocks (backpressure).
        connect_timeout: virtual seconds a ``connect`` across a partition waits
            for a heal before failing with EHOSTUNREACH.
        frame_bytes_max: the largest frame body recognised; a header announcing
            more turns that direction opaque (see the module docstring).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        receive_buffer_bytes_max: int = RECEIVE_BUFFER_BYTES_MAX_DEFAULT,
        connect_timeout: float = 0.0,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
    ) -> None:
        if receive_buffer_bytes_max < 1:
            raise ValueError("receive_buffer_bytes_max must be >= 1")
        if not (connect_timeout >= 0.0 and math.isfinite(connect_timeout)):
            raise ValueError("connect_timeout must be finite seconds >= 0")
        if frame_bytes_max < 1:
            raise ValueError("frame_bytes_max must be >= 1")
        self._seed = seed
        self._receive_buffer_bytes_max = receive_buffer_bytes_max
        self._connect_timeout = connect_timeout
        self._frame_bytes_max = frame_bytes_max
        self._listeners: dict[Address, MemoryListener] = {}
        self._next_port = _PORT_EPHEMERAL_FIRST
        # Live connections: until both of their streams are closed.
        self._connections: set[_Connection] = set()
        # Connections made so far per (connector, listener) pair: picks the
        # per-pipe random generator, so it does not depend on other traffic.
        self._connect_counts: dict[tuple[str, str], int] = {}
        self._links: dict[tuple[str, str], LinkFaults] = {}
        self._partitions: dict[PartitionId, _Partition] = {}
        self._next_partition = 1
        # connect() calls waiting for a heal park here.
        self._topology = trio.lowlevel.ParkingLot()
        self._counters = _Counters()

    # -- the Network protocol ------------------------------------------------

    async def listen(
        self, address: Address, *, local_name: str
    ) -> tuple[MemoryListener, Address]:
        """Bind ``address``; port 0 picks a free port. A checkpoint.

        Raises:
            OSError: EADDRINUSE when the address is taken (until its listener
                closes), EADDRNOTAVAIL when no port is free.
            ValueError: the port is outside 0..65535.
        """
        await trio.lowlevel.checkpoint()
        host, port = address
        if not 0 <= port <= _PORT_LAST:
            raise ValueError(f"port {port} is outside 0..{_PORT_LAST}")
        if port == 0:
            port = self._allocate_port(host)
        bound = (host, port)
        if bound in self._listeners:
            raise OSError(errno.EADDRINUSE, f"address {host}:{port} is already in use")
        listener = MemoryListener(self, bound, local_name)
        self._listeners[bound] = listener
        return listener, bound

    async def connect(self, address: Address, *, local_name: str) -> MemoryStream:
        """Connect to ``address``; the listener's ``accept`` gets the other end.

        A checkpoint. Across a partition it waits up to ``connect_timeout`` of
        virtual time for a heal.

        Raises:
            ConnectionRefusedError: (an OSError, ECONNREFUSED) nobody listens there.
            OSError: EHOSTUNREACH, the listener's node is cut off by a partition.
        """
        await trio.lowlevel.checkpoint()
        host, port = address
        deadline = trio.current_time() + self._connect_timeout
        while True:
            listener = self._listeners.get(address)
            if listener is None:
                self._counters.connections_refused += 1
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED, f"nobody listens on {host}:{port}"
                )
            server_name = listener.local_name
            # A handshake needs both directions: SYN one way, SYN-ACK the other.
            cut = self._is_blocked(local_name, server_name) or self._is_blocked(
                server_name, local_name
            )
            if not cut:
                break
            if trio.current_time() >= deadline:
                self._counters.connections_unreachable += 1
                raise OSError(
                    errno.EHOSTUNREACH,
                    f"{server_name} at {host}:{port} is unreachable from {local_name}",
                )
            with trio.move_on_at(deadline):
                await self._topology.park()
        key = (local_name, server_name)
        ordinal = self._connect_counts.get(key, 0)
        self._connect_counts[key] = ordinal + 1
        connection = _Connection(self, local_name, server_name, ordinal)
        self._connections.add(connection)
        self._counters.connections_opened += 1
        listener._enqueue(connection.server)
        return connection.client

    # -- faults --------------------------------------------------------------

    def partition(
        self, side_a: Iterable[str], side_b: Iterable[str], *, one_way: bool = False
    ) -> PartitionId:
        """Cut every node of ``side_a`` off from every node of ``side_b``.

        Frames sent across are blackholed (held) until healed; new connections
        across fail with EHOSTUNREACH. Partitions stack: a direction is open when
        no partition cuts it.

        Args:
            side_a: node names.
            side_b: node names, none of them in ``side_a``.
            one_way: cut only ``side_a -> side_b`` (frames the other way flow;
                new connections still fail, as a TCP handshake needs both ways).

        Returns:
            The id to pass to :meth:`heal`.

        Raises:
            ValueError: a node is on both sides.
        """
        a = frozenset(side_a)
        b = frozenset(side_b)
        if a & b:
            raise ValueError(f"nodes on both sides of a partition: {sorted(a & b)}")
        partition_id = PartitionId(self._next_partition)
        self._next_partition += 1
        self._partitions[partition_id] = _Partition(a, b, one_way)
        return partition_id

    def heal(self, partition_id: PartitionId | None = None) -> None:
        """Remove one partition, or every partition when ``partition_id`` is None.

        Frames held by a direction that is now open become readable at once, in
        order, behind anything still in flight (TCP retransmits them): a heal
        loses nothing, and a stream that outlived its partition is intact. Call
        it inside ``trio.run``: it reads the clock.

        Raises:
            KeyError: no such partition (never made, or already healed).
        """
        if partition_id is None:
            self._partitions.clear()
        else:
            try:
                del self._partitions[partition_id]
            except KeyError:
                raise KeyError(f"no partition {partition_id}") from None
        now = trio.current_time()
        for connection in self._connections:
            for pipe in (connection.up, connection.down):
                if pipe.has_held and not self._is_blocked(pipe.src, pipe.dst):
                    pipe.release(now)
        self._topology.unpark_all()

    def is_partitioned(self, src: str, dst: str) -> bool:
        """Whether a partition cuts the direction ``src -> dst`` now."""
        return self._is_blocked(src, dst)

    def disconnect(self, a: str, b: str) -> int:
        """Break every connection between nodes ``a`` and ``b``, either direction.

        As a TCP reset: data in flight is discarded; both ends then read ``b""``
        and fail to send with ``trio.BrokenResourceError``. New connections may
        be made at once (unless a partition forbids it).

        Returns:
            The number of connections broken.
        """
        broken = 0
        for connection in self._connections:
            if connection.joins(a, b) and not connection.up.broken:
                connection.break_()
                broken += 1
        return broken

    def set_link(
        self,
        src: str,
        dst: str,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        """Set the faults of frames sent from ``src`` to ``dst``, replacing any.

        They apply to frames sent from now on, on existing and new connections.

        Raises:
            ValueError: a probability outside [0, 1] or a negative duration.
        """
        faults = LinkFaults(drop=drop, duplicate=duplicate, delay=delay, jitter=jitter)
        if faults == _NO_FAULTS:
            self._links.pop((src, dst), None)
        else:
            self._links[(src, dst)] = faults

    def clear_link(self, src: str | None = None, dst: str | None = None) -> None:
        """Remove link faults: of ``src -> dst``; None matches any node."""
        for key in list(self._links):
            if (src is None or key[0] == src) and (dst is None or key[1] == dst):
                del self._links[key]

    def link(self, src: str, dst: str) -> LinkFaults:
        """The faults now set on ``src -> dst`` (all zero when none)."""
        return self._links.get((src, dst), _NO_FAULTS)

    def statistics(self) -> MemoryNetworkStatistics:
        """A snapshot of the counters."""
        return MemoryNetworkStatistics(**attrs.asdict(self._counters))

    # -- internals -----------------------------------------------------------

    def _is_blocked(self, src: str, dst: str) -> bool:
        if not self._partitions:
            return False
        return any(p.blocks(src, dst) for p in self._partitions.values())

    def _allocate_port(self, host: str) -> int:
        span = _PORT_LAST - _PORT_EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = port + 1 if port < _PORT_LAST else _PORT_EPHEMERAL_FIRST
            if (host, port) not in self._listeners:
                return port
        raise OSError(errno.EADDRNOTAVAIL, f"no free port on {host}")

    def _unbind(self, listener: MemoryListener) -> None:
        if self._listeners.get(listener.address) is listener:
            del self._listeners[listener.address]


if TYPE_CHECKING:
    # Checked by mypy: MemoryNetwork stands wherever a Network is expected.
    _CONFORMS: Network = MemoryNetwork()
