"""The SQLite backend: the embedded durable default, in WAL mode.

Implements :class:`plumdb.backend.Backend` over the standard library's
``sqlite3``: one file, one table with a partition column, keys and objects
as BLOBs (SQLite orders BLOBs with ``memcmp``, which is the key order of
:mod:`plumdb.core.keys`)::

    objects(partition INTEGER, key BLOB, object BLOB,
            PRIMARY KEY (partition, key)) WITHOUT ROWID
    meta(name TEXT PRIMARY KEY, value)   -- format, partition_count

Durability
----------
The connection is in autocommit mode: each ``put`` / ``delete`` is its own
transaction and ``write_batch`` is one ``BEGIN IMMEDIATE ... COMMIT``, so
every acknowledged write is committed before the call returns. What
"committed" survives depends on :attr:`SqliteConfig.synchronous`:

* ``"FULL"`` (the default): the WAL is fsynced at every commit. An
  acknowledged write survives a process crash (``kill -9``) and a power loss
  or OS crash. Costs one fsync per write (milliseconds on most disks).
* ``"NORMAL"``: the WAL is fsynced only at checkpoints. An acknowledged write
  survives a process crash (it is in the OS page cache, written to the WAL
  file), but the last writes before a power loss or OS crash may be lost;
  the database stays consistent either way. Much faster. For a replicated
  store this is often the right trade: a node that loses its last writes in a
  power cut gets them back from its peers by anti-entropy, except writes it
  acknowledged and had not yet broadcast.

The partition count is recorded at creation; opening the file with another
count raises ``ValueError`` (keys would be looked up in the wrong partition).

Resource handling: the backend owns its connection until :meth:`close`.
Calls must not run concurrently; ``check_same_thread`` is off so a driver
may run them in a worker thread, one at a time.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Final, Literal, final

import attrs

from plumdb.backend import ITERATE_PAGE_SIZE, BatchOperation

__all__ = ["SqliteBackend", "SqliteConfig"]

_FORMAT: Final = 1


@final
@attrs.frozen(kw_only=True)
class SqliteConfig:
    """Options of the SQLite backend.

    Attributes:
        synchronous: ``"FULL"`` (survives power loss) or ``"NORMAL"``
            (survives a process crash only); see the module docstring.
        busy_timeout: seconds to wait for a lock held by another connection
            to the same file (only tools share it; 5 s as sqlite3's default).
    """

    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous is 'FULL' or 'NORMAL'")
        seconds: object = self.busy_timeout
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("busy_timeout is a number of seconds >= 0")


@final
class SqliteBackend:
    """Durable ordered storage in one SQLite file (WAL mode).

    Args:
        path: the database file (created if missing).
        partition_count: PlumDB partitions; must match the file's.
        config: durability and locking options.

    Raises:
        ValueError: the file was created with another partition count or
            format, or WAL mode could not be enabled.
        sqlite3.Error: the file cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        partition_count: int,
        config: SqliteConfig | None = None,
    ) -> None:
        if type(partition_count) is not int or partition_count < 1:
            raise ValueError("partition_count must be an int >= 1")
        self._config = config if config is not None else SqliteConfig()
        self._partition_count = partition_count
        self._connection: sqlite3.Connection | None = None
        connection = sqlite3.connect(
            os.fspath(path),
            timeout=self._config.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._setup(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _setup(self, connection: sqlite3.Connection) -> None:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            raise ValueError(f"could not enable WAL mode (got {mode!r})")
        connection.execute(f"PRAGMA synchronous={self._config.synchronous}")
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value)"
            )
            connection.execute(
                "CREATE TABLE IF NOT EXISTS objects ("
                " partition INTEGER NOT NULL, key BLOB NOT NULL,"
                " object BLOB NOT NULL, PRIMARY KEY (partition, key)"
                ") WITHOUT ROWID"
            )
            meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
            if not meta:
                connection.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("format", _FORMAT), ("partition_count", self._partition_count)],
                )
            elif meta.get("format") != _FORMAT:
                raise ValueError(f"unknown database format {meta.get('format')!r}")
            elif meta.get("partition_count") != self._partition_count:
                raise ValueError(
                    f"the database has {meta.get('partition_count')} partitions, "
                    f"not {self._partition_count}"
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @property
    def partition_count(self) -> int:
        """How many partitions the database was created with."""
        return self._partition_count

    @property
    def config(self) -> SqliteConfig:
        """The backend's options."""
        return self._config

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "backend is closed"
        return self._connection

    def _check(self, partition: int) -> None:
        assert 0 <= partition < self._partition_count, f"no partition {partition}"

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The object stored under *key*, or ``None``."""
        self._check(partition)
        row = (
            self._db()
            .execute(
                "SELECT object FROM objects WHERE partition = ? AND key = ?",
                (partition, key),
            )
            .fetchone()
        )
        return bytes(row[0]) if row is not None else None

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Store *value* under *key*; committed on return."""
        self._check(partition)
        self._db().execute(
            "INSERT OR REPLACE INTO objects (partition, key, object) VALUES (?, ?, ?)",
            (partition, key, value),
        )

    def delete(self, partition: int, key: bytes) -> None:
        """Remove *key*; committed on return."""
        self._check(partition)
        self._db().execute(
            "DELETE FROM objects WHERE partition = ? AND key = ?", (partition, key)
        )

    def write_batch(self, operations: Sequence[BatchOperation]) -> None:
        """Apply every operation in one transaction; committed on return."""
        for partition, _, _ in operations:
            self._check(partition)
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for partition, key, value in operations:
                if value is None:
                    db.execute(
                        "DELETE FROM objects WHERE partition = ? AND key = ?",
                        (partition, key),
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO objects (partition, key, object)"
                        " VALUES (?, ?, ?)",
                        (partition, key, value),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def iterate(
        self,
        partition: int,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs in ``[start, stop)`` in key order, one page query at a time."""
        self._check(partition)
        inclusive = True
        while True:
            conditions = ["partition = ?"]
            parameters: list[object] = [partition]
            if start is not None:
                conditions.append("key >= ?" if inclusive else "key > ?")
                parameters.append(start)
            if stop is not None:
                conditions.append("key < ?")
                parameters.append(stop)
            parameters.append(ITERATE_PAGE_SIZE)
            rows = (
                self._db()
                .execute(
                    "SELECT key, object FROM objects WHERE "
                    + " AND ".join(conditions)
                    + " ORDER BY key LIMIT ?",
                    parameters,
                )
                .fetchall()
            )
            for key, value in rows:
                yield bytes(key), bytes(value)
            if len(rows) < ITERATE_PAGE_SIZE:
                return
            start, inclusive = bytes(rows[-1][0]), False

    def count(
        self,
        partition: int,
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> int:
        """How many keys lie in ``[start, stop)``."""
        self._check(partition)
        conditions = ["partition = ?"]
        parameters: list[object] = [partition]
        if start is not None:
            conditions.append("key >= ?")
            parameters.append(start)
        if stop is not None:
            conditions.append("key < ?")
            parameters.append(stop)
        (count,) = (
            self._db()
            .execute(
                "SELECT COUNT(*) FROM objects WHERE " + " AND ".join(conditions),
                parameters,
            )
            .fetchone()
        )
        return int(count)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
