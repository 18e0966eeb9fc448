"""Goal: protocol messages survive the trip to CBOR and back, and nothing a peer
sends makes the codec raise anything but ``MessageRefused``.

Method: round trips of every message of every protocol through ``cbor2``
(tuples come back as lists, ids must be hashable again); hypothesis feeds the
decoder arbitrary plain data and checks it either builds a valid message or
refuses.
"""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core import failure_detector, hyparview, monitors, plumtree
from runtime.core.codec import MessageCodec
from runtime.core.spec import ChannelSpec, NodeSpec
from runtime.errors import MessageRefused

SPEC = NodeSpec(
    name="a@127.0.0.1",
    addresses=[("127.0.0.1", 9000)],
    channels=[ChannelSpec(name="bulk", parallelism=4, monotonic=True)],
    role="server",
)
OTHER = NodeSpec(name="b@127.0.0.1", addresses=[("::1", 1)])

EXAMPLES: list[tuple[tuple[type, ...], object]] = [
    (hyparview.MESSAGE_TYPES, hyparview.Join(spec=SPEC)),
    (hyparview.MESSAGE_TYPES, hyparview.ForwardJoin(new_node=SPEC, ttl=6)),
    (
        hyparview.MESSAGE_TYPES,
        hyparview.Neighbour(spec=OTHER, priority=hyparview.Priority.HIGH),
    ),
    (hyparview.MESSAGE_TYPES, hyparview.NeighbourReply(spec=SPEC, accepted=False)),
    (hyparview.MESSAGE_TYPES, hyparview.DisconnectNotice(leaving=True)),
    (hyparview.MESSAGE_TYPES, hyparview.Shuffle(origin=SPEC, nodes=(OTHER,), ttl=2)),
    (hyparview.MESSAGE_TYPES, hyparview.ShuffleReply(nodes=())),
    (
        plumtree.MESSAGE_TYPES,
        plumtree.Gossip(message_id=("k", 1), payload={"v": [1, 2]}, round=3),
    ),
    (plumtree.MESSAGE_TYPES, plumtree.IHave(entries=((("k", 1), 2), ("x", 0)))),
    (plumtree.MESSAGE_TYPES, plumtree.Graft(message_id=None, round=0)),
    (plumtree.MESSAGE_TYPES, plumtree.Prune()),
    (failure_detector.MESSAGE_TYPES, failure_detector.Heartbeat(sequence=7)),
    (
        monitors.MESSAGE_TYPES,
        monitors.MonitorRequest(ref="r", watcher="partisan:pid:a@h:1.2", target="t"),
    ),
    (monitors.MESSAGE_TYPES, monitors.DownNotice(ref="r", reason={"error": "X"})),
]


def _over_the_wire(codec: MessageCodec, message: object) -> object:
    return codec.decode(cbor2.loads(cbor2.dumps(codec.encode(message))))


@pytest.mark.parametrize(("types", "message"), EXAMPLES)
def test_every_message_round_trips(types: tuple[type, ...], message: object) -> None:
    codec = MessageCodec(types)
    assert _over_the_wire(codec, message) == message


def test_decoded_ids_are_hashable_again() -> None:
    codec = MessageCodec(plumtree.MESSAGE_TYPES)
    decoded = _over_the_wire(
        codec, plumtree.IHave(entries=(((("a", 1), ("b", ())), 1),))
    )
    assert isinstance(decoded, plumtree.IHave)
    hash(decoded.entries)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        ["0"],
        [99],
        [-1],
        [0],  # Join without its spec
        [0, "not a spec"],
        [0, ["a@h", [["h", "port"]], [], "peer"]],
        [0, ["a@h", [], [], "emperor"]],  # no such role
        [0, ["bad name", [], [], "peer"]],
        [0, ["a@h", [], [["c", 0, False, 1]], "peer"]],  # parallelism 0
        [1, ["a@h", [], [], "peer"], True],  # ttl is a bool, not an int
        [2, ["a@h", [], [], "peer"], "urgent"],  # no such priority
    ],
)
def test_malformed_messages_are_refused(data: Any) -> None:
    codec = MessageCodec(hyparview.MESSAGE_TYPES)
    with pytest.raises(MessageRefused):
        codec.decode(data)


def test_encoding_a_foreign_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        MessageCodec(hyparview.MESSAGE_TYPES).encode(plumtree.Prune())


def test_a_field_type_the_codec_cannot_carry_fails_at_construction() -> None:
    import attrs

    @attrs.frozen
    class Bad:
        values: list[int]

    with pytest.raises(TypeError):
        MessageCodec((Bad,))


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(data=plain)
def test_any_plain_data_decodes_or_is_refused(data: Any) -> None:
    for types in (
        hyparview.MESSAGE_TYPES,
        plumtree.MESSAGE_TYPES,
        monitors.MESSAGE_TYPES,
    ):
        codec = MessageCodec(types)
        try:
            message = codec.decode(data)
        except MessageRefused:
            continue
        assert type(message) in types


@given(index=st.integers(0, 6), fields=st.lists(plain, max_size=4))
def test_messages_with_random_fields_decode_or_are_refused(
    index: int, fields: list[Any]
) -> None:
    codec = MessageCodec(hyparview.MESSAGE_TYPES)
    with contextlib.suppress(MessageRefused):
        codec.decode([index, *fields])
