"""PlumDB as a replicated service: one :class:`PlumDB` per node.

plum_db's API (``put``, ``get``, ``delete``, ``iterate``, ``fold``,
``to_list``, ``match``, subscriptions) on a node of the runtime, replicated by
Plumtree broadcast and active anti-entropy.

Theory of operation
-------------------
:meth:`PlumDB.open` (or :func:`open_plumdb`) builds the node's
:class:`~plumdb.store.Store` (SQLite in WAL mode when a path is given, memory
otherwise; memory-only prefixes per ``StoreConfig``) with the actor
``f"{node.name}#{node.creation}"``, new at every start as the store requires,
and the node's wall clock. It builds every partition's Merkle tree (yielding
between partitions), then starts:

* **Broadcast** (:mod:`plumdb.replication`): the broadcast group ``"plumdb"``.
  Every local write (put, delete, a get's write-back) reaches the store's
  subscriber, which broadcasts ``(encoded key, context) -> object``; the group
  delivers other nodes' writes to the handler, which merges them in batches.
* **Anti-entropy** (:mod:`plumdb.anti_entropy`): periodic Merkle exchanges
  with random up peers, a full round with every peer that comes up, repair of
  both sides, full resync of empty partitions.
* **Tombstone collection**: every ``tombstone_collect_interval`` one PlumDB
  partition is scanned; a tombstone older than ``tombstone_grace`` is removed
  once every current member is known, through a complete exchange started
  after the grace period ended, to hold it or lack its key
  (:class:`~plumdb.core.acknowledgement.TombstoneAcknowledgements`). Only
  under ``full_mesh`` or ``static`` membership, whose ``members()`` is the
  whole cluster, down members included: a member that is down or cut off
  blocks collection until it has been compared again.
* **Subscriptions** (:mod:`plumdb.subscription`): the store's synchronous
  callback only appends to each matching subscriber's bounded queue; the
  subscriber reads at its own pace, so it never slows a merge.

Reads and writes are synchronous, as the store's: a ``put`` returns once the
object is stored (durable per the backend: with SQLite ``synchronous=FULL`` it
survives power loss) and handed to the broadcast group. "Loses nothing"
(DESIGN.md): with a SQLite path, a put that returned is on disk here, and
reaches every other node by broadcast or, failing that, by anti-entropy (in
memory, it is lost if this node dies before either carried it).

Resource handling: the service's tasks run under one cancel scope in the
node's nursery; :meth:`PlumDB.aclose` (or leaving ``open_plumdb``) cancels
them and closes the store. A node hosts at most one PlumDB in its life (the
broadcast group and the control protocol are registered on the node, which
has no way to unregister them); after ``aclose`` they ignore everything.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeVar, final

import attrs
import trio

from plumdb.anti_entropy import AntiEntropy, AntiEntropyStatistics, ExchangeOutcome
from plumdb.config import BROADCAST_GROUP, PlumDBConfig
from plumdb.core.acknowledgement import TombstoneAcknowledgements
from plumdb.core.keys import (
    ANY,
    FullPrefix,
    FullPrefixPattern,
    Key,
    KeyPattern,
    encode_full_key,
)
from plumdb.core.object import Object, Resolver, object_to_plain
from plumdb.replication import BroadcastHandler, message_id
from plumdb.store import Change, Store, StoreStatistics
from plumdb.subscription import Subscription
from runtime.shell.broadcast import (
    BroadcastGroup,
    BroadcastStatistics,
    open_broadcast_group,
)

if TYPE_CHECKING:
    from runtime.shell.node import Node

__all__ = ["PlumDB", "PlumDBStatistics", "open_plumdb"]

_log = logging.getLogger("plumdb.service")

T = TypeVar("T")

# Membership strategies whose members() is every node of the cluster: only
# there can "every current member holds it" be known.
_COLLECTING_STRATEGIES: Final = frozenset({"full_mesh", "static"})


@final
@attrs.frozen(kw_only=True)
class PlumDBStatistics:
    """Counters of the service (a snapshot).

    Attributes:
        store: the store's (puts, gets, merges, tombstones collected...).
        anti_entropy: exchanges run, keys repaired, bytes exchanged...
        broadcast: the broadcast group's (``None`` if broadcast is off).
        broadcasts_count: local writes handed to the broadcast group.
        broadcast_delivered_count: deliveries from the group.
        broadcast_merged_count: deliveries that changed the store.
        broadcast_refused_count: deliveries refused by the guard (older than
            the grace period, for a key not held here).
        tombstones_collected_count: tombstones removed by the collector.
        subscriptions_count: open subscriptions.
        subscription_dropped_count: changes dropped from full subscriber
            queues (all subscriptions, since open).
    """

    store: StoreStatistics
    anti_entropy: AntiEntropyStatistics
    broadcast: BroadcastStatistics | None
    broadcasts_count: int
    broadcast_delivered_count: int
    broadcast_merged_count: int
    broadcast_refused_count: int
    tombstones_collected_count: int
    subscriptions_count: int
    subscription_dropped_count: int


@final
class PlumDB:
    """A node's replicated PlumDB. Make one with :meth:`open` or :func:`open_plumdb`.

    All reads and writes are synchronous and take the store's arguments (see
    :class:`~plumdb.store.Store`): full prefixes ``(prefix, subprefix)``, keys
    (int, str, bytes, tuples of them), plain CBOR values.
    """

    def __init__(
        self,
        node: Node,
        store: Store,
        *,
        config: PlumDBConfig,
        clock: Callable[[], int],
        rng: random.Random,
    ) -> None:
        self._node = node
        self._store = store
        self._config = config
        self._clock = clock
        self._acks = TombstoneAcknowledgements()
        self._anti_entropy = AntiEntropy(
            node,
            store,
            config=config,
            clock=clock,
            rng=rng,
            acknowledgements=self._acks,
        )
        self._handler = BroadcastHandler(store, admit=self._admit_broadcast)
        self._group: BroadcastGroup | None = None
        self._subscriptions: list[Subscription] = []
        self._cancel = trio.CancelScope()
        self._closed = False
        self._broadcasts_count = 0
        self._subscription_dropped_count = 0
        self._tombstones_collected_count = 0
        self._collect_partition = 0
        self._store_subscription = store.subscribe((ANY, ANY), self._on_change)

    # ------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        node: Node,
        *,
        path: str | os.PathLike[str] | None = None,
        config: PlumDBConfig | None = None,
        clock: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> PlumDB:
        """Open the node's PlumDB and start replicating.

        Args:
            node: a running node (``open_node``).
            path: the SQLite file (created if missing); ``None`` keeps
                everything in memory.
            config: the service's knobs (:class:`PlumDBConfig`).
            clock: wall clock in integer ns; the node's by default (tests
                pass a virtual one).
            rng: picks exchange peers; seeded from the OS by default.

        Raises:
            ValueError: the node already has a PlumDB; the SQLite file was
                made with another partition count.

        Resource handling: the caller must ``await db.aclose()``; prefer
        :func:`open_plumdb`.
        """
        config = config if config is not None else PlumDBConfig()
        wall_clock = clock if clock is not None else node.wall_clock
        actor = f"{node.name}#{node.creation}"
        if path is None:
            store = Store(actor=actor, clock=wall_clock, config=config.store)
        else:
            store = Store.open_sqlite(
                path,
                actor=actor,
                clock=wall_clock,
                config=config.store,
                sqlite=config.sqlite,
            )
        try:
            db = cls(
                node,
                store,
                config=config,
                clock=wall_clock,
                rng=rng if rng is not None else random.Random(secrets.randbits(64)),
            )
        except BaseException:
            store.close()
            raise
        try:
            await db._start()
        except BaseException:
            with trio.CancelScope(shield=True):
                await db.aclose()
            raise
        return db

    async def _start(self) -> None:
        if self._config.resync:
            removed = self._store.clear()
            _log.warning(
                "resync: discarded %d keys of the local replica; refilling from peers",
                removed,
            )
        # Build every tree now, between checkpoints, rather than on the first
        # exchange inside a control handler.
        for partition in range(self._store.partition_count):
            self._store.tree(partition)
            await trio.lowlevel.checkpoint()
        self._anti_entropy.attach()
        if self._config.broadcast_enabled:
            self._group = open_broadcast_group(
                self._node, BROADCAST_GROUP, self._handler, self._config.plumtree
            )
        await self._node.nursery.start(self._run)

    async def _run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._anti_entropy.run)
                nursery.start_soon(self._handler.run)
                nursery.start_soon(self._collect_loop)
                task_status.started()

    async def aclose(self) -> None:
        """Stop replicating and close the store (idempotent). A checkpoint."""
        if not self._closed:
            self._closed = True
            self._cancel.cancel()
            self._anti_entropy.close()
            self._handler.close()
            self._store.unsubscribe(self._store_subscription)
            for subscription in list(self._subscriptions):
                subscription.close()
            self._store.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> PlumDB:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()

    # --------------------------------------------------------------- queries

    @property
    def node(self) -> Node:
        """The node this PlumDB runs on."""
        return self._node

    @property
    def store(self) -> Store:
        """The local store (its seams; writes through it are broadcast too)."""
        return self._store

    @property
    def config(self) -> PlumDBConfig:
        """The service's configuration."""
        return self._config

    @property
    def actor(self) -> str:
        """This incarnation's actor id: ``name#creation``."""
        return self._store.actor

    @property
    def broadcast_group(self) -> BroadcastGroup | None:
        """The ``"plumdb"`` broadcast group (``None`` if broadcast is off)."""
        return self._group

    def statistics(self) -> PlumDBStatistics:
        """Counters of the store, anti-entropy and broadcast (a snapshot)."""
        handler = self._handler
        return PlumDBStatistics(
            store=self._store.statistics(),
            anti_entropy=self._anti_entropy.statistics(),
            broadcast=self._group.statistics() if self._group is not None else None,
            broadcasts_count=self._broadcasts_count,
            broadcast_delivered_count=handler.delivered_count,
            broadcast_merged_count=handler.merged_new_count,
            broadcast_refused_count=handler.refused_count,
            tombstones_collected_count=self._tombstones_collected_count,
            subscriptions_count=len(self._subscriptions),
            subscription_dropped_count=self._subscription_dropped_count
            + sum(s.dropped_count for s in self._subscriptions),
        )

    # ----------------------------------------------------------- the user API

    def put(
        self,
        full_prefix: FullPrefix,
        key: Key,
        value: object,
        *,
        context: Iterable[Iterable[object]] | None = None,
    ) -> Object:
        """Write *value* under *key*, and broadcast it; the stored object.

        Args:
            context: the context the writer read (``get_object(...).context``)
                to supersede only that; ``None`` supersedes everything held
                here.

        Raises:
            TypeError, ValueError: a bad prefix, key, value or context.
        """
        return self._store.put(full_prefix, key, value, context=context)

    def delete(
        self,
        full_prefix: FullPrefix,
        key: Key,
        *,
        context: Iterable[Iterable[object]] | None = None,
    ) -> Object:
        """Write a tombstone for *key*, and broadcast it; the stored object."""
        return self._store.delete(full_prefix, key, context=context)

    def get(
        self,
        full_prefix: FullPrefix,
        key: Key,
        *,
        resolver: Resolver = "lww",
        allow_put: bool = True,
        default: object = None,
    ) -> object:
        """The value of *key*, or *default* if absent or deleted.

        With siblings, *resolver* picks one (``"lww"`` or ``f(a, b)``); with
        *allow_put* the resolution is written back (and broadcast), so the
        siblings collapse everywhere.
        """
        return self._store.get(
            full_prefix, key, resolver=resolver, allow_put=allow_put, default=default
        )

    def get_object(self, full_prefix: FullPrefix, key: Key) -> Object | None:
        """The stored object of *key* (siblings, context), or ``None``."""
        return self._store.get_object(full_prefix, key)

    def iterate(
        self,
        full_prefix: FullPrefix,
        *,
        start: Key | None = None,
        match: KeyPattern = ANY,
        resolver: Resolver = "lww",
    ) -> Iterator[tuple[Key, object]]:
        """``(key, value)`` of the live keys of *full_prefix*, in key order."""
        return self._store.iterate(
            full_prefix, start=start, match=match, resolver=resolver
        )

    def fold(
        self,
        full_prefix: FullPrefix,
        function: Callable[[T, tuple[Key, object]], T],
        initial: T,
        *,
        start: Key | None = None,
        match: KeyPattern = ANY,
        resolver: Resolver = "lww",
    ) -> T:
        """Fold *function* over :meth:`iterate`'s pairs, from *initial*."""
        return self._store.fold(
            full_prefix, function, initial, start=start, match=match, resolver=resolver
        )

    def to_list(
        self,
        full_prefix: FullPrefix,
        *,
        start: Key | None = None,
        match: KeyPattern = ANY,
        resolver: Resolver = "lww",
    ) -> list[tuple[Key, object]]:
        """:meth:`iterate`'s pairs as a list."""
        return self._store.to_list(
            full_prefix, start=start, match=match, resolver=resolver
        )

    def match(
        self,
        full_prefix: FullPrefix,
        pattern: KeyPattern,
        *,
        resolver: Resolver = "lww",
    ) -> list[tuple[Key, object]]:
        """The live ``(key, value)`` pairs whose key matches *pattern*, in order."""
        return self._store.match(full_prefix, pattern, resolver=resolver)

    # --------------------------------------------------------- subscriptions

    def subscribe(
        self,
        full_prefix: FullPrefixPattern,
        *,
        key: KeyPattern = ANY,
        queue_length_max: int | None = None,
    ) -> Subscription:
        """Receive every change (local or replicated) to matching keys.

        Args:
            full_prefix: ``(prefix or ANY, subprefix or ANY)``.
            key: a key pattern (``ANY`` wildcards).
            queue_length_max: changes queued before the oldest is dropped
                (``subscription_queue_length_max`` by default).

        Returns:
            A :class:`Subscription`: ``async for change in subscription``,
            and ``close()`` (or ``with``) when done.
        """
        if type(full_prefix) is not tuple or len(full_prefix) != 2:
            raise TypeError(
                "a full-prefix pattern is (prefix or ANY, subprefix or ANY)"
            )
        for part in full_prefix:
            if part is not ANY and type(part) not in (str, bytes):
                raise TypeError("prefix patterns are str, bytes or ANY")
        if self._closed:
            raise RuntimeError("the PlumDB is closed")
        subscription = Subscription(
            full_prefix,
            key,
            queue_length_max=(
                queue_length_max
                if queue_length_max is not None
                else self._config.subscription_queue_length_max
            ),
            on_close=self._forget_subscription,
        )
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> bool:
        """Close *subscription*; ``False`` if it was not open."""
        if subscription not in self._subscriptions:
            return False
        subscription.close()
        return True

    def _forget_subscription(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._subscription_dropped_count += subscription.dropped_count

    # ---------------------------------------------------------- anti-entropy

    async def exchange(self, peer: str, partition: int) -> ExchangeOutcome:
        """Run one anti-entropy exchange of *partition* with *peer* now.

        Raises:
            ExchangeFailed: no reply in time, not sent, or refused.
        """
        return await self._anti_entropy.exchange(peer, partition)

    async def synchronize(self, peer: str) -> list[ExchangeOutcome]:
        """Exchange every partition with *peer* now (both sides repaired).

        Raises:
            ExchangeFailed: as :meth:`exchange`.
        """
        return await self._anti_entropy.synchronize(peer)

    def collect_tombstones(self, partitions: Iterable[int] | None = None) -> int:
        """Collect what the rule allows now (all partitions by default).

        Returns how many tombstones were removed; 0 when collection is off or
        the membership strategy cannot know every member.
        """
        if not self._collecting():
            return 0
        members = [
            spec.name
            for spec in self._node.membership.members()
            if spec.name != self._node.name
        ]
        grace_ns = self._config.tombstone_grace_ns
        store = self._store
        acks = self._acks

        def acknowledged(full_prefix: FullPrefix, key: Key, obj: Object) -> bool:
            return acks.acknowledged(
                members,
                store.partition_of(full_prefix, key),
                encode_full_key(full_prefix, key),
                tombstone_ns=obj.timestamp,
                grace_ns=grace_ns,
            )

        collected = store.collect_tombstones(
            acknowledged, grace=self._config.tombstone_grace, partitions=partitions
        )
        self._tombstones_collected_count += collected
        return collected

    # -------------------------------------------------------------- internals

    def _collecting(self) -> bool:
        return (
            self._config.tombstone_collection_enabled
            and not self._closed
            and self._node.config.membership.strategy in _COLLECTING_STRATEGIES
        )

    async def _collect_loop(self) -> None:
        count = self._store.partition_count
        while True:
            await trio.sleep(self._config.tombstone_collect_interval)
            partition = self._collect_partition
            self._collect_partition = (partition + 1) % count
            collected = self.collect_tombstones([partition])
            if collected:
                _log.info(
                    "collected %d tombstones of partition %d", collected, partition
                )

    def _on_change(self, change: Change) -> None:
        """The store's subscriber: broadcast local writes, feed subscribers."""
        if change.origin == "local" and self._group is not None:
            try:
                self._group.broadcast(
                    message_id(change.full_prefix, change.key, change.object),
                    object_to_plain(change.object),
                )
                self._broadcasts_count += 1
            except ValueError:
                # An id already broadcast: impossible for a new dot; logged
                # rather than failing the write, which is stored already.
                _log.exception("plumdb: broadcast of %r refused", change.key)
        for subscription in self._subscriptions:
            if subscription.matches(change):
                subscription.offer(change)

    def _admit_broadcast(self, local: Object | None, remote: Object) -> bool:
        """The broadcast guard (docs/plumdb.md, Tombstones, rule 2)."""
        return local is not None or (
            remote.timestamp + self._config.tombstone_grace_ns > self._clock()
        )


@asynccontextmanager
async def open_plumdb(
    node: Node,
    *,
    path: str | os.PathLike[str] | None = None,
    config: PlumDBConfig | None = None,
    clock: Callable[[], int] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[PlumDB]:
    """The node's PlumDB for the duration of the block (see :meth:`PlumDB.open`).

    Resource handling: leaving the block stops replication and closes the
    store, even on error or cancellation.
    """
    db = await PlumDB.open(node, path=path, config=config, clock=clock, rng=rng)
    async with db:
        yield db
