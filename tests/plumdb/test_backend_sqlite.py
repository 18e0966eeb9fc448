"""Goal: what the SQLite backend acknowledges is on disk: it survives closing and
reopening, and a process killed with SIGKILL in the middle of writing.

Method: a store over a file in ``tmp_path`` is written, closed and reopened
(values, tombstones, siblings and Merkle roots must match). For crashes, a
child Python process (``sys.executable -c``) writes keys through the store and
prints each key after ``put`` returns; the parent reads a few hundred of those
lines, kills the child with SIGKILL mid-stream, reopens the database and
requires every printed key, under both ``synchronous`` settings. The child is
killed and reaped in every case. Misuse (another partition count) is refused
and closes the file.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from plumdb import SqliteBackend, SqliteConfig, Store, StoreConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
FP = ("devices", "eu")

CHILD = """
import itertools, sys
from plumdb import SqliteConfig, Store
path, synchronous = sys.argv[1], sys.argv[2]
clock = itertools.count(1).__next__
config = SqliteConfig(synchronous=synchronous)
store = Store.open_sqlite(path, actor="child@host:1", clock=clock, sqlite=config)
for n in itertools.count():
    store.put(("devices", "eu"), n, {"n": n, "pad": "x" * 100})
    sys.stdout.write(f"{n}\\n")
    sys.stdout.flush()
"""


def clock() -> itertools.count[int]:
    return itertools.count(1_000)


def test_data_survives_close_and_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store.sqlite"
    ticks = clock()
    config = StoreConfig(partition_count=4)
    with Store.open_sqlite(
        path, actor="a@h:1", clock=ticks.__next__, config=config
    ) as store:
        for n in range(300):
            store.put(FP, ("key", n), {"n": n})
        store.delete(FP, ("key", 7))
        other = Store(actor="b@h:1", clock=ticks.__next__, config=config)
        store.merge(FP, ("key", 8), other.put(FP, ("key", 8), "concurrent"))
        other.close()
        roots = [store.tree(p).root() for p in range(4)]
        listing = store.to_list(FP)
    with Store.open_sqlite(
        path, actor="a@h:2", clock=ticks.__next__, config=config
    ) as store:
        assert [store.tree(p).root() for p in range(4)] == roots
        assert store.to_list(FP) == listing
        assert store.get(FP, ("key", 7), default="deleted") == "deleted"
        obj = store.get_object(FP, ("key", 8))
        assert obj is not None
        assert obj.sibling_count == 2


def test_another_partition_count_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteBackend(path, partition_count=8).close()
    with pytest.raises(ValueError, match="partitions"):
        SqliteBackend(path, partition_count=4)
    with pytest.raises(ValueError, match="partitions"):
        Store.open_sqlite(
            path,
            actor="a@h:1",
            clock=clock().__next__,
            config=StoreConfig(partition_count=2),
        )


def test_wal_mode_is_on(tmp_path: pathlib.Path) -> None:
    backend = SqliteBackend(tmp_path / "db.sqlite", partition_count=1)
    try:
        backend.put(0, b"k", b"v")
        assert (tmp_path / "db.sqlite-wal").exists()
    finally:
        backend.close()
    with pytest.raises(ValueError, match="synchronous"):
        SqliteConfig(synchronous="OFF")  # type: ignore[arg-type]


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_acknowledged_puts_survive_sigkill(
    tmp_path: pathlib.Path, synchronous: str
) -> None:
    path = tmp_path / "crash.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), synchronous],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    acknowledged: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 150:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) == 150, "the child stopped writing early"
    with Store.open_sqlite(path, actor="check@h:1", clock=clock().__next__) as store:
        for n in acknowledged:
            assert store.get(FP, n) == {"n": n, "pad": "x" * 100}, f"lost key {n}"
