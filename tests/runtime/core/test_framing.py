"""Goal: FrameDecoder turns any byte stream into exactly the frames it holds.

Method: hypothesis draws lists of bodies, frames them with ``wire.encode_frame``,
splits the stream at arbitrary points and feeds the chunks one by one; the bodies
must come out whole and in order. A reference model (a plain left-to-right parser)
checks arbitrary bytes and limits: the decoder yields the model's bodies (those
ahead of an oversize header ride on the error's ``bodies``) and raises
:class:`FrameTooLarge` exactly when the model does, as soon as an oversize header's
fourth byte arrives and before any of its body is buffered (core/framing.py
invariants; Partisan v6, "the frame size cap is enforced before a frame is
assembled").
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core.framing import (
    FRAME_BYTES_MAX_DEFAULT,
    HANDSHAKE_FRAME_BYTES_MAX,
    FrameDecoder,
)
from runtime.errors import FrameTooLarge, ProtocolError
from runtime.wire import encode_frame, frame_header

BODIES = st.lists(st.binary(max_size=300), max_size=12)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    """*data* cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def _model(data: bytes, limit: int) -> tuple[list[bytes], bool]:
    """The bodies in *data* and whether an oversize header appears (reference)."""
    bodies: list[bytes] = []
    pos = 0
    while len(data) - pos >= 4:
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size > limit:
            return bodies, True
        if pos + 4 + size > len(data):
            break
        bodies.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return bodies, False


@given(bodies=BODIES, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_feed_returns_every_body_in_order_for_any_split(
    bodies: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(body) for body in bodies)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in _split(stream, cuts):
        out.extend(decoder.feed(chunk))
    assert out == bodies
    assert decoder.buffered_bytes == 0


@given(bodies=BODIES, data=st.data())
def test_feed_returns_every_body_for_bytearray_chunks(
    bodies: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(body) for body in bodies)
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=20))
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in _split(stream, cuts):
        buffer = bytearray(chunk)
        got = decoder.feed(buffer)
        # The caller may reuse its receive buffer: bodies must not alias it.
        buffer[:] = b"\xaa" * len(buffer)
        out.extend(got)
    assert out == bodies
    assert all(type(body) is bytes for body in out)


def test_feed_returns_bodies_when_fed_one_byte_at_a_time() -> None:
    bodies = [b"", b"a", b"bc" * 100, b"", b"\x00\x00\x00\x05"]
    stream = b"".join(encode_frame(body) for body in bodies)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for index in range(len(stream)):
        out.extend(decoder.feed(stream[index : index + 1]))
    assert out == bodies


def test_feed_returns_nothing_when_given_no_bytes() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"") == []
    assert decoder.buffered_bytes == 2
    assert decoder.feed(b"\x00\x01z") == [b"z"]


@pytest.mark.parametrize("count", [1, 2, 1000])
def test_feed_returns_empty_bodies_for_zero_length_frames(count: int) -> None:
    decoder = FrameDecoder(frame_bytes_max=1)
    assert decoder.feed(frame_header(0) * count) == [b""] * count
    assert decoder.buffered_bytes == 0


def test_feed_keeps_partial_frame_until_completed() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"hello")
    assert decoder.feed(frame[:3]) == []
    assert decoder.buffered_bytes == 3
    assert decoder.feed(frame[3:6]) == []
    assert decoder.buffered_bytes == 6
    assert decoder.feed(frame[6:] + frame[:5]) == [b"hello"]
    assert decoder.buffered_bytes == 5
    assert decoder.feed(frame[5:]) == [b"hello"]
    assert decoder.buffered_bytes == 0


# --- The size limit -----------------------------------------------------------


def test_feed_accepts_body_of_exactly_the_limit() -> None:
    decoder = FrameDecoder(frame_bytes_max=10)
    assert decoder.feed(encode_frame(b"x" * 10)) == [b"x" * 10]


@pytest.mark.parametrize("limit", [1, 10, HANDSHAKE_FRAME_BYTES_MAX])
def test_feed_raises_frame_too_large_on_fourth_header_byte(limit: int) -> None:
    decoder = FrameDecoder(frame_bytes_max=limit)
    header = frame_header(limit + 1)
    for index in range(3):
        assert decoder.feed(header[index : index + 1]) == []
    assert decoder.buffered_bytes == 3
    with pytest.raises(FrameTooLarge):
        decoder.feed(header[3:4])


def test_feed_raises_frame_too_large_before_body_arrives() -> None:
    # Only the header is sent: the refusal cannot wait for the (huge) body.
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(frame_header(FRAME_BYTES_MAX_DEFAULT + 1))
    assert str(FRAME_BYTES_MAX_DEFAULT + 1) in str(info.value)
    assert str(FRAME_BYTES_MAX_DEFAULT) in str(info.value)


def test_feed_raises_frame_too_large_for_largest_header() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\xff\xff\xff\xff")


def test_feed_raises_frame_too_large_after_valid_frames_in_stream() -> None:
    decoder = FrameDecoder(frame_bytes_max=8)
    assert decoder.feed(encode_frame(b"ok")) == [b"ok"]
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(frame_header(9) + b"x" * 9)
    assert info.value.bodies == []


def test_frame_too_large_carries_bodies_ahead_of_bad_header_in_same_feed() -> None:
    decoder = FrameDecoder(frame_bytes_max=8)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(
            b"\x00\x01a" + encode_frame(b"") + encode_frame(b"b" * 8) + frame_header(9)
        )
    assert info.value.bodies == [b"a", b"", b"b" * 8]


def test_frame_too_large_is_a_protocol_error() -> None:
    assert issubclass(FrameTooLarge, ProtocolError)


def test_default_limits_are_the_documented_ones() -> None:
    assert FRAME_BYTES_MAX_DEFAULT == 16 * 1024 * 1024
    assert FrameDecoder().frame_bytes_max == FRAME_BYTES_MAX_DEFAULT
    assert HANDSHAKE_FRAME_BYTES_MAX == 4096


def test_feed_accepts_larger_frame_when_limit_raised_between_feeds() -> None:
    # The shell's pattern: small frames during the handshake, then the full limit.
    decoder = FrameDecoder(frame_bytes_max=HANDSHAKE_FRAME_BYTES_MAX)
    hello = encode_frame(b"h" * 100)
    big = encode_frame(b"b" * 100_000)
    assert decoder.feed(hello + big[:2]) == [b"h" * 100]
    decoder.frame_bytes_max = FRAME_BYTES_MAX_DEFAULT
    assert decoder.feed(big[2:50_000]) == []
    assert decoder.feed(big[50_000:]) == [b"b" * 100_000]


def test_feed_raises_frame_too_large_when_limit_lowered() -> None:
    decoder = FrameDecoder(frame_bytes_max=100)
    assert decoder.feed(encode_frame(b"x" * 100)) == [b"x" * 100]
    decoder.frame_bytes_max = 10
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"x" * 11))


@given(
    data=st.binary(max_size=200),
    limit=st.integers(min_value=1, max_value=64),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_feed_gives_bodies_or_frame_too_large_for_any_bytes(
    data: bytes, limit: int, cuts: list[int]
) -> None:
    expected, too_large = _model(data, limit)
    decoder = FrameDecoder(frame_bytes_max=limit)
    out: list[bytes] = []
    raised = False
    for chunk in _split(data, cuts):
        try:
            out.extend(decoder.feed(chunk))
        except FrameTooLarge as error:
            # Frames ahead of the bad header in this feed ride on the error.
            out.extend(error.bodies)
            raised = True
            break
        # A hostile peer can make us hold at most one incomplete frame.
        assert decoder.buffered_bytes <= limit + 3
    assert raised == too_large
    assert out == expected
    if not raised:
        assert decoder.buffered_bytes == len(data) - sum(4 + len(b) for b in out)


@given(
    bodies=st.lists(st.binary(min_size=0, max_size=40), max_size=6),
    oversize=st.integers(min_value=41, max_value=2**32 - 1),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_feed_raises_frame_too_large_without_buffering_body_for_any_split(
    bodies: list[bytes], oversize: int, cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(body) for body in bodies) + frame_header(oversize)
    decoder = FrameDecoder(frame_bytes_max=40)
    out: list[bytes] = []
    with pytest.raises(FrameTooLarge) as info:  # noqa: PT012 - the raise ends the loop.
        for chunk in _split(stream, cuts):
            out.extend(decoder.feed(chunk))
            assert decoder.buffered_bytes <= 40 + 3
    # Nothing accepted is lost: the frames ahead of the bad header are all here.
    assert out + info.value.bodies == bodies
