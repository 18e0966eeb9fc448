"""The memory backend: one ``SortedDict`` of bytes per PlumDB partition.

Holds data for the life of the process only: the backend of memory-only
prefixes, of tests, and of nodes that rebuild their state from peers at start
(anti-entropy refills it). Implements :class:`plumdb.backend.Backend`; it
stores the same bytes the SQLite backend stores, so the two agree exactly
(tests/plumdb/test_backend_conformance.py).

Iteration copies one page of ``ITERATE_PAGE_SIZE`` items at a time and resumes
after the last key, so callers may write while they iterate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import final

from sortedcontainers import SortedDict

from plumdb.backend import ITERATE_PAGE_SIZE, BatchOperation

__all__ = ["MemoryBackend"]


@final
class MemoryBackend:
    """Sorted in-memory storage (see :class:`plumdb.backend.Backend`).

    Args:
        partition_count: PlumDB partitions (>= 1).
    """

    def __init__(self, partition_count: int) -> None:
        if type(partition_count) is not int or partition_count < 1:
            raise ValueError("partition_count must be an int >= 1")
        self._partitions: list[SortedDict[bytes, bytes]] = [
            SortedDict() for _ in range(partition_count)
        ]
        self._closed = False

    @property
    def partition_count(self) -> int:
        """How many partitions this backend holds."""
        return len(self._partitions)

    def _table(self, partition: int) -> SortedDict[bytes, bytes]:
        assert not self._closed, "backend is closed"
        return self._partitions[partition]

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value under *key*, or ``None``."""
        return self._table(partition).get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Store *value* under *key*."""
        self._table(partition)[key] = value

    def delete(self, partition: int, key: bytes) -> None:
        """Remove *key* if present."""
        self._table(partition).pop(key, None)

    def write_batch(self, operations: Sequence[BatchOperation]) -> None:
        """Apply every operation in order (atomic: nothing here can fail midway)."""
        tables = [self._table(partition) for partition, _, _ in operations]
        for table, (_, key, value) in zip(tables, operations, strict=True):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    def iterate(
        self,
        partition: int,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs in ``[start, stop)`` in key order, a page at a time."""
        table = self._table(partition)
        inclusive = True
        while True:
            keys = list(
                islice(
                    table.irange(start, stop, inclusive=(inclusive, False)),
                    ITERATE_PAGE_SIZE,
                )
            )
            page = [(key, table[key]) for key in keys]
            yield from page
            if len(keys) < ITERATE_PAGE_SIZE:
                return
            start, inclusive = keys[-1], False
            table = self._table(partition)

    def count(
        self,
        partition: int,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> int:
        """How many keys lie in ``[start, stop)``."""
        table = self._table(partition)
        if start is None and stop is None:
            return len(table)
        low = table.bisect_left(start) if start is not None else 0
        high = table.bisect_left(stop) if stop is not None else len(table)
        return max(high - low, 0)

    def close(self) -> None:
        """Drop the data; idempotent."""
        self._closed = True
        self._partitions = []
