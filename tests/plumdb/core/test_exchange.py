"""Goal: an exchange finds exactly the keys where two trees differ, with traffic
that grows with the difference and not with the store, and a peer that breaks
the protocol fails the exchange cleanly.

Method: a harness (h11's ``ConnectionPair`` idea) passes requests from an
:class:`AntiEntropyExchange` to :func:`respond` on another tree and replies
back, in an order hypothesis picks, and sums the CBOR size of every message.
Properties: the result equals the set difference of the two trees' contents,
for any delivery order; in-flight requests never exceed the bound. A 100,000-key
store with a few differing keys is measured. Malformed, unexpected and refused
replies raise :class:`ExchangeError`.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumdb.core.exchange import (
    AntiEntropyExchange,
    ExchangeConfig,
    ExchangeRefused,
    ExchangeResult,
    NodesReply,
    NodesRequest,
    RootReply,
    RootRequest,
    SegmentsReply,
    SegmentsRequest,
    respond,
)
from plumdb.core.merkle import MerkleConfig, MerkleTree
from plumdb.core.object import HASH_BYTES
from plumdb.errors import ExchangeError

SMALL = MerkleConfig(width=4, levels=2)


def h(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "big"), digest_size=HASH_BYTES).digest()


def wire_size(message: Any) -> int:
    """The CBOR bytes of a message as ``[type name, fields...]``."""
    return len(cbor2.dumps([type(message).__name__, *attrs.astuple(message)]))


@attrs.define
class Run:
    result: ExchangeResult
    bytes: int
    messages: int
    round_trips: int


def run(
    local: MerkleTree,
    remote: MerkleTree,
    *,
    config: ExchangeConfig | None = None,
    rng: random.Random | None = None,
) -> Run:
    exchange = AntiEntropyExchange(local, partition=0, partition_count=1, config=config)
    in_flight = list(exchange.start())
    total = messages = rounds = 0
    bound = exchange._config.requests_in_flight_max
    while in_flight:
        rounds += 1
        index = rng.randrange(len(in_flight)) if rng else 0
        request = in_flight.pop(index)
        reply = respond(remote, request, partition_count=1)
        total += wire_size(request) + wire_size(reply)
        messages += 2
        in_flight.extend(exchange.on_reply(reply))
        assert len(in_flight) <= bound
    assert exchange.done
    return Run(exchange.result(), total, messages, rounds)


def model(local: dict[bytes, bytes], remote: dict[bytes, bytes]) -> ExchangeResult:
    return ExchangeResult(
        only_local=tuple(sorted(local.keys() - remote.keys())),
        only_remote=tuple(sorted(remote.keys() - local.keys())),
        different=tuple(
            sorted(k for k in local.keys() & remote.keys() if local[k] != remote[k])
        ),
        truncated=False,
    )


def tree_of(contents: dict[bytes, bytes], config: MerkleConfig = SMALL) -> MerkleTree:
    tree = MerkleTree(config)
    for key, value in contents.items():
        tree.insert(key, value)
    return tree


contents = st.dictionaries(
    st.binary(min_size=1, max_size=3), st.integers(0, 2).map(h), max_size=30
)


@given(contents, contents, st.randoms(use_true_random=False), st.integers(1, 3))
def test_finds_exactly_the_differences(
    local: dict[bytes, bytes],
    remote: dict[bytes, bytes],
    rng: random.Random,
    batch: int,
) -> None:
    config = ExchangeConfig(
        indices_per_request_max=batch,
        segments_per_request_max=batch,
        requests_in_flight_max=batch,
    )
    outcome = run(tree_of(local), tree_of(remote), config=config, rng=rng)
    assert outcome.result == model(local, remote)


def test_equal_trees_cost_one_round_trip() -> None:
    data = {b"k%d" % n: h(n) for n in range(100)}
    outcome = run(tree_of(data), tree_of(data))
    assert outcome.result.count == 0
    assert outcome.round_trips == 1


def test_an_empty_peer_needs_no_descent() -> None:
    data = {b"k%d" % n: h(n) for n in range(50)}
    outcome = run(tree_of(data), tree_of({}))
    assert outcome.result.only_local == tuple(sorted(data))
    assert outcome.round_trips == 1


def test_truncates_at_differences_max() -> None:
    local = tree_of({b"k%d" % n: h(n) for n in range(40)})
    outcome = run(local, tree_of({}), config=ExchangeConfig(differences_max=7))
    assert outcome.result.truncated
    assert outcome.result.count == 7
    remote = tree_of({b"k%d" % n: h(n + 1) for n in range(40)})
    outcome = run(local, remote, config=ExchangeConfig(differences_max=7))
    assert outcome.result.truncated
    assert 7 <= outcome.result.count < 40


def test_traffic_scales_with_the_difference_not_the_store() -> None:
    """100,000 keys, default shape (16 x 4 levels): report bytes per difference."""
    store = {b"device/%06d" % n: h(n) for n in range(100_000)}
    base = tree_of(store, MerkleConfig())
    other = tree_of(store, MerkleConfig())
    figures = {}
    changed = 0
    for differing in (0, 1, 10, 100):
        # Change more keys of the same copy: 0, then 1, 10 and 100 in all.
        for n in range(changed, differing):
            other.insert(b"device/%06d" % (n * 997), h(1_000_000 + n))
        changed = differing
        outcome = run(base, other)
        assert outcome.result.count == differing
        assert len(outcome.result.different) == differing
        figures[differing] = outcome.bytes
    # Measured (docs/plumdb.md): {0: 40, 1: 725, 10: 4431, 100: 32394} bytes.
    assert figures[0] < 200
    assert figures[10] < 5 * 1024  # a few KiB
    # Per-key cost falls as differences share the upper levels.
    assert figures[100] < 10 * figures[10]


# A peer that breaks the protocol.


def started() -> tuple[AntiEntropyExchange, RootRequest]:
    tree = tree_of({b"a": h(1), b"b": h(2)})
    exchange = AntiEntropyExchange(tree, partition=0, partition_count=1)
    (request,) = exchange.start()
    assert isinstance(request, RootRequest)
    return exchange, request


def test_unexpected_replies_fail_the_exchange() -> None:
    exchange, request = started()
    with pytest.raises(ExchangeError, match="unexpected"):
        exchange.on_reply(RootReply(request_id=99, partition=0, root=b"\x01" * 8))
    assert exchange.failed
    with pytest.raises(ExchangeError):
        exchange.on_reply(
            RootReply(request_id=request.request_id, partition=0, root=b"\x01" * 8)
        )
    exchange, request = started()
    with pytest.raises(ExchangeError, match="does not answer"):
        exchange.on_reply(
            NodesReply(request_id=request.request_id, partition=0, nodes=())
        )
    exchange, request = started()
    with pytest.raises(ExchangeError, match="another partition"):
        exchange.on_reply(
            RootReply(request_id=request.request_id, partition=1, root=b"\x01" * 8)
        )
    exchange, _ = started()
    with pytest.raises(ExchangeError):
        exchange.on_reply("garbage")


def test_malformed_summaries_and_segments_fail_the_exchange() -> None:
    exchange, request = started()
    (nodes,) = exchange.on_reply(
        RootReply(request_id=request.request_id, partition=0, root=b"\x01" * 8)
    )
    assert isinstance(nodes, NodesRequest)
    with pytest.raises(ExchangeError, match="summary"):
        exchange.on_reply(
            NodesReply(request_id=nodes.request_id, partition=0, nodes=(b"\x01",))
        )

    local = tree_of({b"a": h(1)}, MerkleConfig(width=2, levels=1))
    remote = tree_of({b"a": h(2)}, MerkleConfig(width=2, levels=1))
    exchange = AntiEntropyExchange(local, partition=0, partition_count=1)
    (root,) = exchange.start()
    (nodes,) = exchange.on_reply(respond(remote, root, partition_count=1))
    (segments,) = exchange.on_reply(respond(remote, nodes, partition_count=1))
    assert isinstance(segments, SegmentsRequest)
    wrong_key = next(
        k
        for k in (b"x%d" % n for n in range(100))
        if local.segment_of(k) != segments.indices[0]
    )
    with pytest.raises(ExchangeError, match="wrong segment"):
        exchange.on_reply(
            SegmentsReply(
                request_id=segments.request_id,
                partition=0,
                segments=(((wrong_key, h(1)),),),
            )
        )


def test_refusals() -> None:
    tree = tree_of({})
    wrong_shape = RootRequest(
        request_id=0, partition=0, partition_count=1, width=16, levels=4
    )
    refused = respond(tree, wrong_shape, partition_count=1)
    assert isinstance(refused, ExchangeRefused)
    assert "shape" in refused.reason
    assert isinstance(
        respond(
            tree,
            NodesRequest(request_id=1, partition=0, level=5, indices=(0,)),
            partition_count=1,
        ),
        ExchangeRefused,
    )
    assert isinstance(
        respond(
            tree,
            SegmentsRequest(request_id=1, partition=0, indices=(16,)),
            partition_count=1,
        ),
        ExchangeRefused,
    )
    assert isinstance(
        respond(
            tree,
            SegmentsRequest(request_id=1, partition=3, indices=(0,)),
            partition_count=1,
        ),
        ExchangeRefused,
    )
    with pytest.raises(ExchangeError):
        respond(tree, "hello", partition_count=1)
    exchange, request = started()
    with pytest.raises(ExchangeError, match="refused"):
        exchange.on_reply(
            ExchangeRefused(request_id=request.request_id, partition=0, reason="no")
        )


def test_messages_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="indices"):
        NodesRequest(request_id=0, partition=0, level=0, indices=())
    with pytest.raises(ValueError, match="indices"):
        SegmentsRequest(request_id=0, partition=0, indices=tuple(range(2000)))
    with pytest.raises(ValueError, match="hash"):
        RootReply(request_id=0, partition=0, root=b"short")
    with pytest.raises(ValueError, match="segments"):
        SegmentsReply(request_id=0, partition=0, segments=(((b"k", b"short"),),))
    with pytest.raises(ValueError, match="request_id"):
        RootRequest(request_id=-1, partition=0, partition_count=1, width=4, levels=2)
