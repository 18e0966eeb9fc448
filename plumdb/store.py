"""The local store of one node: PlumDB's data layer (synchronous, no network).

What plum_db's ``plum_db`` API and partition servers do on one node, without
the network: keys under full prefixes, causal objects, resolution on read,
tombstones, a Merkle tree per PlumDB partition, subscriptions. Replication
(Plumtree broadcast, anti-entropy over the network, the trio service) is built
on the seams listed below.

Theory of operation
-------------------
*Partitions.* An encoded full key (:mod:`plumdb.core.keys`) is hashed
(BLAKE2b) onto one of ``partition_count`` PlumDB partitions. Each partition
has its own keyspace in the backend and its own :class:`MerkleTree`, built
lazily from the backend on first use (:meth:`Store.tree`) and updated on
every write after that. Keys of *memory-only* prefixes
(``StoreConfig.memory_prefixes``) live in a separate memory backend whatever
the default backend is, but in the same partitions and trees: after a
restart they are missing, the trees show it, and anti-entropy refills them.

*Writes.* ``put`` and ``delete`` read the key's object, apply
:func:`plumdb.core.object.modify` with the store's actor and the injected
clock's time, write the result to the backend (acknowledged: durable per the
backend once the call returns), update the tree, then notify subscribers.
Without a ``context`` a write supersedes everything this node holds for the
key (plum_db's behaviour: its ``put`` uses the current local context); with
the context a reader got from :meth:`Store.get_object`, values the reader did
not see stay as siblings.

*Reads.* ``get`` returns the one value, or resolves siblings (``"lww"`` or a
function) and, if ``allow_put``, writes the resolution back as a new local
write with the object's full context, as plum_db does, so the siblings
collapse here and, once broadcast, everywhere. Tombstones read as absent.

Seams for replication
---------------------
* ``put`` / ``delete`` return the stored :class:`Object`; every local write
  (including ``get``'s write-back) is also published as a :class:`Change`
  with ``origin="local"``: subscribe to ``(ANY, ANY)`` to broadcast them.
* ``merge(full_prefix, key, remote) -> bool``: apply a replica's object;
  ``True`` if it was new information (Plumtree's ``merge``). Published with
  ``origin="remote"`` when it changed something. ``merge_batch`` does the
  same for many keys in one backend batch (one SQLite transaction), with an
  optional ``admit`` guard.
* ``is_stale(full_prefix, key, remote_or_context)``: whether this node has
  already seen everything in it (Plumtree's ``is_stale``).
* ``get_object(full_prefix, key)``: the object, for Plumtree's ``graft`` and
  for anti-entropy repair.
* ``tree(partition)``, ``partition_of(full_prefix, key)``,
  ``partition_objects(partition)``: anti-entropy (:mod:`plumdb.core.exchange`)
  and full resynchronisation.
* ``collect_tombstones(acknowledged, grace=...)``: the replication layer says
  which tombstones every member holds (docs/plumdb.md, Tombstones).

Error handling: caller errors (bad prefix, key, value or context) raise
``TypeError`` / ``ValueError`` before anything is written. Undecodable data in
the backend raises :class:`~plumdb.errors.MalformedData` from the read. A
subscriber that raises is logged and counted; the store and the other
subscribers carry on. The store is not thread-safe: one caller at a time.

Invariants
----------
* A built tree holds, for every key of its partition in either backend,
  ``object_hash`` of the stored bytes, and nothing else.
* Every object written by this store has a dot of ``actor`` greater than any
  dot of ``actor`` in a tombstone it collected (``_counter_floor``).
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import heapq
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from types import TracebackType
from typing import Final, Literal, TypeVar, final

import attrs
import cbor2

from plumdb.backend import Backend, BatchOperation
from plumdb.backend_memory import MemoryBackend
from plumdb.backend_sqlite import SqliteBackend, SqliteConfig
from plumdb.core.causal import check_version_vector, descends
from plumdb.core.keys import (
    ANY,
    FullPrefix,
    FullPrefixPattern,
    Key,
    KeyPattern,
    Prefix,
    check_full_prefix,
    decode_full_key,
    encode_full_key,
    key_matches,
    pattern_range,
    prefix_matches,
)
from plumdb.core.merkle import MerkleConfig, MerkleTree
from plumdb.core.object import (
    Object,
    Resolved,
    Resolver,
    Sibling,
    check_value,
    collectable,
    decode_object,
    encode_object,
    merge,
    modify,
    object_hash,
    resolve,
)

__all__ = [
    "Change",
    "Store",
    "StoreConfig",
    "StoreStatistics",
    "Subscriber",
    "partition_of",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

VALUE_BYTES_MAX_DEFAULT: Final = 1 << 20
"""1 MiB per value: PlumDB replicates metadata and small state, every node holds
every key, and a broadcast carries whole objects (siblings included)."""


def partition_of(encoded_full_key: bytes, partition_count: int) -> int:
    """The PlumDB partition of an encoded full key (same on every node)."""
    digest = hashlib.blake2b(
        encoded_full_key, digest_size=8, person=b"plumdb.partition"
    ).digest()
    return int.from_bytes(digest, "big") % partition_count


def _check_resolver(resolver: object) -> None:
    if resolver != "lww" and not callable(resolver):
        raise ValueError(f"a resolver is 'lww' or a function, not {resolver!r:.80}")


def _to_memory_prefixes(value: Iterable[object]) -> frozenset[Prefix | FullPrefix]:
    out: set[Prefix | FullPrefix] = set()
    for entry in value:
        if type(entry) in (str, bytes):
            out.add(entry)  # type: ignore[arg-type]  # str or bytes, just checked
        else:
            out.add(check_full_prefix(entry))
    return frozenset(out)


@final
@attrs.frozen(kw_only=True)
class StoreConfig:
    """Knobs of a node's store. Partition count and tree shape must be the same
    on every node of a cluster (anti-entropy compares partition with partition).

    Attributes:
        partition_count: PlumDB partitions (shards of the key space), each
            with its own tree and exchanges. 8 is plum_db's usual setting:
            enough to exchange a part of the store at a time, few enough
            that an all-equal round costs 8 root comparisons.
        merkle: the shape of each partition's tree.
        memory_prefixes: prefixes (``str`` / ``bytes``: every subprefix) and
            full prefixes whose keys are kept in memory only, even when the
            default backend is durable.
        value_bytes_max: canonical CBOR bytes of one written value.
    """

    partition_count: int = 8
    merkle: MerkleConfig = attrs.field(factory=MerkleConfig)
    memory_prefixes: frozenset[Prefix | FullPrefix] = attrs.field(
        factory=frozenset, converter=_to_memory_prefixes
    )
    value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT

    def __attrs_post_init__(self) -> None:
        if type(self.partition_count) is not int or self.partition_count < 1:
            raise ValueError("partition_count must be an int >= 1")
        if type(self.value_bytes_max) is not int or self.value_bytes_max < 1:
            raise ValueError("value_bytes_max must be an int >= 1")


@final
@attrs.frozen(kw_only=True)
class Change:
    """A key's object changed here: a local write, or a merge that was new.

    Attributes:
        full_prefix, key: which key.
        object: the object now stored.
        origin: ``"local"`` for this node's writes (``put``, ``delete``,
            ``get``'s write-back), ``"remote"`` for a merge.
    """

    full_prefix: FullPrefix
    key: Key
    object: Object
    origin: Literal["local", "remote"]

    @property
    def resolved(self) -> Resolved:
        """The object resolved by last-write-wins."""
        return resolve(self.object, "lww")

    @property
    def deleted(self) -> bool:
        """Whether the key now reads as deleted (under last-write-wins)."""
        return self.resolved.deleted

    @property
    def value(self) -> builtins.object:
        """The value now read under last-write-wins (``None`` if deleted)."""
        return self.resolved.value


Subscriber = Callable[[Change], None]
"""A subscription callback; called synchronously, after the write is stored."""


@final
@attrs.frozen(kw_only=True)
class StoreStatistics:
    """Counters since the store was opened (a snapshot)."""

    put_count: int
    delete_count: int
    get_count: int
    resolve_write_count: int
    merge_count: int
    merge_new_count: int
    tombstone_collected_count: int
    event_count: int
    subscriber_error_count: int
    subscription_count: int


@final
@attrs.frozen
class _Subscription:
    full_prefix: FullPrefixPattern
    key: KeyPattern
    callback: Subscriber


@final
class Store:
    """The PlumDB data of one node, over a backend (see the module docstring).

    Args:
        actor: this node's actor id for causal contexts: node name plus
            incarnation, unique per start (never reuse one after a restart).
        clock: wall clock in integer nanoseconds (for last-write-wins and
            tombstone ages); the shell passes the system clock, tests and the
            simulator their own.
        config: partitions, tree shape, memory-only prefixes, limits.
        backend: the default backend (a :class:`MemoryBackend` if ``None``);
            the store takes ownership and closes it.

    Resource handling:
        :meth:`close` (or ``with``) closes the backends; nothing works after.

    Raises:
        ValueError: an empty actor, or a backend with another partition count.
    """

    def __init__(
        self,
        *,
        actor: str,
        clock: Callable[[], int],
        config: StoreConfig | None = None,
        backend: Backend | None = None,
    ) -> None:
        self._config = config if config is not None else StoreConfig()
        count = self._config.partition_count
        self._memory = MemoryBackend(count)
        self._backend: Backend = backend if backend is not None else self._memory
        if type(actor) is not str or not actor:
            self.close()
            raise ValueError("actor is a non-empty str (node name and incarnation)")
        if self._backend.partition_count != count:
            self.close()
            raise ValueError(
                f"backend has {self._backend.partition_count} partitions, "
                f"config says {count}"
            )
        self._actor = actor
        self._clock = clock
        # Built on first use; then kept equal to the backends' content.
        self._trees: list[MerkleTree | None] = [None] * count
        self._subscriptions: dict[int, _Subscription] = {}
        self._next_subscription = 0
        # Highest counter of this actor in any tombstone collected here.
        self._counter_floor = 0
        self._closed = False
        self._counts = dict.fromkeys(
            (
                "put_count",
                "delete_count",
                "get_count",
                "resolve_write_count",
                "merge_count",
                "merge_new_count",
                "tombstone_collected_count",
                "event_count",
                "subscriber_error_count",
            ),
            0,
        )

    @classmethod
    def open_sqlite(
        cls,
        path: str | os.PathLike[str],
        *,
        actor: str,
        clock: Callable[[], int],
        config: StoreConfig | None = None,
        sqlite: SqliteConfig | None = None,
    ) -> Store:
        """A store over a :class:`SqliteBackend` at *path* (created if missing)."""
        config = config if config is not None else StoreConfig()
        backend = SqliteBackend(
            path, partition_count=config.partition_count, config=sqlite
        )
        try:
            return cls(actor=actor, clock=clock, config=config, backend=backend)
        except BaseException:
            backend.close()
            raise

    def close(self) -> None:
        """Close the backends (idempotent)."""
        self._closed = True
        backend = getattr(self, "_backend", None)
        if backend is not None and backend is not self._memory:
            backend.close()
        self._memory.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Queries about the store itself.

    @property
    def actor(self) -> str:
        """This node's actor id."""
        return self._actor

    @property
    def config(self) -> StoreConfig:
        """The store's configuration."""
        return self._config

    @property
    def partition_count(self) -> int:
        """How many PlumDB partitions."""
        return self._config.partition_count

    def statistics(self) -> StoreStatistics:
        """Counters (a snapshot)."""
        return StoreStatistics(
            **self._counts, subscription_count=len(self._subscriptions)
        )

    # The user API.

    def put(
        self,
        full_prefix: FullPrefix,
        key: Key,
        value: object,
        *,
        context: Iterable[Iterable[object]] | None = None,
    ) -> Object:
        """Write *value* under *key*; returns the stored object.

        Args:
            full_prefix: ``(prefix, subprefix)``, each str or bytes.
            key: see :mod:`plumdb.core.keys`.
            value: plain CBOR-able data (see ``check_value``), at most
                ``value_bytes_max`` encoded.
            context: the context the writer read (``get_object(...).context``);
                ``None`` supersedes everything held here.

        Raises:
            TypeError, ValueError: a bad prefix, key, value or context.
        """
        check_value(value)
        size = len(cbor2.dumps(value, canonical=True))
        if size > self._config.value_bytes_max:
            raise ValueError(
                f"value is {size} bytes, over value_bytes_max="
                f"{self._config.value_bytes_max}"
            )
        self._counts["put_count"] += 1
        return self._write(full_prefix, key, value, deleted=False, context=context)

    def delete(
        self,
        full_prefix: FullPrefix,
        key: Key,
        *,
        context: Iterable[Iterable[object]] | None = None,
    ) -> Object:
        """Write a tombstone for *key*; returns the stored object.

        A tombstone is written even if the key is absent here, so that it
        also supersedes a value on its way from another node.
        """
        self._counts["delete_count"] += 1
        return self._write(full_prefix, key, None, deleted=True, context=context)

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

        Args:
            resolver: how to pick one value among siblings (``"lww"`` or
                ``f(a, b) -> value``; see ``resolve``).
            allow_put: write a resolution of siblings back (a new local
                write with the full context, published like a put).
            default: returned when the key is absent or deleted.

        Raises:
            TypeError, ValueError: a bad prefix or key; a resolver that
                returns something other than plain data (with ``allow_put``).
        """
        _check_resolver(resolver)
        self._counts["get_count"] += 1
        obj = self.get_object(full_prefix, key)
        if obj is None:
            return default
        if obj.sibling_count == 1:
            sibling = obj.siblings[0]
        else:
            resolved = resolve(obj, resolver)
            sibling = resolved.sibling
            if allow_put:
                if not sibling.deleted:
                    check_value(sibling.value)
                self._counts["resolve_write_count"] += 1
                self._write(
                    full_prefix,
                    key,
                    sibling.value,
                    deleted=sibling.deleted,
                    context=resolved.context,
                )
        return default if sibling.deleted else sibling.value

    def get_object(self, full_prefix: FullPrefix, key: Key) -> Object | None:
        """The stored object of *key* (siblings, tombstones, context), or ``None``."""
        encoded = encode_full_key(full_prefix, key)
        data = self._backend_for(full_prefix).get(self._partition(encoded), encoded)
        return decode_object(data) if data is not None else None

    def iterate(
        self,
        full_prefix: FullPrefix,
        *,
        start: Key | None = None,
        match: KeyPattern = ANY,
        resolver: Resolver = "lww",
    ) -> Iterator[tuple[Key, object]]:
        """``(key, value)`` of the live keys of *full_prefix*, in key order.

        Args:
            start: first key to consider (inclusive).
            match: a key pattern (``ANY`` wildcards; see ``key_matches``);
                leading concrete tuple elements narrow the scan.
            resolver: for keys with siblings. Iteration never writes back.

        Not a snapshot: keys written while iterating may or may not appear,
        none appears twice, and the order holds. Writing during iteration is
        allowed.
        """
        _check_resolver(resolver)
        low, high = pattern_range(full_prefix, match)
        if start is not None:
            low = max(low, encode_full_key(full_prefix, start))
        backend = self._backend_for(full_prefix)
        streams = [
            backend.iterate(partition, start=low, stop=high)
            for partition in range(self.partition_count)
        ]
        for encoded, data in heapq.merge(*streams, key=itemgetter(0)):
            _, key = decode_full_key(encoded)
            if not key_matches(match, key):
                continue
            obj = decode_object(data)
            if obj.sibling_count == 1:
                sibling = obj.siblings[0]
            else:
                sibling = resolve(obj, resolver).sibling
            if not sibling.deleted:
                yield key, sibling.value

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
        pairs = self.iterate(full_prefix, start=start, match=match, resolver=resolver)
        return functools.reduce(function, pairs, initial)

    def to_list(
        self,
        full_prefix: FullPrefix,
        *,
        start: Key | None = None,
        match: KeyPattern = ANY,
        resolver: Resolver = "lww",
    ) -> list[tuple[Key, object]]:
        """:meth:`iterate`'s pairs as a list."""
        return list(
            self.iterate(full_prefix, start=start, match=match, resolver=resolver)
        )

    def match(
        self,
        full_prefix: FullPrefix,
        pattern: KeyPattern,
        *,
        resolver: Resolver = "lww",
    ) -> list[tuple[Key, object]]:
        """The live ``(key, value)`` pairs whose key matches *pattern*, in order."""
        return self.to_list(full_prefix, match=pattern, resolver=resolver)

    # Subscriptions.

    def subscribe(
        self,
        full_prefix: FullPrefixPattern,
        callback: Subscriber,
        *,
        key: KeyPattern = ANY,
    ) -> int:
        """Call *callback* with each :class:`Change` under matching keys.

        Args:
            full_prefix: ``(prefix or ANY, subprefix or ANY)``.
            callback: called synchronously after each matching change is
                stored, in subscription order. An exception it raises is
                logged and counted, and changes nothing else.
            key: a key pattern.

        Returns:
            The subscription's id, for :meth:`unsubscribe`.
        """
        if type(full_prefix) is not tuple or len(full_prefix) != 2:
            raise TypeError(
                "a full-prefix pattern is (prefix or ANY, subprefix or ANY)"
            )
        for part in full_prefix:
            if part is not ANY and type(part) not in (str, bytes):
                raise TypeError("prefix patterns are str, bytes or ANY")
        if not callable(callback):
            raise TypeError("callback must be callable")
        subscription = self._next_subscription
        self._next_subscription += 1
        self._subscriptions[subscription] = _Subscription(full_prefix, key, callback)
        return subscription

    def unsubscribe(self, subscription: int) -> bool:
        """Stop a subscription; ``False`` if it was not active."""
        return self._subscriptions.pop(subscription, None) is not None

    # Seams for replication.

    def partition_of(self, full_prefix: FullPrefix, key: Key) -> int:
        """The PlumDB partition of *key*."""
        return self._partition(encode_full_key(full_prefix, key))

    def merge(self, full_prefix: FullPrefix, key: Key, remote: Object) -> bool:
        """Apply another replica's object of *key*; ``True`` if it was new here.

        The result is ``merge(local, remote)`` (or *remote* if absent). When
        it differs from what was stored, it is written, the tree updated, and
        a ``Change(origin="remote")`` published.
        """
        if not isinstance(remote, Object):
            raise TypeError("merge takes an Object (decode it first)")
        self._counts["merge_count"] += 1
        encoded = encode_full_key(full_prefix, key)
        partition = self._partition(encoded)
        backend = self._backend_for(full_prefix)
        data = backend.get(partition, encoded)
        merged = remote if data is None else merge(decode_object(data), remote)
        merged_data = encode_object(merged)
        if merged_data == data:
            return False
        self._store(backend, partition, encoded, merged_data)
        self._counts["merge_new_count"] += 1
        self._publish(
            Change(full_prefix=full_prefix, key=key, object=merged, origin="remote")
        )
        return True

    def merge_batch(
        self,
        items: Iterable[tuple[FullPrefix, Key, Object]],
        *,
        admit: Callable[[Object | None, Object], bool] | None = None,
    ) -> list[bool]:
        """:meth:`merge` for many keys, written in one batch per backend.

        The same result as merging the items one by one (a key that appears
        twice is merged twice), but the writes go to the backend as one
        ``write_batch`` (one SQLite transaction instead of one per key), the
        trees are updated after the batch is acknowledged, and then the
        changes are published in item order.

        Args:
            items: ``(full_prefix, key, remote object)`` triples.
            admit: ``admit(local_or_None, remote)``; an item for which it
                returns false is skipped (``False`` in the result). The
                replication layer's guard against resurrecting collected
                tombstones (docs/plumdb.md, Tombstones).

        Returns:
            Per item, whether it was new information here.
        """
        return self._merge_items(
            ((encode_full_key(fp, key), fp, key, remote) for fp, key, remote in items),
            admit,
        )

    def merge_encoded_batch(
        self,
        items: Iterable[tuple[bytes, Object]],
        *,
        admit: Callable[[Object | None, Object], bool] | None = None,
    ) -> list[bool]:
        """:meth:`merge_batch` of keys named by their encoded full keys (as an
        exchange reports them).

        Raises:
            MalformedData: an encoded key is not a valid encoded full key
                (nothing is written then).
        """
        decoded = [
            (encoded, *decode_full_key(encoded), remote) for encoded, remote in items
        ]
        return self._merge_items(decoded, admit)

    def _merge_items(
        self,
        items: Iterable[tuple[bytes, FullPrefix, Key, Object]],
        admit: Callable[[Object | None, Object], bool] | None,
    ) -> list[bool]:
        results: list[bool] = []
        # Per backend: encoded key -> (partition, new bytes); the newest wins
        # when a key repeats, since each merge starts from the previous one.
        pending: dict[int, tuple[Backend, dict[bytes, tuple[int, bytes]]]] = {}
        changes: list[Change] = []
        for encoded, full_prefix, key, remote in items:
            if not isinstance(remote, Object):
                raise TypeError("merge_batch takes Objects (decode them first)")
            self._counts["merge_count"] += 1
            partition = self._partition(encoded)
            backend = self._backend_for(full_prefix)
            writes = pending.setdefault(id(backend), (backend, {}))[1]
            staged = writes.get(encoded)
            data = staged[1] if staged is not None else backend.get(partition, encoded)
            local = decode_object(data) if data is not None else None
            if admit is not None and not admit(local, remote):
                results.append(False)
                continue
            merged = remote if local is None else merge(local, remote)
            merged_data = encode_object(merged)
            if merged_data == data:
                results.append(False)
                continue
            writes[encoded] = (partition, merged_data)
            self._counts["merge_new_count"] += 1
            results.append(True)
            changes.append(
                Change(full_prefix=full_prefix, key=key, object=merged, origin="remote")
            )
        for backend, writes in pending.values():
            if not writes:
                continue
            backend.write_batch(
                [
                    (partition, encoded, data)
                    for encoded, (partition, data) in writes.items()
                ]
            )
            for encoded, (partition, data) in writes.items():
                tree = self._trees[partition]
                if tree is not None:
                    tree.insert(encoded, object_hash(data))
        for change in changes:
            self._publish(change)
        return results

    def is_stale(
        self,
        full_prefix: FullPrefix,
        key: Key,
        remote: Object | Iterable[Iterable[object]],
    ) -> bool:
        """Whether this node has seen everything in *remote* (an object or context).

        ``True`` means merging it would change nothing (plum_db's
        ``is_stale``: the local context descends the remote one).
        """
        context = (
            remote.context
            if isinstance(remote, Object)
            else check_version_vector(remote)
        )
        local = self.get_object(full_prefix, key)
        return local is not None and descends(local.context, context)

    def tree(self, partition: int) -> MerkleTree:
        """The Merkle tree of *partition* (built from the backends on first use)."""
        if not 0 <= partition < self.partition_count:
            raise ValueError(f"no partition {partition}")
        tree = self._trees[partition]
        if tree is None:
            tree = MerkleTree(self._config.merkle)
            for encoded, data in self._partition_items(partition):
                tree.insert(encoded, object_hash(data))
            self._trees[partition] = tree
        return tree

    def object_data(self, encoded_full_key: bytes) -> bytes | None:
        """The stored bytes (canonical CBOR) of a key named by its encoded full
        key (as an exchange reports it), or ``None`` if absent.

        Raises:
            MalformedData: *encoded_full_key* is not a valid encoded full key
                (checked only when some prefixes are memory-only; otherwise an
                invalid key is simply absent).
        """
        if self._config.memory_prefixes:
            full_prefix, _ = decode_full_key(encoded_full_key)
            backend = self._backend_for(full_prefix)
        else:
            assert not self._closed, "the store is closed"
            backend = self._backend
        return backend.get(self._partition(encoded_full_key), encoded_full_key)

    def partition_data(
        self, partition: int, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """:meth:`partition_objects` as stored bytes, not decoded."""
        if not 0 <= partition < self.partition_count:
            raise ValueError(f"no partition {partition}")
        return self._partition_items(partition, start=start)

    def partition_objects(
        self, partition: int, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, Object]]:
        """Every ``(encoded full key, object)`` of *partition*, in key order.

        Tombstones included: for full resynchronisation of a peer.
        """
        if not 0 <= partition < self.partition_count:
            raise ValueError(f"no partition {partition}")
        for encoded, data in self._partition_items(partition, start=start):
            yield encoded, decode_object(data)

    def collect_tombstones(
        self,
        acknowledged: Callable[[FullPrefix, Key, Object], bool],
        *,
        grace: float,
        now_ns: int | None = None,
        partitions: Iterable[int] | None = None,
    ) -> int:
        """Remove tombstones that every member holds and that are old enough.

        A key is removed when its object is all tombstones, the newest written
        at least *grace* seconds before *now_ns*, and ``acknowledged(full_prefix,
        key, object)`` is true (the replication layer's knowledge that every
        current member holds it; docs/plumdb.md, Tombstones). Removal is one
        batch per backend and partition; trees are updated; nothing is
        published (the key already read as deleted).

        Args:
            acknowledged: the replication layer's check, per candidate.
            grace: seconds a tombstone must have existed (by its timestamp).
            now_ns: the time to judge by; the store's clock if ``None``.
            partitions: which partitions to scan (all by default), to spread
                the O(keys) scan over several calls.

        Returns:
            How many tombstones were removed.
        """
        seconds: object = grace
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("grace is a number of seconds >= 0")
        now = self._clock() if now_ns is None else now_ns
        chosen = range(self.partition_count) if partitions is None else partitions
        collected = 0
        for partition in chosen:
            for backend in self._backends():
                batch: list[BatchOperation] = []
                for encoded, data in backend.iterate(partition):
                    obj = decode_object(data)
                    if not collectable(obj, now_ns=now, grace=grace):
                        continue
                    full_prefix, key = decode_full_key(encoded)
                    if not acknowledged(full_prefix, key, obj):
                        continue
                    batch.append((partition, encoded, None))
                    self._counter_floor = max(
                        self._counter_floor, obj.clock.counter(self._actor)
                    )
                if batch:
                    backend.write_batch(batch)
                    tree = self._trees[partition]
                    if tree is not None:
                        for _, encoded, _ in batch:
                            tree.delete(encoded)
                    collected += len(batch)
        self._counts["tombstone_collected_count"] += collected
        return collected

    def clear(self) -> int:
        """Remove every key of every partition (a full resynchronisation).

        For a replica that must not push what it holds (docs/plumdb.md,
        Tombstones, rule 3): it then refills from its peers like a new node.
        Nothing is published. Returns how many keys were removed.
        """
        removed = 0
        for partition in range(self.partition_count):
            for backend in self._backends():
                batch: list[BatchOperation] = [
                    (partition, encoded, None)
                    for encoded, _ in backend.iterate(partition)
                ]
                if batch:
                    backend.write_batch(batch)
                    removed += len(batch)
            if self._trees[partition] is not None:
                self._trees[partition] = MerkleTree(self._config.merkle)
        return removed

    # Internals.

    def _write(
        self,
        full_prefix: FullPrefix,
        key: Key,
        value: object,
        *,
        deleted: bool,
        context: Iterable[Iterable[object]] | None,
    ) -> Object:
        encoded = encode_full_key(full_prefix, key)
        checked = None if context is None else check_version_vector(context)
        sibling = Sibling(value=value, timestamp=self._clock(), deleted=deleted)
        partition = self._partition(encoded)
        backend = self._backend_for(full_prefix)
        data = backend.get(partition, encoded)
        existing = decode_object(data) if data is not None else None
        if checked is None:
            checked = existing.context if existing is not None else ()
        obj = modify(
            existing,
            sibling,
            actor=self._actor,
            context=checked,
            counter_floor=self._counter_floor,
        )
        self._store(backend, partition, encoded, encode_object(obj))
        self._publish(
            Change(full_prefix=full_prefix, key=key, object=obj, origin="local")
        )
        return obj

    def _store(
        self, backend: Backend, partition: int, encoded: bytes, data: bytes
    ) -> None:
        """Write through to the backend (acknowledged), then the tree."""
        backend.put(partition, encoded, data)
        tree = self._trees[partition]
        if tree is not None:
            tree.insert(encoded, object_hash(data))

    def _publish(self, change: Change) -> None:
        self._counts["event_count"] += 1
        for subscription in list(self._subscriptions.values()):
            if not prefix_matches(subscription.full_prefix, change.full_prefix):
                continue
            if not key_matches(subscription.key, change.key):
                continue
            try:
                subscription.callback(change)
            except Exception:
                self._counts["subscriber_error_count"] += 1
                _log.exception(
                    "plumdb subscriber %r failed on a change of %r %r",
                    subscription.callback,
                    change.full_prefix,
                    change.key,
                )

    def _partition(self, encoded: bytes) -> int:
        return partition_of(encoded, self._config.partition_count)

    def _backend_for(self, full_prefix: FullPrefix) -> Backend:
        assert not self._closed, "the store is closed"
        prefixes = self._config.memory_prefixes
        if prefixes and (full_prefix in prefixes or full_prefix[0] in prefixes):
            return self._memory
        return self._backend

    def _backends(self) -> list[Backend]:
        if self._backend is self._memory:
            return [self._memory]
        return [self._backend, self._memory]

    def _partition_items(
        self, partition: int, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        streams = [b.iterate(partition, start=start) for b in self._backends()]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=itemgetter(0))
