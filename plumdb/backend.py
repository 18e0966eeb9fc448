"""The storage backend protocol: ordered bytes per PlumDB partition.

A backend stores, for each PlumDB partition (a shard of the key space, see
docs/plumdb.md), a map from encoded full key to encoded object, both bytes.
Keys are ordered as byte strings, which is the key order of
:mod:`plumdb.core.keys` by construction. The store does all encoding, hashing
and causality; a backend only keeps bytes, so the memory and SQLite backends
hold identical data and pass one conformance suite.

Contract
--------
* ``put``, ``delete`` and ``write_batch`` are *acknowledged* when they return:
  durable to the backend's promise (the memory backend: until the process
  ends; SQLite: per its ``synchronous`` setting). A batch is atomic.
* ``iterate`` yields ``(key, value)`` in ascending key order within
  ``[start, stop)``. It is not a snapshot: it reads in pages, so writes made
  while iterating may or may not be seen, but no key is yielded twice and the
  order holds. Callers may write between items.
* ``partition`` is an int in ``0 .. partition_count - 1`` (a programmer error
  otherwise). Backends are not thread-safe: one caller at a time (a driver
  that runs them in a worker thread must serialise its calls).

Resource handling: a backend owns its files or connections until ``close()``;
the store closes the backends it was given when it is closed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, Protocol, TypeAlias

__all__ = ["ITERATE_PAGE_SIZE", "Backend", "BatchOperation"]

ITERATE_PAGE_SIZE: Final = 256
"""Rows read per page while iterating: enough to amortise a query, small enough
that a writer interleaved with an iteration never waits long."""

BatchOperation: TypeAlias = tuple[int, bytes, bytes | None]
"""``(partition, key, value)``; a ``None`` value deletes the key."""


class Backend(Protocol):
    """Ordered ``bytes -> bytes`` storage, one keyspace per PlumDB partition."""

    @property
    def partition_count(self) -> int:
        """How many partitions this backend was created with."""
        ...

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value stored under *key*, or ``None``."""
        ...

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Store *value* under *key*; acknowledged on return."""
        ...

    def delete(self, partition: int, key: bytes) -> None:
        """Remove *key* (absent keys are fine); acknowledged on return."""
        ...

    def write_batch(self, operations: Sequence[BatchOperation]) -> None:
        """Apply every operation atomically, in order; acknowledged on return."""
        ...

    def iterate(
        self,
        partition: int,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs with ``start <= key < stop``, in key order."""
        ...

    def count(
        self,
        partition: int,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> int:
        """How many keys lie in ``[start, stop)``."""
        ...

    def close(self) -> None:
        """Release files and connections; idempotent. Nothing works after."""
        ...
