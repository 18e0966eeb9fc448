"""Goal: both backends keep the Backend contract.

Method: the shipped conformance kit (``plumdb.testing.check_backend``) runs on
the memory backend and on SQLite files under ``tmp_path`` (both durability
settings), with several seeds for the random keys; a deliberately broken
backend must fail it.
"""

from __future__ import annotations

import itertools
import pathlib

import pytest

from plumdb import MemoryBackend, SqliteBackend, SqliteConfig
from plumdb.backend import Backend
from plumdb.testing import check_backend


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memory_backend(seed: int) -> None:
    check_backend(MemoryBackend, seed=seed)


@pytest.mark.parametrize(
    ("synchronous", "seed"),
    # FULL fsyncs every write (~5 ms here), so it runs one seed.
    [("FULL", 0), ("NORMAL", 0), ("NORMAL", 1)],
)
def test_sqlite_backend(tmp_path: pathlib.Path, synchronous: str, seed: int) -> None:
    counter = itertools.count()

    def open_backend(partition_count: int) -> Backend:
        return SqliteBackend(
            tmp_path / f"db{next(counter)}.sqlite",
            partition_count=partition_count,
            config=SqliteConfig(synchronous=synchronous),  # type: ignore[arg-type]
        )

    check_backend(open_backend, seed=seed)


def test_the_kit_catches_a_broken_backend() -> None:
    class Unordered:
        """A memory backend that iterates in reverse: must fail the kit."""

        def __init__(self, partition_count: int) -> None:
            self.inner = MemoryBackend(partition_count)
            self.partition_count = partition_count

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def iterate(self, partition: int, **kwargs: object) -> object:
            return reversed(list(self.inner.iterate(partition, **kwargs)))  # type: ignore[arg-type]

    with pytest.raises(AssertionError, match="conformance"):
        check_backend(Unordered)  # type: ignore[arg-type]
