"""Goal: DVV sets track causality exactly, and their merge is a join.

Method: hypothesis draws histories over three replicas (actors ``a``, ``b``,
``c``): writes with the replica's current context or with a stale context it
read earlier, and syncs between replicas. A model runs beside the clocks: each
write records which writes it had seen, and a value is live when no known
write has seen it (Almeida et al., DAIS 2014, §3). Checked: the clock's values
are exactly the model's live values; ``sync`` is commutative, associative and
idempotent on every state reached; a write with the context of everything
seen supersedes all; delivering states in any order, with duplicates, gives
the same clock. Examples from the ``dvvset`` documentation pin the shapes.
"""

from __future__ import annotations

import functools

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumdb.core.causal import DVVSet, check_version_vector, descends

ACTORS = ("a", "b", "c")


@attrs.define
class Replica:
    actor: str
    clock: DVVSet[int] = attrs.field(factory=DVVSet)
    known: frozenset[int] = frozenset()
    # Earlier reads: (context, writes known then).
    reads: list[tuple[tuple[tuple[str, int], ...], frozenset[int]]] = attrs.field(
        factory=list
    )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(st.just("read"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    ),
    max_size=25,
)


def run(
    ops: list[tuple[str, int, int]],
) -> tuple[list[DVVSet[int]], dict[int, frozenset[int]]]:
    """Play *ops*; return every clock reached and, per write, what it had seen.

    Also asserts, after every step, that each replica's values are exactly
    the model's live values.
    """
    replicas = [Replica(actor) for actor in ACTORS]
    seen: dict[int, frozenset[int]] = {}
    states: list[DVVSet[int]] = []
    next_value = 0
    for kind, i, j in ops:
        replica = replicas[i]
        if kind == "write":
            if j and replica.reads:
                context, known = replica.reads[(j - 1) % len(replica.reads)]
            else:
                context, known = replica.clock.join(), replica.known
            value = next_value
            next_value += 1
            seen[value] = known
            replica.clock = DVVSet.with_context(context, value).update(
                replica.actor, replica=replica.clock
            )
            replica.known = replica.known | {value}
        elif kind == "read":
            replica.reads.append((replica.clock.join(), replica.known))
        else:
            other = replicas[j]
            replica.clock = replica.clock.sync(other.clock)
            replica.known = replica.known | other.known
        for r in replicas:
            live = {v for v in r.known if not any(v in seen[w] for w in r.known)}
            assert sorted(r.clock.values()) == sorted(live)
        states.append(replica.clock)
    return states, seen


@given(operations)
def test_values_are_exactly_the_unseen_writes(ops: list[tuple[str, int, int]]) -> None:
    run(ops)


@given(operations, st.data())
def test_sync_is_commutative_associative_idempotent(
    ops: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    states, _ = run(ops)
    if not states:
        return
    pick = st.sampled_from(states)
    x, y, z = data.draw(pick), data.draw(pick), data.draw(pick)
    assert x.sync(y) == y.sync(x)
    assert x.sync(y).sync(z) == x.sync(y.sync(z))
    assert x.sync(x) == x


@given(operations)
def test_a_write_with_everything_seen_supersedes_all(
    ops: list[tuple[str, int, int]],
) -> None:
    states, _ = run(ops)
    everything = functools.reduce(DVVSet.sync, states, DVVSet[int]())
    final = DVVSet.with_context(everything.join(), -1).update("b", replica=everything)
    assert final.values() == (-1,)
    for state in states:
        assert state.sync(final) == final
        assert final.sync(state) == final
        assert state.less(final)


@given(operations, st.data())
def test_any_delivery_order_gives_the_same_clock(
    ops: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    states, _ = run(ops)
    shuffled = data.draw(st.permutations(states))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(states or [DVVSet()])))
    in_order = functools.reduce(DVVSet.sync, states, DVVSet[int]())
    assert functools.reduce(DVVSet.sync, duplicated, DVVSet[int]()) == in_order


def test_concurrent_writes_on_two_actors_are_siblings() -> None:
    a = DVVSet.new("v1").update("a")
    b = DVVSet.new("v2").update("b")
    merged = a.sync(b)
    assert sorted(merged.values()) == ["v1", "v2"]
    assert merged.join() == (("a", 1), ("b", 1))
    assert not a.less(b)
    assert not b.less(a)


def test_dvvset_documented_examples() -> None:
    # The shapes of riak dvvset's documented update and sync examples.
    a0 = DVVSet.new("v1").update("a")
    a1 = DVVSet.with_context(a0.join(), "v2").update("a", replica=a0)
    a2 = DVVSet.with_context(a1.join(), "v3").update("b", replica=a1)
    a3 = DVVSet.with_context(a0.join(), "v4").update("b", replica=a1)
    a4 = DVVSet.with_context(a0.join(), "v5").update("a", replica=a1)
    assert a0 == DVVSet((("a", 1, ("v1",)),))
    assert a1 == DVVSet((("a", 2, ("v2",)),))
    assert a2 == DVVSet((("a", 2, ()), ("b", 1, ("v3",))))
    assert a3 == DVVSet((("a", 2, ("v2",)), ("b", 1, ("v4",))))
    assert a4 == DVVSet((("a", 3, ("v5", "v2")),))
    w: DVVSet[str] = DVVSet((("a", 1, ()),))
    z = DVVSet((("a", 2, ("v2", "v1")),))
    assert w.sync(z) == z.sync(w) == DVVSet((("a", 2, ("v2",)),))


def test_stale_context_keeps_the_unseen_value() -> None:
    # Mary writes v1; Peter reads it; Mary writes v2 blindly; Peter writes v3
    # with his read: v3 supersedes v1 only.
    a0 = DVVSet.new("v1").update("a")
    read = a0.join()
    a1 = DVVSet.new("v2").update("a", replica=a0)
    a2 = DVVSet.with_context(read, "v3").update("a", replica=a1)
    assert a1.values() == ("v2", "v1")
    assert a2 == DVVSet((("a", 3, ("v3", "v2")),))


def test_counter_floor_starts_a_new_actor_above_it() -> None:
    clock = DVVSet.with_context((("b", 2),), "x").update("a", counter_floor=7)
    assert clock.join() == (("a", 8), ("b", 2))
    again = DVVSet.with_context(clock.join(), "y").update(
        "a", replica=clock, counter_floor=100
    )
    assert again.counter("a") == 9  # the floor applies only to a new entry


def test_reconcile_and_anonymous_values() -> None:
    merged = DVVSet.new("x").update("a").sync(DVVSet.new("y").update("b"))
    resolved = merged.reconcile("xy")
    assert resolved.values() == ("xy",)
    assert resolved.join() == merged.join()
    concurrent = DVVSet.new(2).sync(DVVSet.new(1))
    assert concurrent.anonymous == (1, 2)
    assert concurrent == DVVSet.new(1).sync(DVVSet.new(2))


def test_invariants_are_checked() -> None:
    with pytest.raises(ValueError, match="sorted"):
        DVVSet((("b", 1, ()), ("a", 1, ())))
    with pytest.raises(ValueError, match="counter"):
        DVVSet((("a", 0, ()),))
    with pytest.raises(ValueError, match="at most"):
        DVVSet((("a", 1, (1, 2)),))
    with pytest.raises(ValueError, match="exactly one"):
        DVVSet((("a", 1, (1,)),)).update("a")


def test_version_vectors() -> None:
    assert check_version_vector([["b", 2], ["a", 1]]) == (("a", 1), ("b", 2))
    with pytest.raises(ValueError, match="twice"):
        check_version_vector([("a", 1), ("a", 2)])
    with pytest.raises(TypeError):
        check_version_vector("ab")
    with pytest.raises(ValueError, match="counter"):
        check_version_vector([("a", 0)])
    assert descends((("a", 2), ("b", 1)), (("a", 1),))
    assert not descends((("a", 2),), (("b", 1),))
