"""Goal: objects resolve the same way on every node, encode canonically, and
refuse anything that is not a valid object.

Method: examples for writes, tombstones and both resolvers; hypothesis draws
concurrent writes by several actors, merges them in two random orders, and
checks the merged objects, their bytes, hashes and resolutions are identical;
round trips through the plain and CBOR forms; arbitrary bytes and corrupted
plain forms decode to ``MalformedData`` and nothing else.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumdb.core.causal import DVVSet
from plumdb.core.object import (
    HASH_BYTES,
    VALUE_DEPTH_MAX,
    Object,
    Sibling,
    check_value,
    collectable,
    decode_object,
    encode_object,
    merge,
    modify,
    object_from_plain,
    object_hash,
    object_to_plain,
    resolve,
)
from plumdb.errors import MalformedData

values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.binary(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=6,
)


def write(existing: Object | None, value: object, actor: str, ts: int) -> Object:
    context = existing.context if existing is not None else ()
    return modify(
        existing, Sibling(value=value, timestamp=ts), actor=actor, context=context
    )


def tombstone(existing: Object | None, actor: str, ts: int) -> Object:
    context = existing.context if existing is not None else ()
    sibling = Sibling(value=None, timestamp=ts, deleted=True)
    return modify(existing, sibling, actor=actor, context=context)


concurrent_writes = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        values,
        st.integers(0, 5),  # timestamps collide on purpose
        st.booleans(),  # a delete
    ),
    min_size=1,
    max_size=6,
)


def build(writes: list[tuple[str, Any, int, bool]]) -> list[Object]:
    """Every state reached: each actor writes on its own replica (from a shared
    first object), one write after another, as a real actor does."""
    base = write(None, "base", "z", 0)
    replicas: dict[str, Object] = {}
    out = []
    for actor, value, ts, deleted in writes:
        current = replicas.get(actor, base)
        if deleted:
            replicas[actor] = tombstone(current, actor, ts)
        else:
            replicas[actor] = write(current, value, actor, ts)
        out.append(replicas[actor])
    return out


@given(concurrent_writes, st.randoms(use_true_random=False))
def test_merge_order_does_not_matter(writes: Any, rng: Any) -> None:
    objects = build(writes)
    shuffled = list(objects)
    rng.shuffle(shuffled)
    one = functools.reduce(merge, objects)
    two = functools.reduce(merge, shuffled)
    assert encode_object(one) == encode_object(two)
    assert object_hash(encode_object(one)) == object_hash(encode_object(two))
    assert resolve(one) == resolve(two)
    concat = lambda a, b: [a, b]  # noqa: E731
    assert resolve(one, concat) == resolve(two, concat)


@given(concurrent_writes)
def test_round_trip(writes: Any) -> None:
    obj = functools.reduce(merge, build(writes))
    data = encode_object(obj)
    assert encode_object(decode_object(data)) == data
    assert encode_object(object_from_plain(object_to_plain(obj))) == data
    assert len(object_hash(data)) == HASH_BYTES


def test_lww_picks_the_newest_then_breaks_ties_by_bytes() -> None:
    base = write(None, "base", "z", 0)
    newer = write(base, "new", "a", 20)
    older = write(base, "old", "b", 10)
    assert resolve(merge(newer, older)).value == "new"
    tie_a = write(base, "aaa", "a", 5)
    tie_b = write(base, "bbb", "b", 5)
    assert resolve(merge(tie_a, tie_b)) == resolve(merge(tie_b, tie_a))
    assert resolve(merge(tie_a, tie_b)).value == "bbb"  # larger CBOR bytes


def test_resolved_context_covers_every_sibling() -> None:
    base = write(None, "base", "z", 0)
    both = merge(write(base, 1, "a", 1), write(base, 2, "b", 2))
    resolved = resolve(both)
    after = modify(
        both,
        Sibling(value=resolved.value, timestamp=3),
        actor="a",
        context=resolved.context,
    )
    assert after.sibling_count == 1
    assert after.siblings[0].value == 2


def test_function_resolver_folds_in_order_and_add_wins() -> None:
    base = write(None, [], "z", 0)
    siblings = merge(
        merge(write(base, ["x"], "a", 3), write(base, ["y"], "b", 1)),
        tombstone(base, "c", 9),
    )
    resolved = resolve(siblings, lambda a, b: a + b)
    assert resolved.value == ["y", "x"]  # ordered by timestamp; the delete loses
    assert not resolved.deleted
    assert resolved.sibling.timestamp == 3
    assert resolve(siblings).deleted  # lww: the delete is newest
    only_deletes = merge(tombstone(base, "a", 1), tombstone(base, "b", 2))
    assert resolve(only_deletes, lambda a, b: a).deleted
    with pytest.raises(ValueError, match="resolver"):
        resolve(siblings, "fww")  # type: ignore[arg-type]


def test_tombstones_and_collectable() -> None:
    obj = tombstone(write(None, 1, "a", 0), "a", 1_000_000_000)
    assert obj.is_tombstone
    assert obj.sibling_count == 1
    assert not collectable(obj, now_ns=1_500_000_000, grace=1.0)
    assert collectable(obj, now_ns=2_000_000_000, grace=1.0)
    live = merge(obj, write(write(None, 1, "a", 0), 2, "b", 5))
    assert not live.is_tombstone
    assert not collectable(live, now_ns=10**12, grace=0.0)


def test_sibling_and_object_validation() -> None:
    with pytest.raises(ValueError, match="tombstone"):
        Sibling(value=1, timestamp=0, deleted=True)
    with pytest.raises(TypeError):
        Sibling(value=1, timestamp=True)
    with pytest.raises(ValueError, match="anonymous"):
        Object(DVVSet.new(Sibling(value=1, timestamp=0)))
    with pytest.raises(ValueError, match="at least one"):
        Object(DVVSet((("a", 1, ()),)))
    with pytest.raises(TypeError):
        Object(DVVSet((("a", 1, (1,)),)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [{1, 2}, datetime.datetime(2020, 1, 1), {1.5: "x"}, object(), [b"", {2}]]
)
def test_check_value_refuses_non_plain_data(bad: object) -> None:
    with pytest.raises(TypeError):
        check_value(bad)


def test_check_value_refuses_deep_nesting() -> None:
    deep: list[Any] = []
    for _ in range(VALUE_DEPTH_MAX + 2):
        deep = [deep]
    with pytest.raises(ValueError, match="deep"):
        check_value(deep)


@given(st.binary(max_size=60))
def test_any_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        obj = decode_object(data)
    except MalformedData:
        return
    assert isinstance(obj, Object)


@pytest.mark.parametrize(
    "plain",
    [
        None,
        [],
        [2, []],
        [1, {}],
        [1, []],  # no sibling at all
        [1, [["a", 1, [[0, False, {1, 2}]]]]],
        [1, [["a", 1, [[True, False, 1]]]]],
        [1, [["a", 1, [[0, True, 1]]]]],  # a tombstone with a value
        [1, [["a", 0, [[0, False, 1]]]]],
        [1, [["b", 1, [[0, False, 1]]], ["a", 1, []]]],  # unsorted
        [1, [["a", 1, [[0, False, 1], [0, False, 2]]]]],  # more values than events
        [1, [["", 1, [[0, False, 1]]]]],
    ],
)
def test_malformed_plain_forms(plain: object) -> None:
    with pytest.raises(MalformedData):
        object_from_plain(plain)
    with pytest.raises(MalformedData):
        decode_object(cbor2.dumps(plain, canonical=True))


def test_tuples_and_lists_encode_alike() -> None:
    a = write(None, (1, 2), "a", 0)
    b = write(None, [1, 2], "a", 0)
    assert encode_object(a) == encode_object(b)
    assert decode_object(encode_object(a)).siblings[0].value == [1, 2]
