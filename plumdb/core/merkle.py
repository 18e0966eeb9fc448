"""A Merkle hash tree over one PlumDB partition's keys, updated incrementally.

After Riak's ``hashtree`` (used by plum_db for active anti-entropy), built here
in memory from the partition's objects and kept up to date on every write.

Theory of operation
-------------------
The tree has ``levels + 1`` levels of nodes. Level ``levels`` holds
``width ** levels`` *segments* (leaves); each inner node at level ``l`` has
``width`` children at level ``l + 1``; level 0 is the root. A key (an encoded
full key, bytes) lives in segment ``BLAKE2b(key) mod segment_count``, with
its object's hash (:func:`plumdb.core.object.object_hash`).

* A segment's hash covers its ``(key, object hash)`` pairs in key order.
* An inner node's *summary* (:meth:`MerkleTree.children`) is a bitmap of
  its non-empty children (``ceil(width / 8)`` bytes, child ``i`` is bit
  ``0x80 >> (i % 8)`` of byte ``i // 8``) followed by their hashes in index
  order; the node's hash is the hash of its summary. So a peer that receives a
  summary can compare children directly, and the node hash follows from it.
* An empty node (no key below it) has no hash of its own: it is absent from
  its parent's bitmap, and reads as :data:`EMPTY_HASH`. The tree is sparse:
  memory grows with the number of keys, not with ``width ** levels``.

Updates are lazy: :meth:`MerkleTree.insert` and :meth:`MerkleTree.delete`
change one segment and mark it dirty; the first query after (``root``,
``node_hash``, ``children``) rehashes the dirty segments and their ancestors
only, in index order. Insert and delete cost one BLAKE2b of the key; a
refresh costs ``O(dirty segments x levels x width)``.

Shape and size: with the default ``width=16, levels=4`` (65,536 segments), a
partition of a million keys holds ~16 keys per segment, and tracking down one
differing key costs about ``levels x (2 + 16 x 8)`` bytes of summaries
(docs/plumdb.md has measured figures). Riak's ``width=1024, levels=2``
(a million segments) suits larger stores at ~8 KiB per differing branch.
Both peers of an exchange must use the same shape.

Invariants
----------
* ``_hashes[levels]`` holds a hash exactly for the non-empty, non-dirty
  segments; after a refresh every level holds hashes exactly for the
  non-empty nodes.
* Iteration is over sorted indices, never over sets.
"""

from __future__ import annotations

import hashlib
from typing import Final, final

import attrs

from plumdb.core.object import HASH_BYTES

__all__ = [
    "EMPTY_HASH",
    "NODE_HASH_BYTES",
    "SEGMENT_COUNT_MAX",
    "MerkleConfig",
    "MerkleStatistics",
    "MerkleTree",
    "parse_summary",
]

NODE_HASH_BYTES: Final = 8
"""Bytes of a node (segment, inner or root) hash: BLAKE2b-64. A collision could
only hide a difference between two particular subtrees (chance 2**-64 per
comparison) until either changes again; halving the summaries halves the
exchange traffic. Object hashes inside segments keep :data:`HASH_BYTES`."""
EMPTY_HASH: Final = bytes(NODE_HASH_BYTES)
"""The hash of an empty node (no key below it), root of an empty tree included."""
SEGMENT_COUNT_MAX: Final = 1 << 24
"""``width ** levels`` at most: 16M segments, 16 times Riak's default million."""
_WIDTH_MAX: Final = 1024
_LEVELS_MAX: Final = 8


@final
@attrs.frozen(kw_only=True)
class MerkleConfig:
    """The shape of a partition's tree; every node of a cluster uses the same.

    Attributes:
        width: children per inner node, 2..1024. 16 keeps a summary at 130
            bytes, so a small difference in a large store costs a few KiB
            (Riak uses 1024 with 2 levels).
        levels: inner levels above the segments, 1..8. ``width ** levels``
            is the number of segments (at most :data:`SEGMENT_COUNT_MAX`);
            aim for a few keys per segment.
    """

    width: int = 16
    levels: int = 4

    def __attrs_post_init__(self) -> None:
        if type(self.width) is not int or not 2 <= self.width <= _WIDTH_MAX:
            raise ValueError(f"width must be an int in 2..{_WIDTH_MAX}")
        if type(self.levels) is not int or not 1 <= self.levels <= _LEVELS_MAX:
            raise ValueError(f"levels must be an int in 1..{_LEVELS_MAX}")
        if self.width**self.levels > SEGMENT_COUNT_MAX:
            raise ValueError(f"width ** levels must not exceed {SEGMENT_COUNT_MAX}")

    @property
    def segment_count(self) -> int:
        """Leaves of the tree: ``width ** levels``."""
        return int(self.width**self.levels)

    @property
    def bitmap_bytes(self) -> int:
        """Bytes of the bitmap that opens a summary."""
        return (self.width + 7) // 8


@final
@attrs.frozen(kw_only=True)
class MerkleStatistics:
    """Sizes and work done since the tree was built."""

    key_count: int
    segment_count: int
    dirty_count: int
    segments_rehashed_count: int
    nodes_rehashed_count: int


def parse_summary(summary: bytes, config: MerkleConfig) -> dict[int, bytes] | None:
    """The ``{child index: hash}`` of a summary, or ``None`` if malformed.

    Used on a peer's summaries, so it never raises on bad input.
    """
    if type(summary) is not bytes:
        return None
    bitmap_bytes = config.bitmap_bytes
    if len(summary) < bitmap_bytes:
        return None
    bitmap = summary[:bitmap_bytes]
    children: dict[int, bytes] = {}
    at = bitmap_bytes
    for index in range(config.width):
        if bitmap[index >> 3] & (0x80 >> (index & 7)):
            children[index] = summary[at : at + NODE_HASH_BYTES]
            at += NODE_HASH_BYTES
    # Bits past the width must be clear, and the hashes must fill the rest.
    for index in range(config.width, bitmap_bytes * 8):
        if bitmap[index >> 3] & (0x80 >> (index & 7)):
            return None
    if at != len(summary):
        return None
    return children


def _hash(data: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=NODE_HASH_BYTES, person=person).digest()


@final
class MerkleTree:
    """The hash tree of one partition: ``key -> object hash``, hashed by segment.

    Args:
        config: the tree's shape.

    Keys are encoded full keys (bytes); object hashes are :data:`HASH_BYTES`
    long, node hashes :data:`NODE_HASH_BYTES`.
    Queries are pure apart from the lazy refresh; nothing here does I/O.
    """

    def __init__(self, config: MerkleConfig | None = None) -> None:
        self._config = config if config is not None else MerkleConfig()
        self._segment_count = self._config.segment_count
        # Non-empty segments only: segment index -> {key: object hash}.
        self._segments: dict[int, dict[bytes, bytes]] = {}
        # _hashes[level][index] for non-empty nodes (see the invariants).
        self._hashes: list[dict[int, bytes]] = [
            {} for _ in range(self._config.levels + 1)
        ]
        # Segments changed since the last refresh.
        self._dirty: set[int] = set()
        self._key_count = 0
        self._segments_rehashed = 0
        self._nodes_rehashed = 0

    @property
    def config(self) -> MerkleConfig:
        """The tree's shape."""
        return self._config

    def __len__(self) -> int:
        return self._key_count

    def segment_of(self, key: bytes) -> int:
        """The segment *key* belongs to (stable across processes and nodes)."""
        digest = hashlib.blake2b(key, digest_size=8, person=b"plumdb.segment").digest()
        return int.from_bytes(digest, "big") % self._segment_count

    # Updates.

    def insert(self, key: bytes, object_hash: bytes) -> None:
        """Set *key*'s object hash (insert or replace)."""
        assert type(key) is bytes
        assert len(object_hash) == HASH_BYTES
        index = self.segment_of(key)
        segment = self._segments.get(index)
        if segment is None:
            segment = self._segments[index] = {}
        if segment.get(key) == object_hash:
            return
        if key not in segment:
            self._key_count += 1
        segment[key] = object_hash
        self._dirty.add(index)

    def delete(self, key: bytes) -> None:
        """Forget *key* (nothing happens if it is absent)."""
        index = self.segment_of(key)
        segment = self._segments.get(index)
        if segment is None or key not in segment:
            return
        del segment[key]
        self._key_count -= 1
        if not segment:
            del self._segments[index]
        self._dirty.add(index)

    # Queries.

    def get(self, key: bytes) -> bytes | None:
        """*key*'s object hash, or ``None``."""
        segment = self._segments.get(self.segment_of(key))
        return segment.get(key) if segment is not None else None

    def root(self) -> bytes:
        """The root hash (:data:`EMPTY_HASH` for an empty tree)."""
        return self.node_hash(0, 0)

    def node_hash(self, level: int, index: int) -> bytes:
        """The hash of node *index* at *level* (``levels`` is the segment level)."""
        self._check_node(level, index)
        self._refresh()
        return self._hashes[level].get(index, EMPTY_HASH)

    def children(self, level: int, index: int) -> bytes:
        """The summary of inner node *index* at *level* < ``levels``."""
        self._check_node(level, index)
        assert level < self._config.levels, "segments have no children"
        self._refresh()
        return self._summary(level, index)

    def segment(self, index: int) -> tuple[tuple[bytes, bytes], ...]:
        """Segment *index*'s ``(key, object hash)`` pairs in key order."""
        self._check_node(self._config.levels, index)
        segment = self._segments.get(index)
        return tuple(sorted(segment.items())) if segment else ()

    def keys_under(self, level: int, index: int) -> list[bytes]:
        """Every key below node *index* at *level*, sorted."""
        self._check_node(level, index)
        span = self._config.width ** (self._config.levels - level)
        low, high = index * span, (index + 1) * span
        keys: list[bytes] = []
        if span >= len(self._segments):
            for segment_index, segment in self._segments.items():
                if low <= segment_index < high:
                    keys.extend(segment)
        else:
            for segment_index in range(low, high):
                keys.extend(self._segments.get(segment_index, ()))
        keys.sort()
        return keys

    def statistics(self) -> MerkleStatistics:
        """Sizes and rehash counts (a snapshot)."""
        return MerkleStatistics(
            key_count=self._key_count,
            segment_count=len(self._segments),
            dirty_count=len(self._dirty),
            segments_rehashed_count=self._segments_rehashed,
            nodes_rehashed_count=self._nodes_rehashed,
        )

    # Internals.

    def _check_node(self, level: int, index: int) -> None:
        assert 0 <= level <= self._config.levels, f"no level {level}"
        assert 0 <= index < self._config.width**level, f"no node {index} at {level}"

    def _summary(self, level: int, index: int) -> bytes:
        """Bitmap and hashes of the non-empty children (hashes must be fresh)."""
        width = self._config.width
        below = self._hashes[level + 1]
        bitmap = bytearray(self._config.bitmap_bytes)
        hashes: list[bytes] = []
        first = index * width
        for child in range(width):
            child_hash = below.get(first + child)
            if child_hash is not None:
                bitmap[child >> 3] |= 0x80 >> (child & 7)
                hashes.append(child_hash)
        return bytes(bitmap) + b"".join(hashes)

    def _refresh(self) -> None:
        """Rehash dirty segments and their ancestors, bottom up, in index order."""
        if not self._dirty:
            return
        width = self._config.width
        levels = self._config.levels
        dirty = sorted(self._dirty)
        self._dirty.clear()
        leaf_hashes = self._hashes[levels]
        parents: list[int] = []
        for index in dirty:
            segment = self._segments.get(index)
            if segment:
                data = b"".join(
                    len(key).to_bytes(2, "big") + key + object_hash
                    for key, object_hash in sorted(segment.items())
                )
                leaf_hashes[index] = _hash(data, b"plumdb.segment")
            else:
                leaf_hashes.pop(index, None)
            self._segments_rehashed += 1
            parent = index // width
            if not parents or parents[-1] != parent:
                parents.append(parent)
        for level in range(levels - 1, -1, -1):
            hashes = self._hashes[level]
            above: list[int] = []
            for index in parents:
                summary = self._summary(level, index)
                if any(summary[: self._config.bitmap_bytes]):
                    hashes[index] = _hash(summary, b"plumdb.node")
                else:
                    hashes.pop(index, None)
                self._nodes_rehashed += 1
                parent = index // width
                if not above or above[-1] != parent:
                    above.append(parent)
            parents = above
