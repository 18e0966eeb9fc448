"""Goal: the codec carries plain data and refs, and refuses everything else.

Method: hypothesis round-trips nested plain data with pids, refs and names anywhere
in it, in both decoder modes (objects and ``refs_as_uri``). Tables check that every
semantic tag cbor2 would turn into an object (the list is re-derived by probing
cbor2 itself) is refused as a message with :class:`MessageRefused`, that bignums
still decode, that unknown tags and malformed contents of our own tags are refused
the same way, that input which is not CBOR, or nests too deep, raises
:class:`ProtocolError`, and that a decoder is reusable after either. Fuzz
properties feed arbitrary bytes and arbitrary tagged CBOR to the decoder: the only
outcomes allowed are a value or a :class:`ProtocolError` (DESIGN.md, Wire; STYLE.md
6.4).
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import fractions
import ipaddress
import math
import re
import uuid
from typing import Any

import cbor2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runtime import wire
from runtime.errors import MessageRefused, ProtocolError
from runtime.ref import Name, Pid, Ref
from runtime.wire import (
    DECODE_DEPTH_MAX,
    TAG_NAME,
    TAG_PID,
    TAG_REF,
    Decoder,
    Kind,
    encode,
    encode_envelope,
    encode_frame,
    frame_header,
)

OUR_TAGS = (TAG_PID, TAG_REF, TAG_NAME)
BIGNUM_TAGS = (2, 3)
SEMANTIC_TAGS = frozenset(wire._CBOR2_SEMANTIC_TAGS)

# --- Strategies -------------------------------------------------------------

_NAME_PART = st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True)
_HOSTS = st.one_of(
    st.from_regex(
        r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z]{1,6}){0,2}", fullmatch=True
    ),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
)
NODES = st.builds(lambda name, host: f"{name}@{host}", _NAME_PART, _HOSTS)
_COUNTERS = st.integers(min_value=0, max_value=2**80)
PIDS = st.builds(Pid, node=NODES, creation=_COUNTERS, id=_COUNTERS)
REFS = st.builds(Ref, node=NODES, creation=_COUNTERS, id=_COUNTERS)
NAMES = st.builds(Name, node=NODES, name=st.text(min_size=1, max_size=20))
REFERENCES = st.one_of(PIDS, REFS, NAMES)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
_KEYS = st.text(max_size=10) | st.binary(max_size=10) | st.integers()
# Plain data as messages hold it: lists (tuples come back as lists) and maps with
# text, bytes or int keys, refs nested anywhere.
MESSAGES = st.recursive(
    _SCALARS | REFERENCES,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(_KEYS, children, max_size=5)
    ),
    max_leaves=30,
)


def _uris(value: Any) -> Any:
    """*value* with every reference replaced by its URI string."""
    if isinstance(value, Pid | Ref | Name):
        return value.uri
    if isinstance(value, list):
        return [_uris(item) for item in value]
    if isinstance(value, dict):
        return {key: _uris(item) for key, item in value.items()}
    return value


def _tagged(tag: int, value: object) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, value))


def _nested_lists(depth: int, leaf: object = 0) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- Round trips ------------------------------------------------------------


@given(message=MESSAGES)
def test_decode_returns_encoded_value_for_any_plain_message(message: Any) -> None:
    assert Decoder().decode(encode(message)) == message


@given(message=MESSAGES)
def test_decode_returns_uri_strings_when_refs_as_uri(message: Any) -> None:
    assert Decoder(refs_as_uri=True).decode(encode(message)) == _uris(message)


@given(ref=REFERENCES)
def test_decode_returns_reference_of_same_type_for_any_ref(
    ref: Pid | Ref | Name,
) -> None:
    decoded = Decoder().decode(encode({"deep": [[{"x": ref}]]}))["deep"][0][0]["x"]
    assert type(decoded) is type(ref)
    assert decoded == ref
    assert decoded.uri == ref.uri


@pytest.mark.parametrize(
    ("ref", "tag"),
    [
        (Pid(node="a@host", creation=1, id=2), TAG_PID),
        (Ref(node="a@host", creation=1, id=2), TAG_REF),
        (Name(node="a@[::1]", name="x:y"), TAG_NAME),
    ],
)
def test_encode_writes_ref_as_tag_holding_its_uri(
    ref: Pid | Ref | Name, tag: int
) -> None:
    raw = cbor2.loads(encode(ref))
    assert raw == cbor2.CBORTag(tag, ref.uri)


def test_tag_numbers_are_the_recorded_wire_constants() -> None:
    assert (TAG_PID, TAG_REF, TAG_NAME) == (40401, 40402, 40403)


def test_kind_values_are_the_recorded_wire_constants() -> None:
    assert {kind.name: kind.value for kind in Kind} == {
        "SEND": 0,
        "SEND_NAME": 1,
        "EXIT": 2,
        "CONTROL": 3,
    }


def test_encode_writes_tuples_as_arrays_when_given() -> None:
    assert Decoder().decode(encode((1, ("a", b"b")))) == [1, ["a", b"b"]]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -0.0])
def test_decode_returns_special_floats_when_encoded(value: float) -> None:
    decoded = Decoder().decode(encode(value))
    assert isinstance(decoded, float)
    if math.isnan(value):
        assert math.isnan(decoded)
    else:
        assert decoded == value
        assert math.copysign(1, decoded) == math.copysign(1, value)


@pytest.mark.parametrize("body_type", [bytes, bytearray, memoryview])
def test_decode_accepts_any_buffer_type_when_given(body_type: type) -> None:
    body = encode([1, Pid(node="a@host", creation=1, id=2)])
    assert Decoder().decode(body_type(body)) == [
        1,
        Pid(node="a@host", creation=1, id=2),
    ]


def test_decoder_records_its_mode_when_built() -> None:
    assert Decoder().refs_as_uri is False
    assert Decoder(refs_as_uri=True).refs_as_uri is True


# --- Bignums ----------------------------------------------------------------


@given(value=st.integers(min_value=2**64) | st.integers(max_value=-(2**64) - 1))
def test_decode_returns_bignums_for_any_large_int(value: int) -> None:
    body = encode(value)
    assert body[0] in (0xC2, 0xC3)  # major type 6, tag 2 or 3
    assert Decoder().decode(body) == value
    assert Decoder(refs_as_uri=True).decode(body) == value


@pytest.mark.parametrize(
    ("tag", "content", "expected"),
    [(2, b"\x01\x00", 256), (3, b"\x01\x00", -257), (2, b"", 0), (3, b"", -1)],
)
def test_decode_returns_int_for_hand_made_bignum_tags(
    tag: int, content: bytes, expected: int
) -> None:
    assert Decoder().decode(_tagged(tag, content)) == expected


@pytest.mark.parametrize("tag", BIGNUM_TAGS)
@pytest.mark.parametrize("content", ["01", 1, [1], None])
def test_decode_raises_protocol_error_when_bignum_content_not_bytes(
    tag: int, content: object
) -> None:
    with pytest.raises(ProtocolError):
        Decoder().decode(_tagged(tag, content))


# --- Refused tags -----------------------------------------------------------

# For each semantic tag cbor2 knows, a document that plain cbor2.loads would turn
# into an object (or, for tags that need a context, at least tag-decode).
_SEMANTIC_SAMPLES: dict[int, bytes] = {
    0: _tagged(0, "2020-01-01T00:00:00Z"),
    1: _tagged(1, 1577836800),
    4: _tagged(4, [-1, 15]),
    5: _tagged(5, [-1, 3]),
    25: cbor2.dumps([cbor2.CBORTag(256, ["abcdef", cbor2.CBORTag(25, 0)])]),
    28: _tagged(28, ["shared"]),
    29: cbor2.dumps([cbor2.CBORTag(28, ["shared"]), cbor2.CBORTag(29, 0)]),
    30: _tagged(30, [1, 3]),
    35: _tagged(35, "a+b"),
    36: _tagged(36, "Content-Type: text/plain\n\nhello"),
    37: _tagged(37, b"\x12" * 16),
    52: _tagged(52, b"\x0a\x00\x00\x01"),
    54: _tagged(54, b"\x00" * 15 + b"\x01"),
    100: _tagged(100, 18000),
    256: _tagged(256, ["abcdef", "abcdef"]),
    258: _tagged(258, [1, 2]),
    260: _tagged(260, b"\x0a\x00\x00\x01"),
    261: _tagged(261, {b"\x0a\x00\x00\x00": 8}),
    1004: _tagged(1004, "2020-01-01"),
    43000: _tagged(43000, [1.0, 2.0]),
    55799: _tagged(55799, 5),
}


def test_semantic_samples_cover_every_refused_tag() -> None:
    assert set(_SEMANTIC_SAMPLES) == SEMANTIC_TAGS


@pytest.mark.parametrize("tag", sorted(_SEMANTIC_SAMPLES))
def test_semantic_samples_are_objects_for_plain_cbor2(tag: int) -> None:
    # Checks the samples themselves: without our decoder cbor2 accepts each one,
    # so the refusal tested below is our doing, not a malformed sample.
    decoded = cbor2.loads(_SEMANTIC_SAMPLES[tag])
    assert not isinstance(decoded, cbor2.CBORTag)


def test_refusal_list_covers_every_tag_cbor2_decodes_natively() -> None:
    # Probe the installed cbor2: any tag it turns into something other than a bare
    # CBORTag must be on the refusal list (or be a bignum). This caught tag 43000
    # (complex numbers) once, and will catch tags a new cbor2 release adds.
    contents: list[object] = ["x", b"\x0a\x00\x00\x01", [1, 2], [1.0, 2.0], 0]
    native = set()
    for tag in [*range(65_536), 1_000_000, 2**32, 2**63]:
        if tag in OUR_TAGS or tag in BIGNUM_TAGS:
            continue
        for content in contents:
            try:
                decoded = cbor2.loads(cbor2.dumps(cbor2.CBORTag(tag, content)))
            except (cbor2.CBORDecodeError, ValueError, TypeError):
                native.add(tag)
                break
            if not isinstance(decoded, cbor2.CBORTag):
                native.add(tag)
                break
    assert native <= SEMANTIC_TAGS, sorted(native - SEMANTIC_TAGS)


@pytest.mark.parametrize("refs_as_uri", [False, True])
@pytest.mark.parametrize("tag", sorted(SEMANTIC_TAGS))
def test_decode_raises_message_refused_for_cbor2_semantic_tag(
    tag: int, refs_as_uri: bool
) -> None:
    decoder = Decoder(refs_as_uri=refs_as_uri)
    with pytest.raises(MessageRefused):
        decoder.decode(_SEMANTIC_SAMPLES[tag])
    # Nested inside a message the tag is refused just the same.
    with pytest.raises(MessageRefused):
        decoder.decode(encode([1, {"k": cbor2.CBORTag(tag, "x")}]))


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({"a"}),
        uuid.UUID(int=1),
        datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        datetime.date(2020, 1, 1),
        decimal.Decimal("1.5"),
        fractions.Fraction(1, 3),
        re.compile("a+"),
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_network("10.0.0.0/8"),
        1 + 2j,
    ],
    ids=lambda value: type(value).__name__,
)
def test_decode_raises_message_refused_for_objects_cbor2_can_encode(
    value: object,
) -> None:
    # cbor2 itself encodes these as semantic tags; a peer sending them is refused.
    with pytest.raises(MessageRefused):
        Decoder().decode(cbor2.dumps(value))


_UNKNOWN_TAGS = st.integers(min_value=0, max_value=2**64 - 1).filter(
    lambda tag: tag not in (*OUR_TAGS, *BIGNUM_TAGS, *SEMANTIC_TAGS)
)
_CONTENTS: st.SearchStrategy[object] = st.one_of(
    _SCALARS, st.lists(st.integers(), max_size=3), st.just({})
)


@given(tag=_UNKNOWN_TAGS, content=_CONTENTS, refs_as_uri=st.booleans())
@example(tag=6, content="x", refs_as_uri=False)
@example(tag=40400, content="partisan:pid:a@host:1.2", refs_as_uri=False)
@example(tag=40404, content="partisan:pid:a@host:1.2", refs_as_uri=True)
@example(tag=2**64 - 1, content=None, refs_as_uri=False)
def test_decode_raises_message_refused_for_any_unknown_tag(
    tag: int, content: object, refs_as_uri: bool
) -> None:
    with pytest.raises(MessageRefused):
        Decoder(refs_as_uri=refs_as_uri).decode(_tagged(tag, content))


# --- Our tags with bad contents ---------------------------------------------


@pytest.mark.parametrize("refs_as_uri", [False, True])
@pytest.mark.parametrize("tag", OUR_TAGS)
@pytest.mark.parametrize(
    "content",
    [
        1,
        None,
        b"partisan:pid:a@host:1.2",
        ["partisan:pid:a@host:1.2"],
        {"uri": "partisan:pid:a@host:1.2"},
        1.5,
        True,
    ],
)
def test_decode_raises_message_refused_when_our_tag_holds_non_string(
    tag: int, content: object, refs_as_uri: bool
) -> None:
    with pytest.raises(MessageRefused):
        Decoder(refs_as_uri=refs_as_uri).decode(_tagged(tag, content))


@pytest.mark.parametrize("tag", OUR_TAGS)
def test_decode_raises_message_refused_when_our_tag_holds_our_tag(tag: int) -> None:
    inner = cbor2.CBORTag(TAG_PID, "partisan:pid:a@host:1.2")
    with pytest.raises(MessageRefused):
        Decoder().decode(_tagged(tag, inner))


@pytest.mark.parametrize("refs_as_uri", [False, True])
@pytest.mark.parametrize(
    ("tag", "content"),
    [
        (TAG_PID, ""),
        (TAG_PID, "hello"),
        (TAG_PID, "partisan:ref:a@host:1.2"),
        (TAG_PID, "partisan:name:a@host:x"),
        (TAG_PID, "partisan:pid:nodeless:1.2"),
        (TAG_PID, "partisan:pid:a@host:1"),
        (TAG_PID, "partisan:pid:a@host:-1.2"),
        (TAG_REF, ""),
        (TAG_REF, "partisan:pid:a@host:1.2"),
        (TAG_REF, "partisan:ref:a@host:x.y"),
        (TAG_NAME, "partisan:pid:a@host:1.2"),
        (TAG_NAME, "partisan:name:a@host:"),
        (TAG_NAME, "partisan:name:nodeless:x"),
        (TAG_NAME, "partisan:name:a b@host:x"),
    ],
)
def test_decode_raises_message_refused_when_our_tag_holds_malformed_uri(
    tag: int, content: str, refs_as_uri: bool
) -> None:
    with pytest.raises(MessageRefused):
        Decoder(refs_as_uri=refs_as_uri).decode(_tagged(tag, content))


@pytest.mark.parametrize(
    ("tag", "content", "canonical"),
    [
        (TAG_NAME, "partisan:name:a@host:x%3ay", "partisan:name:a@host:x%3Ay"),
        (
            TAG_NAME,
            "partisan:name:a@host:my server",
            "partisan:name:a@host:my%20server",
        ),
        (TAG_PID, "partisan:pid:a@host:01.002", "partisan:pid:a@host:1.2"),
    ],
)
def test_decode_returns_canonical_uri_when_refs_as_uri_and_uri_not_canonical(
    tag: int, content: str, canonical: str
) -> None:
    # User code keys things by URI string, so one ref must have one spelling.
    assert Decoder(refs_as_uri=True).decode(_tagged(tag, content)) == canonical
    assert Decoder().decode(_tagged(tag, content)).uri == canonical


_REF_PARSER_BUG_CASES = [
    (TAG_NAME, "partisan:name:a@host:%ff"),
    (TAG_PID, "partisan:pid:a@host:\u00b2.1"),
    (TAG_REF, "partisan:ref:a@host:1.\u00b2"),
]


@pytest.mark.parametrize(("tag", "content"), _REF_PARSER_BUG_CASES)
def test_decode_raises_protocol_error_when_uri_trips_ref_parser_bug(
    tag: int, content: str
) -> None:
    # ref.py raises plain ValueErrors for these (see test_ref.py); the decoder must
    # still end in a ProtocolError, never let them escape.
    for refs_as_uri in (False, True):
        with pytest.raises(ProtocolError):
            Decoder(refs_as_uri=refs_as_uri).decode(_tagged(tag, content))


@pytest.mark.parametrize(("tag", "content"), _REF_PARSER_BUG_CASES)
def test_decode_raises_message_refused_when_uri_trips_ref_parser_bug(
    tag: int, content: str
) -> None:
    with pytest.raises(MessageRefused):
        Decoder().decode(_tagged(tag, content))


# --- Refusal versus undecodable input -------------------------------------------


def test_decoder_decodes_next_body_when_previous_was_refused() -> None:
    decoder = Decoder()
    with pytest.raises(MessageRefused):
        decoder.decode(encode([1, cbor2.CBORTag(9999, "x")]))
    assert decoder.decode(encode([2])) == [2]


def test_decoder_decodes_next_body_when_refused_tag_preceded_garbage() -> None:
    # The hook records a refusal, then the body turns out not to be CBOR: the
    # refusal must not leak into the next, valid, body.
    decoder = Decoder()
    with pytest.raises(ProtocolError):
        decoder.decode(b"\x82" + _tagged(9999, "x"))
    assert decoder.decode(encode({"ok": True})) == {"ok": True}
    with pytest.raises(ProtocolError):
        decoder.decode(b"\x82" + _SEMANTIC_SAMPLES[258])
    assert decoder.decode(encode("fine")) == "fine"


def test_decode_names_the_first_refused_tag_when_message_refused() -> None:
    with pytest.raises(MessageRefused, match="258"):
        Decoder().decode(encode([cbor2.CBORTag(258, [1])]))


def test_message_refused_is_a_protocol_error() -> None:
    assert issubclass(MessageRefused, ProtocolError)
    assert wire.MessageRefused is MessageRefused


# --- Depth ------------------------------------------------------------------


@pytest.mark.parametrize("refs_as_uri", [False, True])
def test_decode_accepts_nesting_up_to_depth_max(refs_as_uri: bool) -> None:
    decoder = Decoder(refs_as_uri=refs_as_uri)
    value = _nested_lists(DECODE_DEPTH_MAX)
    assert decoder.decode(encode(value)) == value
    mapping: object = 0
    for _ in range(DECODE_DEPTH_MAX):
        mapping = {"k": mapping}
    assert decoder.decode(encode(mapping)) == mapping


@pytest.mark.parametrize("refs_as_uri", [False, True])
@pytest.mark.parametrize("depth", [DECODE_DEPTH_MAX + 1, DECODE_DEPTH_MAX + 2, 5000])
def test_decode_raises_protocol_error_when_nesting_exceeds_depth_max(
    depth: int, refs_as_uri: bool
) -> None:
    decoder = Decoder(refs_as_uri=refs_as_uri)
    with pytest.raises(ProtocolError):
        decoder.decode(encode(_nested_lists(depth)))
    mapping: object = 0
    for _ in range(depth):
        mapping = {"k": mapping}
    with pytest.raises(ProtocolError):
        decoder.decode(encode(mapping))


@pytest.mark.parametrize("depth", [DECODE_DEPTH_MAX + 1, 100_000])
def test_decode_raises_protocol_error_when_hand_made_nesting_is_deep(
    depth: int,
) -> None:
    # Written by hand (array-of-one headers) so no encoder limit can interfere,
    # including a depth that would blow a recursive decoder's stack.
    with pytest.raises(ProtocolError):
        Decoder().decode(b"\x81" * depth + b"\x00")
    with pytest.raises(ProtocolError):
        Decoder().decode(b"\x9f" * depth + b"\x00" + b"\xff" * depth)
    with pytest.raises(ProtocolError):
        Decoder().decode(b"\xd9\x27\x0f" * depth + b"\x00")


def test_decode_refuses_tag_at_depth_max_when_inside_containers() -> None:
    # A tag counts as one level: a pid under DECODE_DEPTH_MAX - 1 lists is fine,
    # under DECODE_DEPTH_MAX lists it is one level too deep.
    pid = Pid(node="a@host", creation=1, id=2)
    assert Decoder().decode(encode(_nested_lists(DECODE_DEPTH_MAX - 1, pid)))
    with pytest.raises(ProtocolError):
        Decoder().decode(encode(_nested_lists(DECODE_DEPTH_MAX, pid)))


# --- Undecodable input --------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff",
        b"\x1c",
        b"\x18",
        b"\x62\xff\xfe",
        b"\x82\x01",
        b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",
        b"\x9b\x7f\xff\xff\xff\xff\xff\xff\xff",
        b"\xbb\x7f\xff\xff\xff\xff\xff\xff\xff",
        b"\x7f\x61\x61",
        b"\x5f\x61\x61\xff",
        b"\xf8\x00",
        b"\xd9\x9d\xd1",
    ],
)
def test_decode_raises_protocol_error_when_body_undecodable(body: bytes) -> None:
    for decoder in (Decoder(), Decoder(refs_as_uri=True), Decoder(strict=True)):
        with pytest.raises(ProtocolError) as info:
            decoder.decode(body)
        # Not CBOR at all closes the connection: it is not a one-message refusal.
        assert not isinstance(info.value, MessageRefused)


# --- Map keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {None: "a"}, {1.5: "a"}, {True: "a"}, {(1, "x"): "a"}, {b"k": 1}],
    ids=["int", "null", "float", "bool", "tuple", "bytes"],
)
def test_decode_returns_hashable_keys_when_not_strict(value: dict[Any, Any]) -> None:
    assert Decoder().decode(encode(value)) == value


def test_decode_returns_pid_key_when_not_strict() -> None:
    pid = Pid(node="a@host", creation=1, id=2)
    assert Decoder().decode(encode({pid: 1})) == {pid: 1}
    assert Decoder(refs_as_uri=True).decode(encode({pid: 1})) == {pid.uri: 1}


@pytest.mark.parametrize(
    "body",
    [
        encode({1: "a"}),
        encode({None: "a"}),
        encode({(1, 2): "a"}),
        bytes([0xA1]) + encode({"a": 1}) + encode(2),
        encode({Pid(node="a@host", creation=1, id=2): 1}),
    ],
    ids=["int", "null", "array", "map", "pid"],
)
def test_decode_raises_protocol_error_for_non_string_keys_when_strict(
    body: bytes,
) -> None:
    with pytest.raises(ProtocolError):
        Decoder(strict=True).decode(body)


def test_decode_returns_string_keys_when_strict() -> None:
    value = {"a": {b"b": [1, {"c": None}]}}
    assert Decoder(strict=True).decode(encode(value)) == value


# --- Documented leniencies --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"\xf7", cbor2.undefined), (b"\xf0", cbor2.CBORSimpleValue(16))],
)
def test_decode_returns_inert_simple_values_when_sent(
    body: bytes, expected: object
) -> None:
    # Documented in Decoder: cbor2's undefined and simple values pass as inert data.
    assert Decoder().decode(body) == expected


@pytest.mark.parametrize("body", [b"\x01\x01", encode([1]) + b"\xff"])
def test_decode_ignores_bytes_after_first_item_when_present(body: bytes) -> None:
    # Documented in Decoder: the frame delimits the body, and checking for
    # trailing bytes would cost a quarter of a decode.
    assert Decoder().decode(body) in (1, [1])


# --- Fuzz -------------------------------------------------------------------------


@given(body=st.binary(max_size=96))
@example(body=b"\xd9\x9d\xd1\x61\x61")
@example(body=b"\xd9\x9d\xd3\x72partisan:name:a@b:%ff")
@example(body=b"\xc2\x41\x01")
@example(body=b"\x82\xd9\x27\x0f\x00")
def test_decode_gives_value_or_protocol_error_for_any_bytes(body: bytes) -> None:
    for decoder in (Decoder(), Decoder(refs_as_uri=True), Decoder(strict=True)):
        with contextlib.suppress(ProtocolError):
            decoder.decode(body)


_FUZZ_TAGS = st.sampled_from(
    [*OUR_TAGS, *BIGNUM_TAGS, *sorted(SEMANTIC_TAGS), 6, 24, 32, 40400, 40404]
)
_FUZZ_LEAVES = st.one_of(
    _SCALARS,
    st.sampled_from(
        [
            "partisan:pid:a@host:1.2",
            "partisan:ref:a@[::1]:0.0",
            "partisan:name:a@host:x%3Ay",
            "partisan:name:a@host:%ff",
            "partisan:pid:a@host:\u00b2.1",
        ]
    ),
)
_TAGGED_DOCUMENTS = st.recursive(
    _FUZZ_LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3), children, max_size=3)
        | st.builds(cbor2.CBORTag, _FUZZ_TAGS, children)
    ),
    max_leaves=12,
)


@given(document=_TAGGED_DOCUMENTS, refs_as_uri=st.booleans())
def test_decode_gives_value_or_protocol_error_for_any_tagged_document(
    document: object, refs_as_uri: bool
) -> None:
    body = cbor2.dumps(document)
    decoder = Decoder(refs_as_uri=refs_as_uri)
    with contextlib.suppress(ProtocolError):
        decoder.decode(body)
    # Whatever happened, the decoder is still usable.
    assert decoder.decode(encode([1])) == [1]


@given(message=MESSAGES, data=st.data())
def test_decode_gives_value_or_protocol_error_for_corrupted_messages(
    message: Any, data: st.DataObject
) -> None:
    body = bytearray(encode(message))
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    body[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(body)))
    with contextlib.suppress(ProtocolError):
        Decoder().decode(bytes(body[:cut]))

        Decoder().decode(bytes(body[:cut]))


# --- Envelopes ----------------------------------------------------------------


@given(
    kind=st.sampled_from(Kind),
    target=st.text(),
    sender=st.none() | st.text(),
    ref=st.none() | st.text(),
    payload=MESSAGES,
)
def test_decode_envelope_returns_fields_for_any_envelope(
    kind: Kind, target: str, sender: str | None, ref: str | None, payload: Any
) -> None:
    frame = encode_envelope(kind, target, sender, ref, payload)
    size = int.from_bytes(frame[:4], "big")
    assert size == len(frame) - 4
    body = frame[4:]
    assert Decoder().decode_envelope(body) == (kind, target, sender, ref, payload)
    assert Decoder(refs_as_uri=True).decode_envelope(body) == (
        kind,
        target,
        sender,
        ref,
        _uris(payload),
    )


def test_encode_envelope_writes_header_fields_as_plain_strings() -> None:
    pid = Pid(node="a@host", creation=1, id=2)
    ref = Ref(node="b@host", creation=3, id=4)
    frame = encode_envelope(Kind.SEND, pid.uri, pid.uri, ref.uri, [pid])
    raw = cbor2.loads(frame[4:])
    assert raw[:4] == [0, pid.uri, pid.uri, ref.uri]
    assert all(type(field) is not cbor2.CBORTag for field in raw[:4])
    assert raw[4] == [cbor2.CBORTag(TAG_PID, pid.uri)]


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        "envelope",
        {"kind": 0},
        [],
        [0, "t", None, None],
        [0, "t", None, None, 1, 2],
        ["0", "t", None, None, 1],
        [0.0, "t", None, None, 1],
        [True, "t", None, None, 1],
        [None, "t", None, None, 1],
        [[0], "t", None, None, 1],
    ],
)
def test_decode_envelope_raises_protocol_error_when_not_an_envelope(
    value: object,
) -> None:
    with pytest.raises(ProtocolError):
        Decoder().decode_envelope(cbor2.dumps(value))


def test_decode_envelope_raises_protocol_error_when_body_undecodable() -> None:
    with pytest.raises(ProtocolError):
        Decoder().decode_envelope(b"\x85\x00")


def test_frame_helpers_agree_on_the_header_for_any_size() -> None:
    for body in (b"", b"x", b"y" * 300, b"z" * 70_000):
        assert encode_frame(body) == frame_header(len(body)) + body
        assert frame_header(len(body)) == len(body).to_bytes(4, "big")


# --- Encoding refuses non-data ------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [
        object(),
        _Opaque(),
        _Opaque,
        len,
        lambda: None,
        [1, object()],
        {"k": [{"deeper": object()}]},
        (object(),),
        Kind,
    ],
    ids=lambda value: type(value).__name__,
)
def test_encode_raises_type_error_for_arbitrary_objects(value: object) -> None:
    with pytest.raises(TypeError):
        encode(value)
    with pytest.raises(TypeError):
        encode_envelope(Kind.SEND, "partisan:pid:a@host:1.2", None, None, value)


def test_encode_raises_type_error_for_self_containing_list() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises((TypeError, ValueError, RecursionError)):
        encode(cycle)


def test_decode_envelope_raises_message_refused_when_payload_holds_foreign_tag() -> (
    None
):
    frame = encode_envelope(
        Kind.SEND, "partisan:pid:a@host:1.2", None, None, [cbor2.CBORTag(37, b"0" * 16)]
    )
    with pytest.raises(MessageRefused):
        Decoder().decode_envelope(frame[4:])


# --- Foreign types: encoded, then refused by the receiver (documented) --------
# cbor2 encodes these natively; checking for them at encode time would cost 1.8 us
# a send (docs/architecture.md), so the receiver refuses the one message instead.


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(frozenset({1}), id="frozenset"),
        pytest.param(uuid.UUID(int=5), id="uuid"),
        pytest.param(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC), id="datetime"),
        pytest.param(datetime.date(2020, 1, 1), id="date"),
        pytest.param(decimal.Decimal("1.5"), id="decimal"),
        pytest.param(fractions.Fraction(1, 3), id="fraction"),
        pytest.param(re.compile("a"), id="regex"),
        pytest.param(ipaddress.ip_address("10.0.0.1"), id="ip"),
        pytest.param(1 + 2j, id="complex"),
        pytest.param(cbor2.CBORTag(9999, "x"), id="raw-tag"),
        pytest.param([{"k": {1, 2}}], id="nested-set"),
    ],
)
def test_foreign_type_encodes_but_receiver_refuses_the_message(value: object) -> None:
    body = encode(value)
    with pytest.raises(MessageRefused):
        Decoder().decode(body)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1: "a", None: "b", 1.5: "c"}, id="hashable-keys"),
        pytest.param({"a": 1, b"b": 2}, id="str-and-bytes-keys"),
        pytest.param(cbor2.undefined, id="undefined"),
    ],
)
def test_plain_values_round_trip(value: object) -> None:
    assert Decoder().decode(encode(value)) == value


def test_decode_raises_message_refused_when_refs_as_uri_and_tag_holds_tag() -> None:
    body = _tagged(TAG_PID, cbor2.CBORTag(TAG_PID, "partisan:pid:a@host:1.2"))
    with pytest.raises(MessageRefused):
        Decoder(refs_as_uri=True).decode(body)
