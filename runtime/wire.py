"""The wire codec: frames, envelopes, and the CBOR tags that carry references.

A *frame* is a 4-byte big-endian length and a CBOR body (``core/framing.py`` splits
a byte stream into bodies). After the handshake every body is an *envelope*::

    [kind, target, sender, ref, payload]

``kind`` is a small int (:class:`Kind`); ``target``, ``sender`` and ``ref`` are plain
strings (URIs or registered names) or ``None``, never CBOR tags, so the hot path pays
no Python hook per message (DESIGN.md, The hot path). Only references *inside* the
user's payload are tags:

=====  =============  ====================================
tag    decodes to     content
=====  =============  ====================================
40401  :class:`Pid`   the pid URI string
40402  :class:`Ref`   the ref URI string
40403  :class:`Name`  the name URI string
=====  =============  ====================================

With ``refs_as_uri=True`` a decoder hands the URI strings to user code instead.

Decoding network input accepts only these tags, big integers (tags 2 and 3) and
plain data. Every other semantic tag that cbor2 would turn into an object (dates,
regular expressions, MIME messages, shared references...) and any unknown tag is
refused: cbor2 is handed a decoder per tag that records the refusal and returns a
placeholder, so the body still decodes in step and :class:`MessageRefused` drops
that one message while the connection lives on. Bytes that are not CBOR raise
:class:`ProtocolError` and close the connection. Nothing is ever instantiated by
name. The full format is written down in ``docs/protocols/wire.md``.

The encoder does not check for those types (cbor2 encodes them natively, and an
``encoders`` table would add 1.8 us to every send, 60% of an encode): a sender
that puts a datetime or a set in a message sees it refused by the receiver,
which logs why and counts it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

import cbor2

from runtime.errors import MessageRefused, ProtocolError
from runtime.ref import BadReference, Name, Pid, Ref

__all__ = [
    "Decoder",
    "Kind",
    "MessageRefused",
    "TAG_NAME",
    "TAG_PID",
    "TAG_REF",
    "encode_envelope",
    "encode_frame",
    "frame_header",
]

TAG_PID: Final = 40401
TAG_REF: Final = 40402
TAG_NAME: Final = 40403

# Semantic tags cbor2 decodes into objects natively (found by probing cbor2 6.3).
# We override each: bignums stay (they are plain integers), the rest are refused.
_CBOR2_SEMANTIC_TAGS: Final = (
    0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
    1004, 43000, 55799,
)  # fmt: skip
# Nesting deeper than this in a message is refused; 64 is far beyond any real
# message and keeps a hostile frame from exhausting the C stack.
DECODE_DEPTH_MAX: Final = 64


class Kind(enum.IntEnum):
    """What an envelope carries. Values are wire constants: never renumber."""

    SEND = 0
    """A user message to a pid (target is its URI)."""
    SEND_NAME = 1
    """A user message to a registered name on the receiving node."""
    EXIT = 2
    """An exit signal to a pid; the payload is the reason."""
    CONTROL = 3
    """A protocol message (membership, heartbeat, monitor...): the target names
    the protocol, the sender is the sending node's name, the payload is the
    message as the protocol's codec encodes it (``runtime/core/codec.py``)."""


def frame_header(size: int) -> bytes:
    """The 4-byte length prefix of a frame of *size* body bytes."""
    return size.to_bytes(4, "big")


def encode_frame(body: bytes) -> bytes:
    """Header and body in one buffer, so they leave in one write."""
    return len(body).to_bytes(4, "big") + body


def _encode_default(encoder: Any, value: Any) -> None:
    if isinstance(value, Pid):
        encoder.encode(cbor2.CBORTag(TAG_PID, value.uri))
    elif isinstance(value, Ref):
        encoder.encode(cbor2.CBORTag(TAG_REF, value.uri))
    elif isinstance(value, Name):
        encoder.encode(cbor2.CBORTag(TAG_NAME, value.uri))
    else:
        raise TypeError(
            f"cannot send a {type(value).__qualname__}: messages hold plain data "
            "(None, bool, int, float, str, bytes, list, tuple, dict) and refs"
        )


def encode(value: object) -> bytes:
    """Encode plain data and refs as CBOR.

    Raises:
        TypeError: if *value* holds anything else (a user error, not a peer's).
    """
    try:
        return cbor2.dumps(value, default=_encode_default)
    except cbor2.CBOREncodeError as exc:
        raise TypeError(str(exc)) from exc


def encode_envelope(
    kind: int,
    target: str,
    sender: str | None,
    ref: str | None,
    payload: object,
) -> bytes:
    """A whole frame (header included) for one envelope."""
    body = encode([kind, target, sender, ref, payload])
    return len(body).to_bytes(4, "big") + body


class _Refused:
    """Stands in for a refused tag's value while the rest of the body decodes."""

    __slots__ = ()


_REFUSED: Final = _Refused()
# Parsed references a decoder keeps; cleared when full, so bounded.
REF_CACHE_SIZE_MAX: Final = 4096
_REF_TYPES: Final[dict[int, type]] = {TAG_PID: Pid, TAG_REF: Ref, TAG_NAME: Name}
_REF_PARSERS: Final[dict[int, Callable[[object], Pid | Ref | Name]]] = {
    TAG_PID: Pid.from_uri,
    TAG_REF: Ref.from_uri,
    TAG_NAME: Name.from_uri,
}


# Why the body being decoded holds a refused semantic tag. One slot for the
# whole process: decoding is synchronous and trio runs one task at a time, so
# no two decodes interleave, and the refusers are built once, not per decoder
# (a connection's decoder is built at every accept; 21 closures cost 0.4 ms).
_SEMANTIC_REFUSAL: list[str | None] = [None]


def _semantic_refuser(tag: int) -> Callable[[object, bool], object]:
    def refuse(_value: object, _immutable: bool) -> object:  # noqa: FBT001
        _SEMANTIC_REFUSAL[0] = f"CBOR tag {tag} is not plain data"
        return _REFUSED

    return refuse


_SEMANTIC_REFUSERS: Final = {
    tag: _semantic_refuser(tag) for tag in _CBOR2_SEMANTIC_TAGS
}


class Decoder:
    """Decodes network input: only plain data and our reference tags.

    A body holding any other tag (cbor2's semantic tags: dates, regular
    expressions, sets, UUIDs...; or an unknown tag; or one of ours with a bad
    URI) is *refused as a message*: :meth:`decode` raises
    :class:`MessageRefused` after decoding the whole body, so the connection
    stays in sync and only that message is dropped. A body that is not CBOR at
    all raises :class:`ProtocolError`, which closes the connection.

    Accepted as plain data: None, booleans, integers (bignums too), floats,
    text, bytes, arrays (as lists), maps (as dicts, any hashable keys), and
    cbor2's ``undefined`` and simple values, which are inert values. Bytes
    after the first CBOR item of a body are ignored (cbor2 does not report
    them, and checking costs a quarter of a decode).

    Args:
        refs_as_uri: hand references in payloads to user code as URI strings
            (Partisan's ``remote_ref_as_uri``) instead of Pid / Ref / Name
            objects. The URIs are validated either way.
        strict: also refuse map keys that are not text or bytes (cbor2's
            ``strict_hashable_types``, against hash flooding); used before the
            peer is authenticated.

    Not thread-safe; one per connection.
    """

    __slots__ = ("_kwargs", "_last_uri", "_refs", "_refused", "refs_as_uri")

    def __init__(self, *, refs_as_uri: bool = False, strict: bool = False) -> None:
        self.refs_as_uri = refs_as_uri
        # Why the body being decoded is refused; reset by every decode().
        self._refused: str | None = None
        # The last URI string handed out under refs_as_uri (identity matters).
        self._last_uri: str | None = None
        # Parsed references by URI: one sender's pid arrives in message after
        # message, and parsing a pid costs twice a whole envelope's decode.
        self._refs: dict[str, Pid | Ref | Name] = {}
        self._kwargs: dict[str, Any] = {
            "tag_hook": self._tag,
            "semantic_decoders": _SEMANTIC_REFUSERS,
            "max_depth": DECODE_DEPTH_MAX,
        }
        if strict:
            self._kwargs["strict_hashable_types"] = True

    def _tag(self, tag: cbor2.CBORTag, _immutable: bool) -> object:  # noqa: FBT001
        parse = _REF_PARSERS.get(tag.tag)
        if parse is None:
            self._refused = f"unknown CBOR tag {tag.tag}"
            return _REFUSED
        value = tag.value
        if value is self._last_uri:
            # Under refs_as_uri an inner ref tag already became this very
            # string: a ref tag wrapping a ref tag, refused as the object
            # decoder refuses it (it cannot parse a Pid as a URI).
            self._refused = f"tag {tag.tag} holds another reference tag"
            return _REFUSED
        cache = self._refs
        ref = cache.get(value) if type(value) is str else None
        if ref is None or ref.__class__ is not _REF_TYPES[tag.tag]:
            try:
                ref = parse(value)
            except BadReference as exc:
                self._refused = f"bad reference in tag {tag.tag}: {exc}"
                return _REFUSED
            if len(cache) >= REF_CACHE_SIZE_MAX:
                cache.clear()
            cache[ref.uri] = ref
        if self.refs_as_uri:
            self._last_uri = ref.uri
            return ref.uri
        return ref

    def decode(self, body: bytes | bytearray | memoryview) -> Any:
        """Decode one CBOR body.

        Raises:
            MessageRefused: the body holds a tag we do not accept.
            ProtocolError: the bytes are not CBOR, or nest deeper than
                ``DECODE_DEPTH_MAX``.
        """
        try:
            value = cbor2.loads(body, **self._kwargs)
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
            self._refused = _SEMANTIC_REFUSAL[0] = None
            raise ProtocolError(f"undecodable frame: {exc}") from None
        if _SEMANTIC_REFUSAL[0] is not None:
            reason, _SEMANTIC_REFUSAL[0] = _SEMANTIC_REFUSAL[0], None
            self._refused = None
            raise MessageRefused(reason)
        if self._refused is not None:
            reason, self._refused = self._refused, None
            raise MessageRefused(reason)
        return value

    def decode_envelope(
        self, body: bytes | bytearray | memoryview
    ) -> tuple[int, Any, Any, Any, Any]:
        """Decode and shape-check an envelope.

        Raises:
            MessageRefused: a refused tag (drop this message only).
            ProtocolError: not CBOR, or not a 5-element array with an int kind.
        """
        value = self.decode(body)
        if type(value) is not list or len(value) != 5 or type(value[0]) is not int:
            raise ProtocolError("frame is not an envelope [kind, target, ...]")
        return value[0], value[1], value[2], value[3], value[4]


# cbor2's encoder imports datetime, decimal, uuid, email and more (20-40 ms) the
# first time it meets a type it has no native encoder for, as our refs: pay that
# at import, not on some node's first message.
encode([Pid(node="warm@up", creation=0, id=0)])
