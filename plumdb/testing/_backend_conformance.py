"""The backend conformance kit: what every :class:`plumdb.backend.Backend` must do.

Like trio's ``check_one_way_stream`` and Orleans' persistence test kit: a
backend author calls :func:`check_backend` with a factory, from any test
runner. Each check opens a fresh backend, exercises one part of the contract
(plumdb/backend.py) and closes it; a failure raises ``AssertionError`` naming
what broke.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from plumdb.backend import ITERATE_PAGE_SIZE, Backend

__all__ = ["check_backend"]

_PARTITIONS = 3


def _random_keys(rng: random.Random, count: int) -> list[bytes]:
    keys = {rng.randbytes(rng.randrange(0, 6)) for _ in range(count)}
    return sorted(keys)


def _check_point_operations(backend: Backend) -> None:
    assert backend.partition_count == _PARTITIONS, "partition_count"
    assert backend.get(0, b"k") is None, "absent key reads None"
    backend.put(0, b"k", b"v1")
    assert backend.get(0, b"k") == b"v1", "put then get"
    backend.put(0, b"k", b"v2")
    assert backend.get(0, b"k") == b"v2", "put replaces"
    assert backend.get(1, b"k") is None, "partitions are separate keyspaces"
    backend.delete(0, b"k")
    assert backend.get(0, b"k") is None, "delete removes"
    backend.delete(0, b"never")  # absent keys are fine
    backend.put(2, b"", b"")
    assert backend.get(2, b"") == b"", "empty key and value"


def _check_order_and_ranges(backend: Backend, rng: random.Random) -> None:
    keys = _random_keys(rng, 60)
    shuffled = list(keys)
    rng.shuffle(shuffled)
    for key in shuffled:
        backend.put(1, key, key + b"!")
    assert list(backend.iterate(1)) == [(k, k + b"!") for k in keys], "key order"
    assert list(backend.iterate(0)) == [], "other partitions untouched"
    assert backend.count(1) == len(keys), "count"
    for _ in range(20):
        start, stop = sorted(rng.sample([*keys, b"", b"\xff\xff"], 2))
        expected = [k for k in keys if start <= k < stop]
        got = [k for k, _ in backend.iterate(1, start=start, stop=stop)]
        assert got == expected, f"iterate [{start!r}, {stop!r})"
        assert backend.count(1, start=start, stop=stop) == len(expected), "count range"
        assert [k for k, _ in backend.iterate(1, start=start)] == [
            k for k in keys if k >= start
        ], "iterate from start"


def _check_pages_and_writes_while_iterating(backend: Backend) -> None:
    count = ITERATE_PAGE_SIZE * 2 + 7
    keys = [b"%06d" % n for n in range(0, 2 * count, 2)]
    for key in keys:
        backend.put(0, key, b"x")
    seen: list[bytes] = []
    for index, (key, _) in enumerate(backend.iterate(0)):
        seen.append(key)
        if index % 50 == 0:
            backend.put(0, b"%06d" % (int(key) + 1), b"new")  # after the cursor
            backend.delete(0, key)  # at the cursor
    assert seen == sorted(set(seen)), "no key twice, order kept"
    assert set(keys) <= set(seen), "every key present at the start is seen"


def _check_batches(backend: Backend) -> None:
    backend.put(0, b"gone", b"1")
    backend.write_batch(
        [
            (0, b"a", b"1"),
            (1, b"b", b"2"),
            (0, b"gone", None),
            (2, b"c", b"3"),
            (2, b"c", None),
            (0, b"a", b"4"),
        ]
    )
    assert backend.get(0, b"a") == b"4", "batch operations apply in order"
    assert backend.get(1, b"b") == b"2", "batch spans partitions"
    assert backend.get(0, b"gone") is None, "batch deletes"
    assert backend.get(2, b"c") is None, "later operation wins"
    backend.write_batch([])


def check_backend(open_backend: Callable[[int], Backend], *, seed: int = 0) -> None:
    """Run every conformance check on fresh backends from *open_backend*.

    Args:
        open_backend: makes a new, empty backend with the given partition
            count.
        seed: for the random keys (printed in the failure message).

    Raises:
        AssertionError: the backend broke the contract (the message says how).
    """
    rng = random.Random(seed)
    checks: list[Callable[[Backend], None]] = [
        _check_point_operations,
        lambda b: _check_order_and_ranges(b, rng),
        _check_pages_and_writes_while_iterating,
        _check_batches,
    ]
    for check in checks:
        backend = open_backend(_PARTITIONS)
        try:
            check(backend)
        except AssertionError as error:
            raise AssertionError(
                f"backend conformance (seed {seed}): {error}"
            ) from None
        finally:
            backend.close()
            backend.close()  # idempotent
