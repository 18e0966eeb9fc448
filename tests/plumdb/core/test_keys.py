"""Goal: keys encode to bytes whose order is the documented key order, and decode
back exactly; anything else decodes to ``MalformedData``, never a crash.

Method: hypothesis properties against a model order (type rank, then value,
tuples element-wise), round trips, and arbitrary bytes fed to the decoder;
examples at the int length boundaries and for every refused type; full-prefix
ranges and pattern ranges checked to contain exactly what they must.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumdb.core.keys import (
    ANY,
    FULL_KEY_BYTES_MAX,
    decode_full_key,
    decode_key,
    encode_full_key,
    encode_key,
    full_prefix_range,
    key_matches,
    pattern_range,
    prefix_matches,
)
from plumdb.errors import MalformedData

scalars = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.binary(max_size=6),
    st.text(max_size=6),
)
keys = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=8
)
prefixes = st.one_of(st.text(max_size=4), st.binary(max_size=4))
full_prefixes = st.tuples(prefixes, prefixes)


def model(key: Any) -> tuple[Any, ...]:
    """The documented order: int < bytes < str < tuple, then by value."""
    if type(key) is int:
        return (0, key)
    if type(key) is bytes:
        return (1, key)
    if type(key) is str:
        return (2, key)
    return (3, tuple(model(element) for element in key))


@given(keys)
def test_round_trip(key: Any) -> None:
    assert decode_key(encode_key(key)) == key


@given(keys, keys)
def test_byte_order_is_the_key_order(a: Any, b: Any) -> None:
    ea, eb = encode_key(a), encode_key(b)
    assert (ea < eb) == (model(a) < model(b))
    assert (ea == eb) == (model(a) == model(b))


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        key = decode_key(data)
    except MalformedData:
        return
    assert encode_key(key) == data


def test_int_boundaries_sort_numerically() -> None:
    values = [-(2**64), -65536, -256, -255, -1, 0, 1, 255, 256, 65535, 2**64]
    encoded = [encode_key(v) for v in values]
    assert encoded == sorted(encoded)
    assert [decode_key(e) for e in encoded] == values


def test_nul_bytes_and_prefixes_sort_first() -> None:
    ordered = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"a\x00", b"ab"]
    assert [encode_key(k) for k in ordered] == sorted(encode_key(k) for k in ordered)
    assert encode_key(("a",)) < encode_key(("a", 0)) < encode_key(("a", b""))


@pytest.mark.parametrize("bad", [True, 1.5, None, [1], {"a": 1}, ("ok", None)])
def test_refused_types(bad: object) -> None:
    with pytest.raises(TypeError):
        encode_key(bad)  # type: ignore[arg-type]


def test_refused_values() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode_key("\ud800")
    with pytest.raises(ValueError, match="2\\*\\*"):
        encode_key(2**1100)
    with pytest.raises(ValueError, match="longer"):
        encode_key("x" * FULL_KEY_BYTES_MAX)


@pytest.mark.parametrize(
    "data",
    [
        b"\x10\x81\x00",  # padded int (not canonical)
        b"\x10\x82\x00\x01",  # padded int
        b"\x20abc",  # unterminated
        b"\x30\xff\xfe\x00",  # bad UTF-8
        b"\x40\x10\x80",  # unterminated tuple
        b"\x99",  # unknown type
        b"\x10\x80\x10\x80",  # trailing bytes
    ],
)
def test_malformed_examples(data: bytes) -> None:
    with pytest.raises(MalformedData):
        decode_key(data)


@given(full_prefixes, full_prefixes, keys)
def test_full_prefix_range_holds_exactly_its_keys(
    mine: Any, other: Any, key: Any
) -> None:
    start, stop = full_prefix_range(mine)
    encoded = encode_full_key(other, key)
    assert (start <= encoded < stop) == (mine == other)
    assert decode_full_key(encoded) == (other, key)


@given(full_prefixes, keys, st.data())
def test_pattern_range_holds_every_match(
    full_prefix: Any, key: Any, data: st.DataObject
) -> None:
    def blur(k: Any) -> Any:
        if data.draw(st.booleans()):
            return ANY
        if type(k) is tuple:
            return tuple(blur(element) for element in k)
        return k

    pattern = blur(key)
    assert key_matches(pattern, key)
    start, stop = pattern_range(full_prefix, pattern)
    assert start <= encode_full_key(full_prefix, key) < stop


def test_key_matches_examples() -> None:
    assert key_matches(("dev", ANY), ("dev", 3))
    assert not key_matches(("dev", ANY), ("dev", 3, 4))
    assert not key_matches(("dev", ANY), "dev")
    assert not key_matches(1, True)
    assert key_matches(ANY, ("anything",))
    assert prefix_matches((ANY, "eu"), ("users", "eu"))
    assert not prefix_matches(("users", ANY), (b"users", "eu"))


def test_decode_full_key_refuses_plain_keys() -> None:
    with pytest.raises(MalformedData):
        decode_full_key(encode_key("just a key"))
    with pytest.raises(MalformedData):
        decode_full_key(encode_key((1, "b", "c")))
