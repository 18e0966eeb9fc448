"""PlumDB: a replicated key-value store for metadata and small state.

:class:`PlumDB` (``open_plumdb(node, path=...)``) is the replicated service of
one node: plum_db's API, every write broadcast through Plumtree, periodic
active anti-entropy with Merkle trees, tombstone collection, subscriptions.
Under it, :class:`Store` is the local data layer: one node's data under full
prefixes ``(prefix, subprefix)``, with causal contexts (dotted version
vectors), sibling resolution, tombstones, a Merkle tree per PlumDB partition,
and memory or SQLite backends; it is synchronous and does no network I/O
(docs/plumdb.md).

The pure cores used by replication live in :mod:`plumdb.core`:
``causal`` (DVV sets), ``object``, ``keys``, ``merkle`` and ``exchange``
(the sans-IO anti-entropy protocol).
"""

from plumdb.anti_entropy import AntiEntropyStatistics, ExchangeOutcome
from plumdb.backend import Backend
from plumdb.backend_memory import MemoryBackend
from plumdb.backend_sqlite import SqliteBackend, SqliteConfig
from plumdb.config import PlumDBConfig
from plumdb.core.keys import ANY, FullPrefix, Key, KeyPattern
from plumdb.core.merkle import MerkleConfig
from plumdb.core.object import (
    Object,
    Resolved,
    Resolver,
    Sibling,
    decode_object,
    encode_object,
    resolve,
)
from plumdb.errors import ExchangeError, ExchangeFailed, MalformedData
from plumdb.service import PlumDB, PlumDBStatistics, open_plumdb
from plumdb.store import Change, Store, StoreConfig, StoreStatistics
from plumdb.subscription import Subscription

__all__ = [
    "ANY",
    "AntiEntropyStatistics",
    "Backend",
    "Change",
    "ExchangeError",
    "ExchangeFailed",
    "ExchangeOutcome",
    "FullPrefix",
    "Key",
    "KeyPattern",
    "MalformedData",
    "MemoryBackend",
    "MerkleConfig",
    "Object",
    "PlumDB",
    "PlumDBConfig",
    "PlumDBStatistics",
    "Resolved",
    "Resolver",
    "Sibling",
    "SqliteBackend",
    "SqliteConfig",
    "Store",
    "StoreConfig",
    "StoreStatistics",
    "Subscription",
    "decode_object",
    "encode_object",
    "open_plumdb",
    "resolve",
]
