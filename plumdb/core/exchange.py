"""Active anti-entropy: compare two partitions' Merkle trees, top down, sans-IO.

The exchange of plum_db (``plum_db_exchange_statem`` over Riak's ``hashtree``)
as a pure core: one side, the *initiator*, holds an
:class:`AntiEntropyExchange` for one partition and asks questions; the other
side answers each with :func:`respond`, statelessly, from its own tree.

Theory of operation
-------------------
1. ``start()`` returns a :class:`RootRequest` naming the partition and the
   tree's shape. The responder answers with its root hash (:class:`RootReply`)
   or refuses (:class:`ExchangeRefused`, e.g. another shape).
2. Equal roots: the exchange is done, no differences. Otherwise the initiator
   asks for the *summaries* (child bitmap + child hashes) of the differing
   nodes, level by level (:class:`NodesRequest` / :class:`NodesReply`), and
   compares each with its own. Only children whose hashes differ are
   descended into. A child that only the initiator has needs no question:
   every key below it is ``only_local``.
3. At the segment level it asks for the differing segments' ``(key, object
   hash)`` lists (:class:`SegmentsRequest` / :class:`SegmentsReply`) and
   compares them key by key.
4. When nothing is outstanding the exchange is ``done``; :meth:`result` gives
   the keys that are ``only_local``, ``only_remote`` or ``different``. What to
   do with them (send ours, fetch theirs, merge) is the replication layer's
   business.

The bytes exchanged grow with the number of differing keys times the tree's
depth, not with the store: each differing key costs at most one summary per
level plus its segment's entries.

Flow control and bounds: requests name at most ``indices_per_request_max``
nodes or ``segments_per_request_max`` segments; at most
``requests_in_flight_max`` are outstanding, the rest queue inside the core
(so a large difference becomes a stream, never a burst). Once
``differences_max`` keys are found no new request is made and the result is
``truncated``: the next exchange finds the rest.

The trees may change while an exchange runs (writes go on); answers are
compared with the tree as it is when they arrive. A difference that appears or
disappears meanwhile may be missed or reported spuriously; a later exchange
settles it, and repairing a key that is in fact equal is harmless (a merge
that changes nothing).

Events and outputs
------------------
Initiator inputs: :meth:`AntiEntropyExchange.start`,
:meth:`AntiEntropyExchange.on_reply`; each returns the requests to send now,
in order. Responder: :func:`respond` (request in, reply out). No I/O, no
clock, no randomness: the driver owns timeouts (it drops an exchange whose
peer is silent) and the channel.

Messages are ``@attrs.frozen`` with plain fields (ints, bytes, tuples) and
validate on construction. Replies are checked again on receipt: a peer that
breaks the protocol (an unknown request id, a malformed summary, a key in the
wrong segment) fails the exchange with :class:`plumdb.errors.ExchangeError`,
never an assertion.

Invariants
----------
* ``len(outstanding) <= requests_in_flight_max``; the exchange is done exactly
  when nothing is outstanding or queued after ``start``.
* Reported keys are distinct, and each is in exactly one of the three lists.
"""

from __future__ import annotations

from collections import deque
from typing import Final, TypeAlias, final

import attrs

from plumdb.core.keys import FULL_KEY_BYTES_MAX
from plumdb.core.merkle import (
    EMPTY_HASH,
    NODE_HASH_BYTES,
    MerkleConfig,
    MerkleTree,
    parse_summary,
)
from plumdb.core.object import HASH_BYTES
from plumdb.errors import ExchangeError

__all__ = [
    "INDICES_PER_MESSAGE_MAX",
    "SEGMENT_KEYS_MAX",
    "AntiEntropyExchange",
    "ExchangeConfig",
    "ExchangeMessage",
    "ExchangeRefused",
    "ExchangeReply",
    "ExchangeRequest",
    "ExchangeResult",
    "ExchangeStatistics",
    "NodesReply",
    "NodesRequest",
    "RootReply",
    "RootRequest",
    "SegmentsReply",
    "SegmentsRequest",
    "respond",
]

INDICES_PER_MESSAGE_MAX: Final = 1024
"""Nodes or segments one request may name (and one reply may carry). At the
widest tree (1024) a summary is 8.3 KiB, so a full reply stays within the
runtime's 16 MiB frame limit."""
SEGMENT_KEYS_MAX: Final = 65_536
"""Keys one segment of a reply may list. 65,536 segments (the default shape) x
this is four billion keys per partition: far past what PlumDB is for."""
REASON_CHARS_MAX: Final = 200
"""Characters of an :class:`ExchangeRefused` reason."""


def _check_count(
    _instance: object, attribute: attrs.Attribute[int], value: object
) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, not {value!r:.40}")


def _check_positive(
    _instance: object, attribute: attrs.Attribute[int], value: object
) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, not {value!r:.40}")


def _check_indices(_instance: object, _attribute: object, value: object) -> None:
    if (
        type(value) is not tuple
        or not 0 < len(value) <= INDICES_PER_MESSAGE_MAX
        or not all(type(i) is int and i >= 0 for i in value)
    ):
        raise ValueError(
            f"indices are a tuple of 1..{INDICES_PER_MESSAGE_MAX} ints >= 0"
        )


def _check_node_hash(_instance: object, _attribute: object, value: bytes) -> None:
    if type(value) is not bytes or len(value) != NODE_HASH_BYTES:
        raise ValueError(f"a node hash is {NODE_HASH_BYTES} bytes")


def _check_nodes(_instance: object, _attribute: object, value: object) -> None:
    if (
        type(value) is not tuple
        or len(value) > INDICES_PER_MESSAGE_MAX
        or not all(type(s) is bytes for s in value)
    ):
        raise ValueError("nodes are a tuple of summaries (bytes)")


def _valid_segment(segment: object) -> bool:
    return (
        type(segment) is tuple
        and len(segment) <= SEGMENT_KEYS_MAX
        and all(
            type(entry) is tuple
            and len(entry) == 2
            and type(entry[0]) is bytes
            and len(entry[0]) <= FULL_KEY_BYTES_MAX
            and type(entry[1]) is bytes
            and len(entry[1]) == HASH_BYTES
            for entry in segment
        )
    )


def _check_segments(_instance: object, _attribute: object, value: object) -> None:
    if (
        type(value) is not tuple
        or len(value) > INDICES_PER_MESSAGE_MAX
        or not all(_valid_segment(s) for s in value)
    ):
        raise ValueError("segments are a tuple of ((key, hash), ...) tuples")


def _check_reason(_instance: object, _attribute: object, value: str) -> None:
    if type(value) is not str or len(value) > REASON_CHARS_MAX:
        raise ValueError(f"a reason is a str of at most {REASON_CHARS_MAX} characters")


# Requests (initiator -> responder).


@final
@attrs.frozen(kw_only=True)
class RootRequest:
    """Start an exchange of *partition*: the shape both trees must share."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    partition_count: int = attrs.field(validator=_check_positive)
    width: int = attrs.field(validator=_check_positive)
    levels: int = attrs.field(validator=_check_positive)


@final
@attrs.frozen(kw_only=True)
class NodesRequest:
    """Ask for the summaries of inner nodes *indices* at *level*."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    level: int = attrs.field(validator=_check_count)
    indices: tuple[int, ...] = attrs.field(validator=_check_indices)


@final
@attrs.frozen(kw_only=True)
class SegmentsRequest:
    """Ask for the ``(key, object hash)`` lists of segments *indices*."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    indices: tuple[int, ...] = attrs.field(validator=_check_indices)


# Replies (responder -> initiator).


@final
@attrs.frozen(kw_only=True)
class RootReply:
    """The responder's root hash of *partition*."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    root: bytes = attrs.field(validator=_check_node_hash)


@final
@attrs.frozen(kw_only=True)
class NodesReply:
    """Summaries (bitmap + child hashes) of the requested nodes, in request order."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    nodes: tuple[bytes, ...] = attrs.field(validator=_check_nodes)


@final
@attrs.frozen(kw_only=True)
class SegmentsReply:
    """The requested segments' ``(key, object hash)`` pairs, in request order."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    segments: tuple[tuple[tuple[bytes, bytes], ...], ...] = attrs.field(
        validator=_check_segments
    )


@final
@attrs.frozen(kw_only=True)
class ExchangeRefused:
    """The responder will not answer (another tree shape, a bad request)."""

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    reason: str = attrs.field(validator=_check_reason)


ExchangeRequest: TypeAlias = RootRequest | NodesRequest | SegmentsRequest
ExchangeReply: TypeAlias = RootReply | NodesReply | SegmentsReply | ExchangeRefused
ExchangeMessage: TypeAlias = ExchangeRequest | ExchangeReply


@final
@attrs.frozen(kw_only=True)
class ExchangeConfig:
    """Bounds of one exchange (the initiator's side).

    Attributes:
        indices_per_request_max: nodes per :class:`NodesRequest`. 64 keeps a
            reply under 9 KiB at width 16 and ~530 KiB at width 1024.
        segments_per_request_max: segments per :class:`SegmentsRequest`: 16
            segments of ~16 keys of ~60 bytes make a ~15 KiB reply.
        requests_in_flight_max: requests outstanding at once: enough to
            hide a round trip, few enough not to flood the peer.
        differences_max: keys reported before the exchange stops early
            (``truncated``): a repair batch the replication layer can apply
            in one go; the next exchange continues.
    """

    indices_per_request_max: int = 64
    segments_per_request_max: int = 16
    requests_in_flight_max: int = 4
    differences_max: int = 10_000

    def __attrs_post_init__(self) -> None:
        for name in ("indices_per_request_max", "segments_per_request_max"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= INDICES_PER_MESSAGE_MAX:
                raise ValueError(f"{name} must be in 1..{INDICES_PER_MESSAGE_MAX}")
        for name in ("requests_in_flight_max", "differences_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1")


@final
@attrs.frozen(kw_only=True)
class ExchangeResult:
    """The keys (encoded full keys, sorted) where the two partitions differ.

    Attributes:
        only_local: keys the initiator holds and the responder lacks.
        only_remote: keys the responder holds and the initiator lacks.
        different: keys both hold with different objects.
        truncated: ``differences_max`` was reached; there may be more.
    """

    only_local: tuple[bytes, ...]
    only_remote: tuple[bytes, ...]
    different: tuple[bytes, ...]
    truncated: bool

    @property
    def count(self) -> int:
        """How many keys differ (reported)."""
        return len(self.only_local) + len(self.only_remote) + len(self.different)


@final
@attrs.frozen(kw_only=True)
class ExchangeStatistics:
    """What one exchange did (a snapshot)."""

    requests_sent_count: int
    replies_received_count: int
    nodes_compared_count: int
    segments_compared_count: int
    outstanding_count: int
    queued_count: int


@final
class AntiEntropyExchange:
    """The initiator's side of one exchange of one partition with one peer.

    Args:
        tree: this node's tree of the partition (the live one; it may change
            between replies).
        partition: the partition's index.
        partition_count: partitions per node; both peers must agree.
        config: bounds (see :class:`ExchangeConfig`).

    Error handling:
        A reply that breaks the protocol, or a refusal, raises
        :class:`~plumdb.errors.ExchangeError` from :meth:`on_reply` and fails
        the exchange; later calls raise it again. Misuse by the caller
        (``start`` twice, ``result`` before ``done``) raises ``RuntimeError``.
    """

    def __init__(
        self,
        tree: MerkleTree,
        *,
        partition: int,
        partition_count: int,
        config: ExchangeConfig | None = None,
    ) -> None:
        if type(partition) is not int or not 0 <= partition < partition_count:
            raise ValueError("partition must be an int in 0..partition_count - 1")
        self._tree = tree
        self._shape: MerkleConfig = tree.config
        self._partition = partition
        self._partition_count = partition_count
        self._config = config if config is not None else ExchangeConfig()
        self._started = False
        self._failure: ExchangeError | None = None
        self._next_id = 0
        # Sent and unanswered, by request id; at most requests_in_flight_max.
        self._outstanding: dict[int, ExchangeRequest] = {}
        # Built and not yet sent (flow control), oldest first.
        self._queue: deque[ExchangeRequest] = deque()
        # Found differences; each key in exactly one of the three.
        self._only_local: set[bytes] = set()
        self._only_remote: set[bytes] = set()
        self._different: set[bytes] = set()
        self._truncated = False
        self._counts = dict.fromkeys(
            (
                "requests_sent_count",
                "replies_received_count",
                "nodes_compared_count",
                "segments_compared_count",
            ),
            0,
        )

    # Queries.

    @property
    def partition(self) -> int:
        """The partition compared."""
        return self._partition

    @property
    def done(self) -> bool:
        """Whether the exchange finished (successfully)."""
        return (
            self._started
            and self._failure is None
            and not self._outstanding
            and not self._queue
        )

    @property
    def failed(self) -> bool:
        """Whether the peer broke the protocol or refused."""
        return self._failure is not None

    def result(self) -> ExchangeResult:
        """The differences found (only once :attr:`done`)."""
        if not self.done:
            raise RuntimeError("the exchange is not done")
        return ExchangeResult(
            only_local=tuple(sorted(self._only_local)),
            only_remote=tuple(sorted(self._only_remote)),
            different=tuple(sorted(self._different)),
            truncated=self._truncated,
        )

    def statistics(self) -> ExchangeStatistics:
        """Counters and queue sizes."""
        return ExchangeStatistics(
            **self._counts,
            outstanding_count=len(self._outstanding),
            queued_count=len(self._queue),
        )

    # Inputs.

    def start(self) -> list[ExchangeRequest]:
        """Begin: the :class:`RootRequest` to send."""
        if self._started:
            raise RuntimeError("an exchange starts once")
        self._started = True
        self._queue.append(
            RootRequest(
                request_id=self._new_id(),
                partition=self._partition,
                partition_count=self._partition_count,
                width=self._shape.width,
                levels=self._shape.levels,
            )
        )
        return self._release()

    def on_reply(self, reply: object) -> list[ExchangeRequest]:
        """Take one reply from the peer; returns the next requests to send.

        Raises:
            ExchangeError: the reply is malformed, unexpected or a refusal.
            RuntimeError: the exchange was not started.
        """
        if not self._started:
            raise RuntimeError("start the exchange first")
        if self._failure is not None:
            raise self._failure
        try:
            self._on_reply(reply)
        except ExchangeError as error:
            self._failure = error
            self._outstanding.clear()
            self._queue.clear()
            raise
        self._check()
        return self._release()

    # Transitions.

    def _on_reply(self, reply: object) -> None:
        request_id = getattr(reply, "request_id", None)
        request = (
            self._outstanding.pop(request_id, None) if type(request_id) is int else None
        )
        if request is None:
            raise ExchangeError(f"unexpected reply {type(reply).__name__}")
        self._counts["replies_received_count"] += 1
        if getattr(reply, "partition", None) != self._partition:
            raise ExchangeError("reply for another partition")
        match reply:
            case ExchangeRefused():
                raise ExchangeError(f"refused by the peer: {reply.reason!s:.200}")
            case RootReply() if isinstance(request, RootRequest):
                self._on_root(reply)
            case NodesReply() if isinstance(request, NodesRequest):
                self._on_nodes(request, reply)
            case SegmentsReply() if isinstance(request, SegmentsRequest):
                self._on_segments(request, reply)
            case _:
                raise ExchangeError(
                    f"{type(reply).__name__} does not answer {type(request).__name__}"
                )

    def _on_root(self, reply: RootReply) -> None:
        if type(reply.root) is not bytes or len(reply.root) != NODE_HASH_BYTES:
            raise ExchangeError("malformed root hash")
        if reply.root == self._tree.root():
            return
        if reply.root == EMPTY_HASH:
            # The peer holds nothing in this partition: no need to descend.
            self._add(self._only_local, self._tree.keys_under(0, 0))
            return
        self._descend(level=0, indices=[0])

    def _on_nodes(self, request: NodesRequest, reply: NodesReply) -> None:
        nodes = reply.nodes
        if type(nodes) is not tuple or len(nodes) != len(request.indices):
            raise ExchangeError("a NodesReply must answer every requested node")
        level = request.level
        child_level = level + 1
        width = self._shape.width
        next_nodes: list[int] = []
        next_segments: list[int] = []
        for index, summary in zip(request.indices, nodes, strict=True):
            theirs = parse_summary(summary, self._shape)
            if theirs is None:
                raise ExchangeError("malformed node summary")
            self._counts["nodes_compared_count"] += 1
            ours = parse_summary(self._tree.children(level, index), self._shape)
            assert ours is not None
            for child in sorted(ours.keys() | theirs.keys()):
                our_hash, their_hash = ours.get(child), theirs.get(child)
                if our_hash == their_hash:
                    continue
                child_index = index * width + child
                if their_hash is None:
                    # Only we have keys there: no need to ask.
                    self._add(
                        self._only_local,
                        self._tree.keys_under(child_level, child_index),
                    )
                elif child_level == self._shape.levels:
                    next_segments.append(child_index)
                else:
                    next_nodes.append(child_index)
        if next_nodes:
            self._descend(level=child_level, indices=next_nodes)
        if next_segments:
            self._fetch_segments(next_segments)

    def _on_segments(self, request: SegmentsRequest, reply: SegmentsReply) -> None:
        segments = reply.segments
        if type(segments) is not tuple or len(segments) != len(request.indices):
            raise ExchangeError("a SegmentsReply must answer every requested segment")
        for index, segment in zip(request.indices, segments, strict=True):
            if not _valid_segment(segment):
                raise ExchangeError("malformed segment")
            self._counts["segments_compared_count"] += 1
            theirs = dict(segment)
            if len(theirs) != len(segment):
                raise ExchangeError("a key appears twice in a segment")
            for key in theirs:
                if self._tree.segment_of(key) != index:
                    raise ExchangeError("a key listed in the wrong segment")
            ours = dict(self._tree.segment(index))
            only_local = [key for key in ours if key not in theirs]
            only_remote = [key for key in theirs if key not in ours]
            different = [
                key for key, h in ours.items() if key in theirs and theirs[key] != h
            ]
            self._add(self._only_local, sorted(only_local))
            self._add(self._only_remote, sorted(only_remote))
            self._add(self._different, sorted(different))

    # Helpers.

    def _add(self, found: set[bytes], keys: list[bytes]) -> None:
        """Record differing keys, up to ``differences_max`` in all."""
        room = self._config.differences_max - self._difference_count()
        if len(keys) > room:
            keys = keys[: max(room, 0)]
            self._truncate()
        found.update(keys)
        if self._difference_count() >= self._config.differences_max:
            self._truncate()

    def _truncate(self) -> None:
        self._truncated = True
        self._queue.clear()

    def _difference_count(self) -> int:
        return len(self._only_local) + len(self._only_remote) + len(self._different)

    def _descend(self, *, level: int, indices: list[int]) -> None:
        if self._truncated:
            return
        size = self._config.indices_per_request_max
        for start in range(0, len(indices), size):
            self._queue.append(
                NodesRequest(
                    request_id=self._new_id(),
                    partition=self._partition,
                    level=level,
                    indices=tuple(indices[start : start + size]),
                )
            )

    def _fetch_segments(self, indices: list[int]) -> None:
        if self._truncated:
            return
        size = self._config.segments_per_request_max
        for start in range(0, len(indices), size):
            self._queue.append(
                SegmentsRequest(
                    request_id=self._new_id(),
                    partition=self._partition,
                    indices=tuple(indices[start : start + size]),
                )
            )

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _release(self) -> list[ExchangeRequest]:
        """Move queued requests to outstanding, up to the in-flight bound."""
        out: list[ExchangeRequest] = []
        while (
            self._queue and len(self._outstanding) < self._config.requests_in_flight_max
        ):
            request = self._queue.popleft()
            self._outstanding[request.request_id] = request
            out.append(request)
        self._counts["requests_sent_count"] += len(out)
        self._check()
        return out

    def _check(self) -> None:
        assert len(self._outstanding) <= self._config.requests_in_flight_max
        assert not (self._only_local & self._only_remote)
        assert not (self._only_local & self._different)
        assert not (self._only_remote & self._different)


def respond(
    tree: MerkleTree, request: object, *, partition_count: int
) -> ExchangeReply:
    """Answer one exchange request from this node's tree of its partition.

    Stateless: the driver looks up ``tree`` by ``request.partition`` and
    sends the reply back. A request for another shape, or out of range, gets
    an :class:`ExchangeRefused`.

    Raises:
        ExchangeError: *request* is not an exchange request at all (nothing
            can be answered: no request id).
    """
    if not isinstance(request, RootRequest | NodesRequest | SegmentsRequest):
        raise ExchangeError(f"not an exchange request: {type(request).__name__}")
    if type(request.request_id) is not int or request.request_id < 0:
        raise ExchangeError("a request without a valid id")
    if (
        type(request.partition) is not int
        or not 0 <= request.partition < partition_count
    ):
        return _refuse(request, f"no partition {request.partition!r:.20}")
    shape = tree.config
    match request:
        case RootRequest():
            if (
                request.partition_count != partition_count
                or request.width != shape.width
                or request.levels != shape.levels
            ):
                return _refuse(
                    request,
                    f"shape mismatch: ours is partition_count={partition_count} "
                    f"width={shape.width} levels={shape.levels}",
                )
            return RootReply(
                request_id=request.request_id,
                partition=request.partition,
                root=tree.root(),
            )
        case NodesRequest():
            level = request.level
            if (
                type(level) is not int
                or not 0 <= level < shape.levels
                or not _in_range(request.indices, shape.width**level)
            ):
                return _refuse(request, "node out of range")
            return NodesReply(
                request_id=request.request_id,
                partition=request.partition,
                nodes=tuple(tree.children(level, i) for i in request.indices),
            )
        case SegmentsRequest():
            if not _in_range(request.indices, shape.segment_count):
                return _refuse(request, "segment out of range")
            return SegmentsReply(
                request_id=request.request_id,
                partition=request.partition,
                segments=tuple(tree.segment(i) for i in request.indices),
            )


def _in_range(indices: object, count: int) -> bool:
    return (
        type(indices) is tuple
        and 0 < len(indices) <= INDICES_PER_MESSAGE_MAX
        and all(type(i) is int and 0 <= i < count for i in indices)
    )


def _refuse(request: ExchangeRequest, reason: str) -> ExchangeRefused:
    partition = request.partition
    if type(partition) is not int or partition < 0:
        partition = 0
    return ExchangeRefused(
        request_id=request.request_id,
        partition=partition,
        reason=reason[:REASON_CHARS_MAX],
    )
