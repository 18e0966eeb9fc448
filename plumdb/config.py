"""Configuration of the PlumDB service: every knob, its default and why.

One frozen :class:`PlumDBConfig` per node. The store's own knobs (partition
count, tree shape, memory-only prefixes, value size) are in
:class:`~plumdb.store.StoreConfig`, the SQLite backend's in
:class:`~plumdb.backend_sqlite.SqliteConfig`, Plumtree's in
:class:`runtime.core.plumtree.PlumtreeConfig`, and one exchange's bounds in
:class:`~plumdb.core.exchange.ExchangeConfig`; this class gathers them and adds
the replication layer's. Partition count and tree shape must be equal on every
node (the exchange refuses a peer with another shape).
"""

from __future__ import annotations

import math
from typing import Final, final

import attrs

from plumdb.backend_sqlite import SqliteConfig
from plumdb.core.exchange import ExchangeConfig
from plumdb.core.repair import REPAIR_KEYS_MAX
from plumdb.store import StoreConfig
from runtime.core.plumtree import PlumtreeConfig

__all__ = ["BROADCAST_GROUP", "PlumDBConfig"]

BROADCAST_GROUP: Final = "plumdb"
"""The broadcast group every PlumDB node opens (one per node)."""

_TIME_KNOBS: Final = (
    "exchange_interval",
    "exchange_timeout",
    "tombstone_grace",
    "tombstone_collect_interval",
)
_COUNT_KNOBS: Final = (
    "exchange_concurrency_max",
    "exchange_continuation_max",
    "repair_keys_max",
    "repair_bytes_max",
    "responder_queue_length_max",
    "subscription_queue_length_max",
)


@final
@attrs.frozen(kw_only=True)
class PlumDBConfig:
    """Knobs of a node's PlumDB service.

    Attributes:
        store: partitions, tree shape, memory-only prefixes, value size.
        sqlite: durability of the SQLite backend (used when a path is given).
        broadcast_enabled: broadcast every local write through Plumtree.
            Off, replication rests on anti-entropy alone (tests of it; or a
            cluster that prefers fewer messages to fast propagation).
        plumtree: the ``"plumdb"`` broadcast group's knobs (its channel,
            ``broadcast`` by default, carries the group's repair traffic too).
        anti_entropy_enabled: run the periodic exchanges (and answer
            peers'). Off, a write missed by Plumtree is never repaired.
        channel: the channel anti-entropy messages travel on. ``broadcast``,
            beside Plumtree's own repair traffic, so a large repair never
            delays user messages on ``default``.
        exchange_interval: mean seconds between two exchanges this node
            starts (each of one PlumDB partition with one random up peer;
            partitions in turn; every interval is drawn in [0.5, 1.5] x this so
            nodes do not exchange in lockstep). 10 s is Partisan's
            ``exchange_tick_period``: a write Plumtree lost (a connection
            died with it queued) is repaired within about ``partition_count``
            intervals, while an exchange of equal partitions costs one round
            trip of ~40 bytes. A node coming up also gets a full round (every
            partition) from each peer that sees it, at once.
        exchange_timeout: seconds an exchange waits for each reply before it
            fails (the next one retries), and for its connection to come up
            first. Tree queries are answered at once; a repair batch is one
            SQLite transaction on the peer. 10 s also bounds what a peer that
            does not (yet) run PlumDB costs: its node drops our messages.
        exchange_concurrency_max: exchanges this node runs at once as the
            initiator. 2: a full round after a peer comes up overlaps two
            round trips without flooding the peer.
        exchange_continuation_max: a truncated exchange (more than
            ``exchange.differences_max`` differences) is run again at once,
            up to this many times, so a large divergence is repaired in one
            go rather than one batch per interval.
        exchange: bounds of one tree comparison (requests in flight, nodes
            and segments per request, differences per exchange).
        repair_keys_max: keys one repair message names (pushed and pulled
            together). 512 objects of a few hundred bytes make a frame of a
            few hundred KiB: large enough to amortise a round trip and a
            SQLite transaction, small enough to interleave with other traffic.
        repair_bytes_max: bytes of objects one repair or sync message carries
            (at least one object always goes, whatever its size). 4 MiB, a
            quarter of the runtime's 16 MiB frame limit.
        responder_queue_length_max: repair and sync requests from peers
            waiting for this node's responder task; past it a request is
            refused (``busy``) and its exchange retried later. Tree queries
            are answered at once and are not queued.
        tombstone_collection_enabled: collect tombstones by the rule of
            docs/plumdb.md (every member holds it, grace passed). Only under a
            membership strategy whose ``members()`` is the whole cluster
            (``full_mesh``, ``static``); under others it never runs.
        tombstone_grace: seconds a tombstone must exist before it may be
            collected, and before an exchange counts as evidence that a
            member holds it. Longer than any broadcast or repair can be in
            flight, and than a node may be away without a full resync: a day.
        tombstone_collect_interval: seconds between collection passes, each
            scanning one PlumDB partition (O(keys of that partition)).
        subscription_queue_length_max: changes queued per subscriber (its
            default); past it the oldest is dropped and counted.
        resync: discard the local replica at open and refill it from peers
            through anti-entropy, as a new node. For a node that was removed
            from the cluster and rejoins after longer than the grace period
            (docs/plumdb.md, Tombstones, rule 3).
    """

    store: StoreConfig = attrs.field(factory=StoreConfig)
    sqlite: SqliteConfig = attrs.field(factory=SqliteConfig)
    broadcast_enabled: bool = True
    plumtree: PlumtreeConfig = attrs.field(factory=PlumtreeConfig)
    anti_entropy_enabled: bool = True
    channel: str = "broadcast"
    exchange_interval: float = 10.0
    exchange_timeout: float = 10.0
    exchange_concurrency_max: int = 2
    exchange_continuation_max: int = 16
    exchange: ExchangeConfig = attrs.field(factory=ExchangeConfig)
    repair_keys_max: int = 512
    repair_bytes_max: int = 4 << 20
    responder_queue_length_max: int = 8
    tombstone_collection_enabled: bool = True
    tombstone_grace: float = 86_400.0
    tombstone_collect_interval: float = 60.0
    subscription_queue_length_max: int = 10_000
    resync: bool = False

    def __attrs_post_init__(self) -> None:
        for name in _TIME_KNOBS:
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
                or (value == 0 and name != "tombstone_grace")
            ):
                raise ValueError(f"{name} must be a finite number of seconds > 0")
        for name in _COUNT_KNOBS:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1")
        if self.repair_keys_max > REPAIR_KEYS_MAX:
            raise ValueError(f"repair_keys_max is at most {REPAIR_KEYS_MAX}")
        for name in (
            "broadcast_enabled",
            "anti_entropy_enabled",
            "tombstone_collection_enabled",
            "resync",
        ):
            if type(getattr(self, name)) is not bool:
                raise TypeError(f"{name} is a bool")
        if type(self.channel) is not str or not self.channel:
            raise ValueError("channel is a non-empty str")

    @property
    def tombstone_grace_ns(self) -> int:
        """:attr:`tombstone_grace` in integer nanoseconds."""
        return round(self.tombstone_grace * 1e9)
