"""Goal: a tree's hashes depend only on the set of ``(key, hash)`` it holds, and
incremental updates give what a rebuild gives.

Method: hypothesis applies random inserts, replacements and deletes (small
shapes, so segments collide) and compares every node with a tree built from
the final contents in another order; summaries parse back to the node hashes
they produce; arbitrary bytes parse to a summary or ``None``; refresh work is
bounded by the dirty segments.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumdb.core.merkle import (
    EMPTY_HASH,
    NODE_HASH_BYTES,
    MerkleConfig,
    MerkleTree,
    parse_summary,
)
from plumdb.core.object import HASH_BYTES

SMALL = MerkleConfig(width=4, levels=2)


def h(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(4, "big"), digest_size=HASH_BYTES).digest()


updates = st.lists(
    st.tuples(st.binary(min_size=1, max_size=3), st.none() | st.integers(0, 3)),
    max_size=40,
)
shapes = st.sampled_from(
    [SMALL, MerkleConfig(width=2, levels=3), MerkleConfig(width=16, levels=1)]
)


def all_nodes(tree: MerkleTree) -> list[bytes]:
    config = tree.config
    return [
        tree.node_hash(level, index)
        for level in range(config.levels + 1)
        for index in range(config.width**level)
    ]


@given(shapes, updates, st.randoms(use_true_random=False))
def test_hashes_depend_only_on_contents(config: Any, ops: Any, rng: Any) -> None:
    tree = MerkleTree(config)
    model: dict[bytes, bytes] = {}
    for key, value in ops:
        if value is None:
            tree.delete(key)
            model.pop(key, None)
        else:
            tree.insert(key, h(value))
            model[key] = h(value)
        if rng.random() < 0.3:
            tree.root()  # refresh at random points
    fresh = MerkleTree(config)
    items = list(model.items())
    rng.shuffle(items)
    for key, value in items:
        fresh.insert(key, value)
    assert all_nodes(tree) == all_nodes(fresh)
    assert len(tree) == len(model)
    assert tree.keys_under(0, 0) == sorted(model)
    assert (tree.root() == EMPTY_HASH) == (not model)
    for key, value in model.items():
        assert tree.get(key) == value


@given(shapes, updates)
def test_summaries_match_node_hashes(config: Any, ops: Any) -> None:
    tree = MerkleTree(config)
    for key, value in ops:
        if value is not None:
            tree.insert(key, h(value))
    for level in range(config.levels):
        for index in range(config.width**level):
            children = parse_summary(tree.children(level, index), config)
            assert children is not None
            for child, child_hash in children.items():
                assert (
                    tree.node_hash(level + 1, index * config.width + child)
                    == child_hash
                )
            if not children:
                assert tree.node_hash(level, index) == EMPTY_HASH


def test_insert_then_delete_restores_the_root() -> None:
    tree = MerkleTree(SMALL)
    for n in range(20):
        tree.insert(b"k%d" % n, h(n))
    before = tree.root()
    tree.insert(b"extra", h(99))
    assert tree.root() != before
    tree.delete(b"extra")
    assert tree.root() == before
    tree.insert(b"k3", h(100))
    assert tree.root() != before
    tree.insert(b"k3", h(3))
    assert tree.root() == before


def test_refresh_touches_only_dirty_branches() -> None:
    tree = MerkleTree()  # 16 x 4 levels
    for n in range(1000):
        tree.insert(b"key-%d" % n, h(n))
    tree.root()
    stats = tree.statistics()
    tree.insert(b"key-5", h(5000))
    assert tree.statistics().dirty_count == 1
    tree.root()
    after = tree.statistics()
    assert after.segments_rehashed_count - stats.segments_rehashed_count == 1
    assert after.nodes_rehashed_count - stats.nodes_rehashed_count == 4


@given(st.binary(max_size=80), shapes)
def test_any_bytes_parse_to_a_summary_or_none(data: bytes, config: Any) -> None:
    children = parse_summary(data, config)
    if children is not None:
        assert all(0 <= c < config.width for c in children)
        assert all(len(v) == NODE_HASH_BYTES for v in children.values())


def test_config_bounds() -> None:
    assert MerkleConfig().segment_count == 65_536
    assert MerkleConfig(width=1024, levels=2).segment_count == 1 << 20
    with pytest.raises(ValueError, match="width"):
        MerkleConfig(width=1)
    with pytest.raises(ValueError, match="levels"):
        MerkleConfig(levels=0)
    with pytest.raises(ValueError, match="exceed"):
        MerkleConfig(width=1024, levels=3)
