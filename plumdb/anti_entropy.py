"""Active anti-entropy: the trio driver of PlumDB's Merkle exchanges and repairs.

plum_db's ``plum_db_exchange_statem`` and its exchange tick, over the
runtime's control path: the sans-IO comparison is
:class:`plumdb.core.exchange.AntiEntropyExchange` (initiator) and
:func:`plumdb.core.exchange.respond` (responder); the repair messages are in
:mod:`plumdb.core.repair`. Protocol ``"plumdb.aae"``, on the configured
channel (``broadcast`` by default).

Theory of operation
-------------------
*Scheduling.* Every ``exchange_interval`` (jittered) the node queues one
*job*: the next PlumDB partition (round robin) with a random up peer. When a
peer comes up (a node joins, a connection or a network partition heals) a job
for every partition with that peer is queued, so a new or returning node is
compared in full at once. A dispatcher runs queued jobs, at most
``exchange_concurrency_max`` at a time; a job is skipped if its peer is no
longer up. Jobs are deduplicated while queued.

*One exchange* (:meth:`AntiEntropy.exchange`) of partition ``p`` with peer
``q``:

1. If our tree of ``p`` is empty (a new node, or a discarded replica), there
   is nothing to compare: we read ``q``'s partition a page at a time
   (``SyncRequest``) and merge it. That is the full resync.
2. Otherwise the trees are compared top down (only differing subtrees are
   descended; equal roots end it in one round trip).
3. Repair, both ways, in batches of ``repair_keys_max`` keys and
   ``repair_bytes_max`` bytes: we push our objects for keys ``q`` lacks or
   holds differently and pull the keys only ``q`` holds; ``q`` merges what we
   pushed and answers with what we pulled, plus its merged object wherever
   it held something ours did not.
4. If the comparison was truncated (``differences_max``), the job runs the
   exchange again at once, up to ``exchange_continuation_max`` times.

Every request waits at most ``exchange_timeout`` for its reply; then the
exchange fails (counted, logged at debug) and a later one retries. Replies are
correlated by a session id (one per exchange) and the request ids inside it;
a late reply (its session is gone) is dropped and counted.

*The responder* answers tree queries at once, inside the control handler
(they read only the in-memory tree). Repair and sync requests write to or scan
the store, so they go through a bounded queue to one responder task; past
``responder_queue_length_max`` queued requests, a request is refused
(``busy``).

*Tombstones* (docs/plumdb.md, Tombstones). Each complete, untruncated exchange
we started is recorded in
:class:`~plumdb.core.acknowledgement.TombstoneAcknowledgements` (the evidence
for collection). A collectable tombstone (older than the grace
period) is never sent to a peer that lacks its key (rule 2): not pushed as
``only_local``, not answered to a pull or a sync. And a collectable tombstone
arriving for a key we lack is refused. A collectable tombstone is still sent to
a peer that holds the key *differently*: it may hold the older value the
tombstone supersedes.

Bounds: messages stay far below the 16 MiB frame limit (a frame over the
node's ``frame_bytes_max`` is not sent and fails the exchange); a session
buffers at most ``requests_in_flight_max`` replies; the job queue holds at most
one job per (peer, partition).

Error handling: a peer's malformed message is refused by the codec (counted);
a reply that breaks the protocol fails that exchange
(:class:`~plumdb.errors.ExchangeFailed`, caused by an
:class:`~plumdb.errors.ExchangeError`); a malformed request is refused with an
``ExchangeRefused`` reply. Nothing a peer sends raises out of the handler.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import cbor2
import trio

from plumdb.config import PlumDBConfig
from plumdb.core.acknowledgement import TombstoneAcknowledgements
from plumdb.core.exchange import (
    AntiEntropyExchange,
    ExchangeRefused,
    ExchangeRequest,
    ExchangeResult,
    NodesReply,
    NodesRequest,
    RootReply,
    RootRequest,
    SegmentsReply,
    SegmentsRequest,
    respond,
)
from plumdb.core.merkle import MerkleTree
from plumdb.core.object import Object, collectable, decode_object
from plumdb.core.repair import (
    MESSAGE_TYPES,
    AntiEntropyMessage,
    RepairReply,
    RepairRequest,
    SyncReply,
    SyncRequest,
)
from plumdb.errors import ExchangeError, ExchangeFailed, MalformedData
from plumdb.store import Store, partition_of
from runtime.core.codec import MessageCodec
from runtime.errors import MessageRefused
from runtime.shell.connection import ConnectionState, OutboundConnection, SendStatus
from runtime.shell.parking import ParkingSpot

if TYPE_CHECKING:
    from runtime.shell.node import Node

__all__ = [
    "PROTOCOL",
    "AntiEntropy",
    "AntiEntropyStatistics",
    "ExchangeOutcome",
]

_log = logging.getLogger("plumdb.anti_entropy")

PROTOCOL: Final = "plumdb.aae"
"""The control protocol of PlumDB's anti-entropy messages."""

_REPLY_TYPES: Final = (
    RootReply,
    NodesReply,
    SegmentsReply,
    ExchangeRefused,
    RepairReply,
    SyncReply,
)
_TREE_REQUESTS: Final = (RootRequest, NodesRequest, SegmentsRequest)
# Replies held while the connection they leave on comes up; past it they are
# sent at once (and refused, counted). A peer asks a handful at a time.
_HELD_REPLIES_MAX: Final = 64
# Keys a sync reply may scan past (withheld tombstones) per page, as a
# multiple of repair_keys_max: bounds one reply's work on a partition full of
# collectable tombstones.
_SYNC_SCAN_FACTOR: Final = 8

_COUNTERS: Final = (
    "exchanges_started_count",
    "exchanges_completed_count",
    "exchanges_failed_count",
    "exchanges_truncated_count",
    "full_syncs_count",
    "differences_found_count",
    "objects_sent_count",
    "objects_received_count",
    "keys_repaired_count",
    "bytes_sent_count",
    "bytes_received_count",
    "requests_answered_count",
    "requests_refused_count",
    "messages_refused_count",
    "replies_late_count",
    "tombstones_withheld_count",
    "objects_refused_count",
    "send_failed_count",
)


def _all_deleted(data: bytes) -> bool:
    """Whether every sibling of a stored object is a tombstone: a cheap look at
    its plain form ``[1, [[actor, counter, [[ts, deleted, value]...]]...]]``,
    without building the object (most objects are not tombstones)."""
    try:
        plain = cbor2.loads(data)
        return all(sibling[1] is True for entry in plain[1] for sibling in entry[2])
    except Exception:
        # Not our format: let the full decoder say what is wrong.
        return True


@final
@attrs.frozen(kw_only=True)
class ExchangeOutcome:
    """What one exchange this node started did.

    Attributes:
        peer, partition: with whom, which PlumDB partition.
        full_sync: our tree was empty, so the peer's partition was read
            whole instead of compared.
        only_local_count, only_remote_count, different_count: differences
            found (0 for a full sync).
        truncated: more differences than ``differences_max``; the job runs
            it again.
        objects_sent_count, objects_received_count: objects pushed to the
            peer and received from it.
        keys_repaired_count: merges that changed our store.
        bytes_sent_count, bytes_received_count: frames of this exchange.
        duration: seconds, start to end (trio's clock).
    """

    peer: str
    partition: int
    full_sync: bool
    only_local_count: int
    only_remote_count: int
    different_count: int
    truncated: bool
    objects_sent_count: int
    objects_received_count: int
    keys_repaired_count: int
    bytes_sent_count: int
    bytes_received_count: int
    duration: float

    @property
    def difference_count(self) -> int:
        """Differing keys found."""
        return self.only_local_count + self.only_remote_count + self.different_count


@final
@attrs.frozen(kw_only=True)
class AntiEntropyStatistics:
    """Anti-entropy counters since the service opened (both roles)."""

    exchanges_started_count: int
    exchanges_completed_count: int
    exchanges_failed_count: int
    exchanges_truncated_count: int
    full_syncs_count: int
    differences_found_count: int
    objects_sent_count: int
    objects_received_count: int
    keys_repaired_count: int
    bytes_sent_count: int
    bytes_received_count: int
    requests_answered_count: int
    requests_refused_count: int
    messages_refused_count: int
    replies_late_count: int
    tombstones_withheld_count: int
    objects_refused_count: int
    send_failed_count: int
    sessions_open: int
    jobs_queued: int
    responder_queue_length: int
    replies_held: int


@final
class _Session:
    """One exchange this node started: where its replies go."""

    def __init__(self, session_id: int, peer: str, partition: int, buffer: int) -> None:
        self.id = session_id
        self.peer = peer
        self.partition = partition
        self.send, self.receive = trio.open_memory_channel[tuple[object, int]](buffer)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.objects_sent = 0
        self.objects_received = 0
        self.repaired = 0
        self.request_ids = itertools.count(1 << 20)

    def failed(self, reason: str) -> ExchangeFailed:
        return ExchangeFailed(self.peer, self.partition, reason)


@final
class AntiEntropy:
    """The anti-entropy driver of one node's PlumDB (see the module docstring).

    Args:
        node: the running node.
        store: the node's store.
        config: the service's configuration.
        clock: wall clock, integer ns (the store's).
        rng: picks peers and jitters the interval.
        acknowledgements: where complete exchanges are recorded.

    Resource handling: :meth:`run` runs the scheduler, dispatcher and
    responder until cancelled; :meth:`close` detaches from the node (the
    control handler then ignores everything).
    """

    def __init__(
        self,
        node: Node,
        store: Store,
        *,
        config: PlumDBConfig,
        clock: Callable[[], int],
        rng: random.Random,
        acknowledgements: TombstoneAcknowledgements,
    ) -> None:
        self._node = node
        self._store = store
        self._config = config
        self._clock = clock
        self._rng = rng
        self._acks = acknowledgements
        self._codec = MessageCodec(MESSAGE_TYPES)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._sessions: dict[int, _Session] = {}
        self._session_ids = itertools.count(rng.randrange(1 << 30))
        self._jobs: deque[tuple[str, int]] = deque()
        self._queued: set[tuple[str, int]] = set()
        self._jobs_spot = ParkingSpot()
        self._requests: deque[tuple[str, int, RepairRequest | SyncRequest]] = deque()
        self._requests_spot = ParkingSpot()
        self._held: deque[tuple[str, int, AntiEntropyMessage]] = deque()
        self._next_partition = 0
        self._closed = False
        self._reply_buffer = config.exchange.requests_in_flight_max + 2

    # ------------------------------------------------------------------ public

    def attach(self) -> None:
        """Register the control protocol and the node listener (once)."""
        self._node.register_control(PROTOCOL, self._on_message)
        self._node.add_node_listener(self._node_changed)

    def close(self) -> None:
        """Stop answering and scheduling (idempotent)."""
        self._closed = True
        self._node.remove_node_listener(self._node_changed)
        self._jobs.clear()
        self._queued.clear()
        self._requests.clear()
        self._held.clear()

    async def run(self) -> None:
        """Run the scheduler, the job dispatcher and the responder."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._respond_loop)
            if self._config.anti_entropy_enabled:
                nursery.start_soon(self._dispatch_loop)
                nursery.start_soon(self._tick_loop)
                for peer in self._node.membership.up_nodes():
                    self.request_round(peer)

    def request_round(self, peer: str) -> None:
        """Queue an exchange of every partition with *peer*."""
        for partition in range(self._store.partition_count):
            self._enqueue(peer, partition)

    def statistics(self) -> AntiEntropyStatistics:
        """Counters and queue lengths (a snapshot)."""
        return AntiEntropyStatistics(
            **self._counts,
            sessions_open=len(self._sessions),
            jobs_queued=len(self._jobs),
            responder_queue_length=len(self._requests),
            replies_held=len(self._held),
        )

    async def exchange(self, peer: str, partition: int) -> ExchangeOutcome:
        """Compare and repair *partition* with *peer* now (both sides).

        Raises:
            ValueError: *peer* is this node, or no such partition.
            ExchangeFailed: the peer did not answer in time, the message
                could not be sent, or the peer refused or broke the protocol.
        """
        if peer == self._node.name:
            raise ValueError("an exchange is with another node")
        if (
            type(partition) is not int
            or not 0 <= partition < self._store.partition_count
        ):
            raise ValueError(f"no partition {partition!r}")
        if self._closed:
            raise ExchangeFailed(peer, partition, "the service is closed")
        await self._wait_ready(peer)
        session = _Session(next(self._session_ids), peer, partition, self._reply_buffer)
        self._sessions[session.id] = session
        self._counts["exchanges_started_count"] += 1
        started = trio.current_time()
        started_ns = self._clock()
        result: ExchangeResult | None = None
        try:
            with session.send, session.receive:
                tree = self._store.tree(partition)
                if len(tree) == 0:
                    await self._sync_from(session)
                else:
                    result = await self._compare(session, tree)
                    await self._repair(session, result)
        except ExchangeFailed as failure:
            self._counts["exchanges_failed_count"] += 1
            _log.debug("%s", failure)
            raise
        finally:
            del self._sessions[session.id]
        if result is not None and not result.truncated:
            self._acks.record(
                peer, partition, started_ns=started_ns, different=result.different
            )
        self._counts["exchanges_completed_count"] += 1
        if result is not None:
            self._counts["differences_found_count"] += result.count
            if result.truncated:
                self._counts["exchanges_truncated_count"] += 1
        return ExchangeOutcome(
            peer=peer,
            partition=partition,
            full_sync=result is None,
            only_local_count=len(result.only_local) if result is not None else 0,
            only_remote_count=len(result.only_remote) if result is not None else 0,
            different_count=len(result.different) if result is not None else 0,
            truncated=result.truncated if result is not None else False,
            objects_sent_count=session.objects_sent,
            objects_received_count=session.objects_received,
            keys_repaired_count=session.repaired,
            bytes_sent_count=session.bytes_sent,
            bytes_received_count=session.bytes_received,
            duration=trio.current_time() - started,
        )

    async def synchronize(self, peer: str) -> list[ExchangeOutcome]:
        """Exchange every partition with *peer* now, truncated ones until done.

        Raises:
            ExchangeFailed: as :meth:`exchange`, for the first that fails.
        """
        outcomes: list[ExchangeOutcome] = []
        for partition in range(self._store.partition_count):
            outcomes.extend(await self._exchange_fully(peer, partition))
        return outcomes

    # ----------------------------------------------------------- the initiator

    async def _exchange_fully(self, peer: str, partition: int) -> list[ExchangeOutcome]:
        outcomes = []
        for _ in range(self._config.exchange_continuation_max + 1):
            outcome = await self.exchange(peer, partition)
            outcomes.append(outcome)
            if not outcome.truncated:
                break
        return outcomes

    async def _compare(self, session: _Session, tree: MerkleTree) -> ExchangeResult:
        exchange = AntiEntropyExchange(
            tree,
            partition=session.partition,
            partition_count=self._store.partition_count,
            config=self._config.exchange,
        )
        self._send_requests(session, exchange.start())
        while not exchange.done:
            reply = await self._receive(session)
            try:
                requests = exchange.on_reply(reply)
            except ExchangeError as error:
                raise session.failed(str(error)) from error
            self._send_requests(session, requests)
        return exchange.result()

    async def _repair(self, session: _Session, result: ExchangeResult) -> None:
        """Push ours, pull theirs, in bounded batches (module docstring, 3)."""
        store = self._store
        now = self._clock()
        push_keys: list[bytes] = []
        for encoded in result.only_local:
            data = store.object_data(encoded)
            if data is None:
                continue
            if self._withhold(data, now):
                continue
            push_keys.append(encoded)
        push_keys.extend(result.different)
        pull: deque[bytes] = deque(result.only_remote)
        keys_max = self._config.repair_keys_max
        bytes_max = self._config.repair_bytes_max
        at = 0
        while at < len(push_keys) or pull:
            push: list[tuple[bytes, bytes]] = []
            size = 0
            while at < len(push_keys) and len(push) < keys_max:
                data = store.object_data(push_keys[at])
                if data is not None:
                    if push and size + len(data) > bytes_max:
                        break
                    push.append((push_keys[at], data))
                    size += len(data)
                at += 1
            pulls: list[bytes] = []
            while pull and len(push) + len(pulls) < keys_max:
                pulls.append(pull.popleft())
            if not push and not pulls:
                break
            request = RepairRequest(
                request_id=next(session.request_ids),
                partition=session.partition,
                push=tuple(push),
                pull=tuple(pulls),
            )
            self._send_requests(session, [request])
            reply = await self._receive(session)
            if isinstance(reply, ExchangeRefused):
                raise session.failed(f"repair refused: {reply.reason}")
            if (
                not isinstance(reply, RepairReply)
                or reply.request_id != request.request_id
            ):
                raise session.failed(f"unexpected {type(reply).__name__} to a repair")
            session.objects_sent += len(push)
            self._counts["objects_sent_count"] += len(push)
            self._merge_received(session, reply.objects)
            remaining = reply.remaining
            if not set(remaining) <= set(pulls):
                raise session.failed("the repair reply left out keys it was not asked")
            if remaining and not reply.objects and not push:
                raise session.failed("the peer makes no progress on a repair")
            pull.extendleft(reversed(remaining))

    async def _sync_from(self, session: _Session) -> None:
        """Read the peer's whole partition (our tree of it is empty)."""
        start: bytes | None = None
        while True:
            request = SyncRequest(
                request_id=next(session.request_ids),
                partition=session.partition,
                partition_count=self._store.partition_count,
                start=start,
            )
            self._send_requests(session, [request])
            reply = await self._receive(session)
            if isinstance(reply, ExchangeRefused):
                raise session.failed(f"sync refused: {reply.reason}")
            if (
                not isinstance(reply, SyncReply)
                or reply.request_id != request.request_id
            ):
                raise session.failed(f"unexpected {type(reply).__name__} to a sync")
            self._merge_received(session, reply.objects)
            if reply.resume is None:
                break
            if start is not None and reply.resume <= start:
                raise session.failed("a sync reply does not move forward")
            start = reply.resume
        self._counts["full_syncs_count"] += 1

    def _merge_received(
        self, session: _Session, objects: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        try:
            items = self._decode_objects(objects, session.partition)
        except MalformedData as error:
            raise session.failed(f"malformed object: {error}") from error
        session.objects_received += len(items)
        self._counts["objects_received_count"] += len(items)
        try:
            repaired = sum(self._store.merge_encoded_batch(items, admit=self._admit))
        except MalformedData as error:
            raise session.failed(f"malformed key: {error}") from error
        session.repaired += repaired
        self._counts["keys_repaired_count"] += repaired

    async def _receive(self, session: _Session) -> object:
        timeout = self._config.exchange_timeout
        with trio.move_on_after(timeout):
            message, size = await session.receive.receive()
            session.bytes_received += size
            return message
        raise session.failed(f"no reply within {timeout} s")

    def _send_requests(
        self,
        session: _Session,
        requests: Iterable[ExchangeRequest | RepairRequest | SyncRequest],
    ) -> None:
        for request in requests:
            size = self._send(session.peer, session.id, request)
            if size == 0:
                raise session.failed(
                    "could not send (not connected, partitioned or overloaded)"
                )
            session.bytes_sent += size

    # ----------------------------------------------------------- the responder

    def _on_message(self, sender: str, payload: Any) -> None:
        """The control handler: route a reply, answer or queue a request."""
        if self._closed:
            return
        try:
            if (
                type(payload) is not list
                or len(payload) != 2
                or type(payload[0]) is not int
            ):
                raise MessageRefused("an anti-entropy message is [session, message]")
            session_id = payload[0]
            message = self._codec.decode(payload[1])
        except MessageRefused as error:
            self._counts["messages_refused_count"] += 1
            _log.warning("refused an anti-entropy message from %s: %s", sender, error)
            return
        size = len(cbor2.dumps(payload))
        self._counts["bytes_received_count"] += size
        if isinstance(message, _REPLY_TYPES):
            session = self._sessions.get(session_id)
            if session is None or session.peer != sender:
                self._counts["replies_late_count"] += 1
                return
            try:
                session.send.send_nowait((message, size))
            except (
                trio.WouldBlock,
                trio.ClosedResourceError,
                trio.BrokenResourceError,
            ):
                # More replies than requests outstanding: a misbehaving peer.
                self._counts["replies_late_count"] += 1
            return
        if isinstance(message, _TREE_REQUESTS):
            if not self._config.anti_entropy_enabled:
                self._refuse(sender, session_id, message, "anti-entropy is off here")
            else:
                self._answer_tree(sender, session_id, message)
        elif isinstance(message, RepairRequest | SyncRequest):
            if not self._config.anti_entropy_enabled:
                self._refuse(sender, session_id, message, "anti-entropy is off here")
            elif len(self._requests) >= self._config.responder_queue_length_max:
                self._refuse(sender, session_id, message, "busy")
            else:
                self._requests.append((sender, session_id, message))
                self._requests_spot.wake()
        else:  # Every message type is a reply or a request; kept for mypy.
            self._counts["messages_refused_count"] += 1

    def _answer_tree(
        self,
        sender: str,
        session_id: int,
        request: RootRequest | NodesRequest | SegmentsRequest,
    ) -> None:
        count = self._store.partition_count
        if not 0 <= request.partition < count:
            self._refuse(
                sender, session_id, request, f"no partition {request.partition}"
            )
            return
        reply = respond(
            self._store.tree(request.partition), request, partition_count=count
        )
        self._counts["requests_answered_count"] += 1
        self._reply(sender, session_id, reply)

    async def _respond_loop(self) -> None:
        requests = self._requests
        held = self._held
        while True:
            if held:
                peer, held_session, held_reply = held.popleft()
                await self._wait_ready(peer)
                self._send(peer, held_session, held_reply)
                continue
            if not requests:
                await self._requests_spot.park()
                continue
            sender, session_id, request = requests.popleft()
            try:
                if isinstance(request, RepairRequest):
                    reply: AntiEntropyMessage = self._answer_repair(request)
                else:
                    reply = self._answer_sync(request)
            except MalformedData as error:
                reply = self._refusal(request, f"malformed: {error}")
            self._counts["requests_answered_count"] += 1
            self._reply(sender, session_id, reply)
            await trio.lowlevel.checkpoint()

    def _answer_repair(self, request: RepairRequest) -> RepairReply | ExchangeRefused:
        store = self._store
        partition = request.partition
        if not 0 <= partition < store.partition_count:
            return self._refusal(request, f"no partition {partition}")
        items = self._decode_objects(request.push, partition)
        self._counts["objects_received_count"] += len(items)
        self._counts["keys_repaired_count"] += sum(
            store.merge_encoded_batch(items, admit=self._admit)
        )
        budget = self._config.repair_bytes_max
        objects: list[tuple[bytes, bytes]] = []
        size = 0
        for encoded, pushed in request.push:
            local = store.object_data(encoded)
            if local is None or local == pushed:
                continue
            if objects and size + len(local) > budget:
                # The rest will show in the next exchange.
                break
            objects.append((encoded, local))
            size += len(local)
        remaining: list[bytes] = []
        now = self._clock()
        for encoded in request.pull:
            if remaining:
                remaining.append(encoded)
                continue
            local = store.object_data(encoded)
            if local is None or self._withhold(local, now):
                continue
            if objects and size + len(local) > budget:
                remaining.append(encoded)
                continue
            objects.append((encoded, local))
            size += len(local)
        self._counts["objects_sent_count"] += len(objects)
        return RepairReply(
            request_id=request.request_id,
            partition=partition,
            objects=tuple(objects),
            remaining=tuple(remaining),
        )

    def _answer_sync(self, request: SyncRequest) -> SyncReply | ExchangeRefused:
        store = self._store
        if request.partition_count != store.partition_count:
            return self._refusal(
                request, f"partition_count mismatch: ours is {store.partition_count}"
            )
        if not 0 <= request.partition < store.partition_count:
            return self._refusal(request, f"no partition {request.partition}")
        keys_max = self._config.repair_keys_max
        budget = self._config.repair_bytes_max
        now = self._clock()
        objects: list[tuple[bytes, bytes]] = []
        size = 0
        scanned = 0
        resume: bytes | None = None
        for encoded, data in store.partition_data(
            request.partition, start=request.start
        ):
            if (
                len(objects) >= keys_max
                or scanned >= keys_max * _SYNC_SCAN_FACTOR
                or (objects and size + len(data) > budget)
            ):
                resume = encoded
                break
            scanned += 1
            if self._withhold(data, now):
                continue
            objects.append((encoded, data))
            size += len(data)
        self._counts["objects_sent_count"] += len(objects)
        return SyncReply(
            request_id=request.request_id,
            partition=request.partition,
            objects=tuple(objects),
            resume=resume,
        )

    # ------------------------------------------------------------- scheduling

    def _node_changed(self, peer: str, up: bool) -> None:  # noqa: FBT001
        if up and not self._closed and self._config.anti_entropy_enabled:
            self.request_round(peer)

    def _enqueue(self, peer: str, partition: int) -> None:
        job = (peer, partition)
        if self._closed or job in self._queued:
            return
        self._queued.add(job)
        self._jobs.append(job)
        self._jobs_spot.wake()

    async def _tick_loop(self) -> None:
        interval = self._config.exchange_interval
        while True:
            await trio.sleep(interval * (0.5 + self._rng.random()))
            peers = self._node.membership.up_nodes()
            if not peers:
                continue
            partition = self._next_partition
            self._next_partition = (partition + 1) % self._store.partition_count
            self._enqueue(self._rng.choice(peers), partition)

    async def _dispatch_loop(self) -> None:
        slots = trio.Semaphore(self._config.exchange_concurrency_max)
        async with trio.open_nursery() as nursery:
            while True:
                if not self._jobs:
                    await self._jobs_spot.park()
                    continue
                await slots.acquire()
                if not self._jobs:
                    slots.release()
                    continue
                job = self._jobs.popleft()
                self._queued.discard(job)
                nursery.start_soon(self._run_job, job, slots)

    async def _run_job(self, job: tuple[str, int], slots: trio.Semaphore) -> None:
        peer, partition = job
        try:
            if self._node.membership.is_up(peer):
                await self._exchange_fully(peer, partition)
        except ExchangeFailed:
            pass  # Counted and logged by exchange(); a later job retries.
        finally:
            slots.release()

    # ----------------------------------------------------------------- helpers

    async def _wait_ready(self, peer: str) -> None:
        """Wait (at most ``exchange_timeout``) until our connection to *peer*
        on the channel is up: a peer is "up" once its ``membership`` channel
        is, and the other channels may still be connecting."""
        transport = self._node.transport
        with trio.move_on_after(self._config.exchange_timeout):
            while True:
                slot = transport.slot(peer, self._config.channel, PROTOCOL)
                if (
                    type(slot) is not OutboundConnection
                    or slot.state is ConnectionState.CONNECTED
                ):
                    return
                await transport.wait_changed()

    def _send(self, peer: str, session_id: int, message: AntiEntropyMessage) -> int:
        """Enqueue *message* for *peer*; the frame's size, or 0 if refused."""
        node = self._node
        faults = node.transport.faults
        if faults is not None and faults.partitioned(peer):
            self._counts["send_failed_count"] += 1
            return 0
        frame = node.control_frame(PROTOCOL, [session_id, self._codec.encode(message)])
        if len(frame) > node.config.frame_bytes_max:
            _log.error(
                "an anti-entropy %s of %d bytes is over the frame limit; not sent",
                type(message).__name__,
                len(frame),
            )
            self._counts["send_failed_count"] += 1
            return 0
        slot = node.transport.slot(peer, self._config.channel, PROTOCOL)
        if (
            type(slot) is not OutboundConnection
            or slot.enqueue(frame, PROTOCOL) is not SendStatus.OK
        ):
            self._counts["send_failed_count"] += 1
            return 0
        self._counts["bytes_sent_count"] += len(frame)
        return len(frame)

    def _reply(self, peer: str, session_id: int, reply: AntiEntropyMessage) -> None:
        """Send a reply, or hold it while our connection to *peer* comes up.

        Connections are one-way: a request arrives on the peer's connection,
        and the reply leaves on ours, which may still be connecting when the
        peer has just come up. Otherwise best effort: a lost reply times the
        initiator's exchange out.
        """
        slot = self._node.transport.slot(peer, self._config.channel, PROTOCOL)
        if (
            type(slot) is OutboundConnection
            and slot.state is ConnectionState.CONNECTING
            and len(self._held) < _HELD_REPLIES_MAX
        ):
            self._held.append((peer, session_id, reply))
            self._requests_spot.wake()
            return
        self._send(peer, session_id, reply)

    def _refusal(
        self,
        request: RootRequest
        | NodesRequest
        | SegmentsRequest
        | RepairRequest
        | SyncRequest,
        reason: str,
    ) -> ExchangeRefused:
        self._counts["requests_refused_count"] += 1
        return ExchangeRefused(
            request_id=request.request_id,
            partition=request.partition,
            reason=reason[:200],
        )

    def _refuse(
        self,
        peer: str,
        session_id: int,
        request: RootRequest
        | NodesRequest
        | SegmentsRequest
        | RepairRequest
        | SyncRequest,
        reason: str,
    ) -> None:
        self._reply(peer, session_id, self._refusal(request, reason))

    def _decode_objects(
        self, objects: tuple[tuple[bytes, bytes], ...], partition: int
    ) -> list[tuple[bytes, Object]]:
        """Decode a peer's objects, checking they belong to *partition* (the
        keys are validated by the store's ``merge_encoded_batch``).

        Raises:
            MalformedData: an object does not decode, or is elsewhere.
        """
        count = self._store.partition_count
        items: list[tuple[bytes, Object]] = []
        for encoded, data in objects:
            if partition_of(encoded, count) != partition:
                raise MalformedData("an object of another partition")
            items.append((encoded, decode_object(data)))
        return items

    def _withhold(self, data: bytes, now_ns: int) -> bool:
        """Whether *data* (stored here, so canonical) is a collectable
        tombstone (rule 2: never sent to a peer that lacks its key)."""
        if not _all_deleted(data):
            return False
        obj = decode_object(data)
        if collectable(obj, now_ns=now_ns, grace=self._config.tombstone_grace):
            self._counts["tombstones_withheld_count"] += 1
            return True
        return False

    def _admit(self, local: Object | None, remote: Object) -> bool:
        """The repair guard: no collectable tombstone for a key we lack."""
        if local is None and collectable(
            remote, now_ns=self._clock(), grace=self._config.tombstone_grace
        ):
            self._counts["objects_refused_count"] += 1
            return False
        return True
