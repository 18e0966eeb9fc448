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
regular expressions, MIME messages, shared references...) is refused with
:class:`ProtocolError`, as is any unknown tag. Nothing is ever instantiated by name.
The full format is written down in ``docs/protocols/wire.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

import cbor2

from runtime.errors import ProtocolError
from runtime.ref import BadReference, Name, Pid, Ref

__all__ = [
    "Decoder",
    "Kind",
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
    1004, 55799,
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


def _refuse_semantic(*_args: object) -> Any:
    raise cbor2.CBORDecodeError("semantic tag not accepted from the network")


_REFUSING: Final = dict.fromkeys(_CBOR2_SEMANTIC_TAGS, _refuse_semantic)


def _tag_to_object(tag: cbor2.CBORTag, _immutable: bool) -> object:  # noqa: FBT001
    value = tag.value
    if not isinstance(value, str):
        raise ProtocolError(f"tag {tag.tag} must hold a string")
    try:
        if tag.tag == TAG_PID:
            return Pid.from_uri(value)
        if tag.tag == TAG_REF:
            return Ref.from_uri(value)
        if tag.tag == TAG_NAME:
            return Name.from_uri(value)
    except BadReference as exc:
        raise ProtocolError(f"bad reference in tag {tag.tag}: {exc}") from None
    raise ProtocolError(f"unknown CBOR tag {tag.tag}")


def _tag_to_uri(tag: cbor2.CBORTag, _immutable: bool) -> object:  # noqa: FBT001
    if tag.tag in (TAG_PID, TAG_REF, TAG_NAME):
        if not isinstance(tag.value, str):
            raise ProtocolError(f"tag {tag.tag} must hold a string")
        return tag.value
    raise ProtocolError(f"unknown CBOR tag {tag.tag}")


class Decoder:
    """Decodes network input: only plain data and our reference tags.

    Args:
        refs_as_uri: hand references in payloads to user code as URI strings
            (Partisan's ``remote_ref_as_uri``) instead of :class:`Pid` objects.
    """

    __slots__ = ("_hook", "refs_as_uri")

    def __init__(self, *, refs_as_uri: bool = False) -> None:
        self.refs_as_uri = refs_as_uri
        self._hook: Callable[[cbor2.CBORTag, bool], object] = (
            _tag_to_uri if refs_as_uri else _tag_to_object
        )

    def decode(self, body: bytes | bytearray | memoryview) -> Any:
        """Decode one CBOR body.

        Raises:
            ProtocolError: undecodable bytes, trailing bytes, a refused or
                unknown tag, or nesting deeper than ``DECODE_DEPTH_MAX``.
        """
        try:
            return cbor2.loads(
                body,
                tag_hook=self._hook,
                semantic_decoders=_REFUSING,
                max_depth=DECODE_DEPTH_MAX,
                strict_hashable_types=True,
            )
        except ProtocolError:
            raise
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(f"undecodable frame: {exc}") from None

    def decode_envelope(
        self, body: bytes | bytearray | memoryview
    ) -> tuple[int, Any, Any, Any, Any]:
        """Decode and shape-check an envelope.

        Raises:
            ProtocolError: if the body is not a 5-element array with an int kind.
        """
        value = self.decode(body)
        if type(value) is not list or len(value) != 5 or type(value[0]) is not int:
            raise ProtocolError("frame is not an envelope [kind, target, ...]")
        return value[0], value[1], value[2], value[3], value[4]
