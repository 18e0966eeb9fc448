"""Goal: the store's API does what docs/plumdb.md says, example by example.

Method: stores on the memory backend (SQLite where durability or memory-only
prefixes matter) with a fake wall clock; replicas are separate stores whose
objects are handed over with ``merge``, as the replication layer will. Covered:
reads, writes, contexts and siblings, resolution with and without write-back,
ordered iteration and patterns, memory-only prefixes, subscriptions (including
a failing subscriber), the replication seams, tombstone collection and the
dot floor that keeps a write after a collection from being lost.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import pytest

from plumdb import ANY, Change, Object, Store, StoreConfig

FP = ("users", "eu")
SECOND = 1_000_000_000


class FakeClock:
    """Wall clock in ns that ticks by 1 ms per read; ``advance`` jumps."""

    def __init__(self, start: int = 10 * SECOND) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def store(actor: str = "a@h:1", clock: FakeClock | None = None, **config: Any) -> Store:
    return Store(actor=actor, clock=clock or FakeClock(), config=StoreConfig(**config))


def test_put_get_delete() -> None:
    with store() as s:
        assert s.get(FP, "k") is None
        assert s.get(FP, "k", default=0) == 0
        obj = s.put(FP, "k", {"name": "ada"})
        assert obj.context == (("a@h:1", 1),)
        assert s.get(FP, "k") == {"name": "ada"}
        s.put(FP, "k", [1, 2])
        assert s.get(FP, "k") == [1, 2]
        tomb = s.delete(FP, "k")
        assert tomb.is_tombstone
        assert tomb.context == (("a@h:1", 3),)
        assert s.get(FP, "k", default="gone") == "gone"
        assert s.get(("users", "us"), "k") is None  # prefixes are separate
        stats = s.statistics()
        assert (stats.put_count, stats.delete_count) == (2, 1)


def test_a_stale_context_makes_siblings_and_get_resolves_them() -> None:
    clock = FakeClock()
    with store(clock=clock) as s:
        read = s.put(FP, "k", "v1").context
        s.put(FP, "k", "v2")
        s.put(FP, "k", "v3", context=read)  # did not see v2
        obj = s.get_object(FP, "k")
        assert obj is not None
        assert {x.value for x in obj.siblings} == {"v2", "v3"}
        assert s.get(FP, "k", allow_put=False) == "v3"
        assert s.get_object(FP, "k") == obj  # nothing written
        assert s.get(FP, "k", resolver=lambda a, b: a + b) == "v2v3"
        after = s.get_object(FP, "k")
        assert after is not None
        assert after.sibling_count == 1  # written back with the full context
        assert s.statistics().resolve_write_count == 1


def test_lww_across_replicas_and_write_back_is_published() -> None:
    clock = FakeClock()
    a, b = store("a@h:1", clock), store("b@h:1", clock)
    events: list[Change] = []
    a.subscribe((ANY, ANY), events.append)
    from_b = b.put(FP, "k", "b-value")
    a.put(FP, "k", "a-value")  # later, concurrent with b's
    assert a.merge(FP, "k", from_b)
    assert a.get(FP, "k") == "a-value"
    # put, merge, then get's write-back: a local write to broadcast.
    assert [e.origin for e in events] == ["local", "remote", "local"]
    assert events[-1].object.sibling_count == 1
    assert b.merge(FP, "k", events[-1].object)
    assert b.get(FP, "k") == "a-value"
    a.close()
    b.close()


def test_iteration_is_ordered_and_skips_tombstones() -> None:
    with store(partition_count=4) as s:
        keys: list[Any] = [
            ("dev", 2),
            ("dev", 10),
            "b",
            b"a",
            3,
            -1,
            ("dev", 2, "x"),
            ("z",),
        ]
        for key in keys:
            s.put(FP, key, repr(key))
        s.put(("users", "us"), "other", 1)
        s.delete(FP, "b")
        expected = [-1, 3, b"a", ("dev", 2), ("dev", 2, "x"), ("dev", 10), ("z",)]
        assert [k for k, _ in s.iterate(FP)] == expected
        assert [k for k, _ in s.iterate(FP, start=("dev", 3))] == [("dev", 10), ("z",)]
        assert s.match(FP, ("dev", ANY)) == [
            (("dev", 2), "('dev', 2)"),
            (("dev", 10), "('dev', 10)"),
        ]
        assert s.to_list(FP, match=3) == [(3, "3")]
        assert s.fold(FP, lambda n, _: n + 1, 0) == len(expected)
        with pytest.raises(TypeError):
            s.to_list(("users",))  # type: ignore[arg-type]


def test_writes_during_iteration_are_allowed() -> None:
    with store(partition_count=2) as s:
        for n in range(600):
            s.put(FP, n, n)
        seen = []
        for key, _ in s.iterate(FP):
            assert isinstance(key, int)
            seen.append(key)
            if key % 100 == 0:
                s.delete(FP, key + 1)
                s.put(FP, 10_000 + key, "late")
        assert seen == sorted(set(seen))


def test_memory_only_prefixes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    config = StoreConfig(partition_count=2, memory_prefixes=["cache", ("users", "tmp")])
    clock = FakeClock()
    with Store.open_sqlite(path, actor="a@h:1", clock=clock, config=config) as s:
        s.put(("cache", "x"), "k", 1)
        s.put(("users", "tmp"), "k", 2)
        s.put(FP, "k", 3)
        assert sum(len(s.tree(p)) for p in range(2)) == 3
        assert s.to_list(("cache", "x")) == [("k", 1)]
    with Store.open_sqlite(path, actor="a@h:2", clock=clock, config=config) as s:
        assert s.get(("cache", "x"), "k") is None
        assert s.get(("users", "tmp"), "k") is None
        assert s.get(FP, "k") == 3
        assert sum(len(s.tree(p)) for p in range(2)) == 1


def test_subscriptions_filter_and_survive_a_failing_subscriber(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with store() as s:
        every: list[Change] = []
        devices: list[Change] = []

        def broken(change: Change) -> None:
            raise RuntimeError("subscriber bug")

        s.subscribe((ANY, ANY), broken)
        s.subscribe((ANY, ANY), every.append)
        sub = s.subscribe(("users", ANY), devices.append, key=("dev", ANY))
        with caplog.at_level(logging.ERROR, logger="plumdb.store"):
            s.put(FP, ("dev", 1), "on")
            s.put(FP, "other", "x")
            s.delete(FP, ("dev", 1))
        assert [(c.key, c.deleted, c.value) for c in every] == [
            (("dev", 1), False, "on"),
            ("other", False, "x"),
            (("dev", 1), True, None),
        ]
        assert [c.key for c in devices] == [("dev", 1), ("dev", 1)]
        assert s.statistics().subscriber_error_count == 3
        assert "subscriber bug" in caplog.text
        assert s.unsubscribe(sub)
        assert not s.unsubscribe(sub)
        s.put(FP, ("dev", 2), "on")
        assert len(devices) == 2
        with pytest.raises(TypeError):
            s.subscribe(("users",), every.append)  # type: ignore[arg-type]


def test_merge_and_is_stale() -> None:
    clock = FakeClock()
    a, b = store("a@h:1", clock), store("b@h:1", clock)
    first = a.put(FP, "k", 1)
    assert not b.is_stale(FP, "k", first)
    assert b.merge(FP, "k", first)
    assert b.is_stale(FP, "k", first)
    assert b.is_stale(FP, "k", first.context)
    assert not b.merge(FP, "k", first)  # nothing new
    newer = a.put(FP, "k", 2)
    assert not b.is_stale(FP, "k", newer)
    assert b.merge(FP, "k", newer)
    assert b.get(FP, "k") == 2
    assert b.statistics().merge_new_count == 2
    with pytest.raises(TypeError):
        b.merge(FP, "k", {"not": "an object"})  # type: ignore[arg-type]
    a.close()
    b.close()


def test_caller_errors_write_nothing() -> None:
    with store(value_bytes_max=100) as s:
        with pytest.raises(ValueError, match="value_bytes_max"):
            s.put(FP, "k", "x" * 200)
        with pytest.raises(TypeError):
            s.put(FP, "k", {1, 2})
        with pytest.raises(TypeError):
            s.put(FP, 1.5, "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            s.put(("users", 1), "k", "x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="counter"):
            s.put(FP, "k", "x", context=[("a@h:1", 0)])
        assert s.to_list(FP) == []
        assert s.statistics().event_count == 0
    with pytest.raises(ValueError, match="actor"):
        Store(actor="", clock=FakeClock())


def test_tombstones_are_collected_after_grace_when_acknowledged() -> None:
    clock = FakeClock()
    with store(clock=clock, partition_count=2) as s:
        s.put(FP, "kept", 1)
        s.put(FP, "gone", 1)
        s.delete(FP, "gone")
        s.delete(FP, "young")
        roots = [s.tree(p).root() for p in range(2)]
        asked: list[Any] = []

        def acknowledged(full_prefix: Any, key: Any, obj: Object) -> bool:
            asked.append(key)
            return bool(key != "young")

        assert s.collect_tombstones(acknowledged, grace=60.0) == 0
        assert asked == []  # nothing old enough to ask about
        clock.advance(61)
        s.delete(FP, "fresh")
        assert s.collect_tombstones(acknowledged, grace=60.0) == 1
        assert sorted(asked) == ["gone", "young"]
        assert s.get_object(FP, "gone") is None
        assert s.get_object(FP, "young") is not None
        assert s.get_object(FP, "fresh") is not None
        assert [s.tree(p).root() for p in range(2)] != roots
        assert s.statistics().tombstone_collected_count == 1
        with pytest.raises(ValueError, match="grace"):
            s.collect_tombstones(acknowledged, grace=-1)


def test_a_write_after_collection_is_not_lost_where_the_tombstone_remains() -> None:
    # a writes k three times and deletes it; r holds that tombstone. a collects
    # its tombstone (r still holds it, collecting later), then writes k again
    # with no context. r must keep the new value: the new dot is above the
    # collected tombstone's, so r cannot mistake it for one it has seen.
    clock = FakeClock()
    a, r = store("a@h:1", clock), store("r@h:1", clock)
    for n in range(3):
        a.put(FP, "k", n)
    tomb = a.delete(FP, "k")
    r.merge(FP, "k", tomb)
    clock.advance(3600)
    assert a.collect_tombstones(lambda *_: True, grace=60.0) == 1
    fresh = a.put(FP, "k", "reborn")
    assert fresh.context == (("a@h:1", 5),)
    assert r.merge(FP, "k", fresh)
    assert r.get(FP, "k") == "reborn"
    a.close()
    r.close()


def test_partition_seams() -> None:
    with store(partition_count=4) as s:
        for n in range(40):
            s.put(FP, n, n)
        s.delete(FP, 0)
        by_partition = {p: list(s.partition_objects(p)) for p in range(4)}
        assert sum(len(v) for v in by_partition.values()) == 40
        for p, items in by_partition.items():
            assert [k for k, _ in items] == sorted(k for k, _ in items)
            assert len(s.tree(p)) == len(items)
            for key, obj in items:
                assert s.tree(p).get(key) is not None
                assert isinstance(obj, Object)
        assert s.partition_of(FP, 7) in range(4)
        with pytest.raises(ValueError, match="partition"):
            s.tree(4)
