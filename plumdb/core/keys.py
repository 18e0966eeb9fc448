"""Keys: which values may be keys, how they are ordered, and their byte encoding.

Theory of operation
-------------------
A PlumDB key lives under a *full prefix* ``(prefix, subprefix)``; both parts are
``str`` or ``bytes`` (plum_db allows binaries and atoms). A key is a ``str``, a
``bytes``, an ``int`` (not a ``bool``), or a tuple of keys (nested tuples
allowed). Floats, ``None`` and booleans are refused: they have no total order
that survives a round trip (NaN, ``-0.0``) or they collide with ints.

**The ordering rule.** Keys are ordered by type first, then by value::

    int  <  bytes  <  str  <  tuple

ints by numeric value, bytes lexicographically by byte, strings by code point,
tuples element by element (a tuple that is a prefix of another sorts first).
This is the order of iteration, and it is the order of the *encoded* keys
compared as bytes, so a backend only has to sort byte strings (SQLite compares
BLOBs with ``memcmp``; the memory backend uses a ``SortedDict`` of bytes).

**The encoding** (order preserving, after FoundationDB's tuple layer):

* ``int``: ``0x10``, a length byte, then the magnitude big-endian. For
  ``n >= 0`` the length byte is ``0x80 + L`` and the magnitude is ``n`` in
  ``L`` bytes (``L = 0`` for zero); for ``n < 0`` it is ``0x7F - L`` and the
  magnitude is ``2**(8L) - 1 - |n|``, so more negative sorts lower. ``L``
  is minimal and at most 126 (``|n| < 2**1008``).
* ``bytes``: ``0x20``, the bytes with each ``0x00`` written ``0x00 0xFF``, then
  ``0x00``. ``str``: the same with ``0x30`` over its UTF-8 (whose byte order is
  code point order).
* ``tuple``: ``0x40``, each element's encoding, then ``0x00``. Every element
  starts with a type byte above ``0x00``, so a shorter tuple sorts first.

A *full key* is the encoding of the tuple ``(prefix, subprefix, key)``; all
keys of one full prefix therefore share a byte prefix and form one contiguous
range (:func:`full_prefix_range`), which is how iteration with a start key or a
leading-element pattern becomes a range scan. Encoded full keys are at most
:data:`FULL_KEY_BYTES_MAX` bytes.

Decoding accepts only the canonical encoding of a valid key (it re-encodes and
compares), so two peers can never hold one key under two byte strings.

Patterns
--------
:data:`ANY` is a wildcard: :func:`key_matches` takes a pattern that is a key,
``ANY``, or a tuple of patterns (``("device", ANY)`` matches every 2-tuple
whose first element is ``"device"``). Full-prefix patterns are
``(prefix or ANY, subprefix or ANY)``.
"""

from __future__ import annotations

from typing import Final, TypeAlias, final

from plumdb.errors import MalformedData

__all__ = [
    "ANY",
    "FULL_KEY_BYTES_MAX",
    "FullPrefix",
    "FullPrefixPattern",
    "Key",
    "KeyPattern",
    "Prefix",
    "check_full_prefix",
    "check_key",
    "decode_full_key",
    "decode_key",
    "encode_full_key",
    "encode_key",
    "full_prefix_range",
    "key_matches",
    "pattern_range",
    "prefix_matches",
]

Key: TypeAlias = "int | str | bytes | tuple[Key, ...]"
"""A key: ``int`` (not ``bool``), ``str``, ``bytes``, or a tuple of keys."""
Prefix: TypeAlias = str | bytes
"""Either part of a full prefix."""
FullPrefix: TypeAlias = tuple[Prefix, Prefix]
"""``(prefix, subprefix)``: the namespace a key lives in."""

FULL_KEY_BYTES_MAX: Final = 1024
"""Bytes of an encoded ``(prefix, subprefix, key)``. Keys travel by the thousand
in anti-entropy ``SegmentsReply`` messages and are the SQLite primary key;
PlumDB holds metadata, whose keys are names and ids, so 1 KiB is generous."""

_INT: Final = 0x10
_BYTES: Final = 0x20
_STR: Final = 0x30
_TUPLE: Final = 0x40
_END: Final = 0x00
_ESCAPE: Final = 0xFF
# 126 magnitude bytes keep both length bytes (0x80 + L, 0x7F - L) in 0x01..0xFE.
_INT_BYTES_MAX: Final = 126


@final
class _Any:
    """The wildcard of key and prefix patterns (a singleton: :data:`ANY`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()
"""Wildcard in patterns: matches any key, key element, prefix or subprefix."""

KeyPattern: TypeAlias = "Key | _Any | tuple[KeyPattern, ...]"
"""A key, :data:`ANY`, or a tuple of patterns."""
FullPrefixPattern: TypeAlias = tuple[Prefix | _Any, Prefix | _Any]
"""``(prefix or ANY, subprefix or ANY)``."""


def _encode(key: object, out: bytearray) -> None:
    if type(key) is int:
        _encode_int(key, out)
    elif type(key) is bytes:
        out.append(_BYTES)
        out += key.replace(b"\x00", b"\x00\xff")
        out.append(_END)
    elif type(key) is str:
        try:
            data = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                "a str key must be valid unicode (no lone surrogates)"
            ) from None
        out.append(_STR)
        out += data.replace(b"\x00", b"\x00\xff")
        out.append(_END)
    elif type(key) is tuple:
        out.append(_TUPLE)
        for element in key:
            _encode(element, out)
            if len(out) > FULL_KEY_BYTES_MAX:
                raise ValueError(f"key longer than {FULL_KEY_BYTES_MAX} bytes")
        out.append(_END)
    else:
        raise TypeError(
            "a key is an int, str, bytes or a tuple of keys, "
            f"not {type(key).__name__}: {key!r:.80}"
        )


def _encode_int(n: int, out: bytearray) -> None:
    size = (abs(n).bit_length() + 7) // 8
    if size > _INT_BYTES_MAX:
        raise ValueError(f"an int key must be below 2**{8 * _INT_BYTES_MAX} in size")
    out.append(_INT)
    if n >= 0:
        out.append(0x80 + size)
        out += n.to_bytes(size, "big")
    else:
        out.append(0x7F - size)
        out += ((1 << (8 * size)) - 1 + n).to_bytes(size, "big")


def encode_key(key: Key) -> bytes:
    """The order-preserving encoding of *key* (see the module docstring).

    Raises:
        TypeError: *key* (or an element) is not an int, str, bytes or tuple.
        ValueError: a str with lone surrogates, an int too large, or an
            encoding longer than :data:`FULL_KEY_BYTES_MAX`.
    """
    out = bytearray()
    _encode(key, out)
    if len(out) > FULL_KEY_BYTES_MAX:
        raise ValueError(f"key longer than {FULL_KEY_BYTES_MAX} bytes")
    return bytes(out)


def _decode(data: bytes, at: int) -> tuple[Key, int]:
    """One key starting at *at*; returns it and the offset after it."""
    if at >= len(data):
        raise MalformedData("truncated key")
    kind = data[at]
    at += 1
    if kind == _INT:
        if at >= len(data):
            raise MalformedData("truncated int key")
        length_byte = data[at]
        at += 1
        negative = length_byte < 0x80
        size = 0x7F - length_byte if negative else length_byte - 0x80
        if size > _INT_BYTES_MAX or at + size > len(data):
            raise MalformedData("bad int key length")
        magnitude = int.from_bytes(data[at : at + size], "big")
        value = magnitude - (1 << (8 * size)) + 1 if negative else magnitude
        return value, at + size
    if kind in (_BYTES, _STR):
        raw = bytearray()
        while True:
            end = data.find(b"\x00", at)
            if end < 0:
                raise MalformedData("unterminated bytes or str key")
            raw += data[at:end]
            if end + 1 < len(data) and data[end + 1] == _ESCAPE:
                raw.append(0)
                at = end + 2
                continue
            at = end + 1
            break
        if kind == _BYTES:
            return bytes(raw), at
        try:
            return raw.decode("utf-8"), at
        except UnicodeDecodeError:
            raise MalformedData("str key is not valid UTF-8") from None
    if kind == _TUPLE:
        elements: list[Key] = []
        while True:
            if at >= len(data):
                raise MalformedData("unterminated tuple key")
            if data[at] == _END:
                return tuple(elements), at + 1
            element, at = _decode(data, at)
            elements.append(element)
    raise MalformedData(f"unknown key type byte 0x{kind:02x}")


def decode_key(data: bytes) -> Key:
    """The key whose canonical encoding is *data*.

    Raises:
        MalformedData: *data* is not the canonical encoding of one valid key
            (from a peer or from storage).
    """
    if type(data) is not bytes or len(data) > FULL_KEY_BYTES_MAX:
        raise MalformedData("an encoded key is at most FULL_KEY_BYTES_MAX bytes")
    try:
        key, end = _decode(data, 0)
    except RecursionError:
        raise MalformedData("key nested too deeply") from None
    if end != len(data):
        raise MalformedData("trailing bytes after a key")
    # Canonical form only: one key, one byte string (no padded ints).
    try:
        canonical = encode_key(key)
    except (TypeError, ValueError) as error:
        raise MalformedData(f"not a valid key: {error}") from None
    if canonical != data:
        raise MalformedData("not the canonical encoding of its key")
    return key


def check_full_prefix(full_prefix: object) -> FullPrefix:
    """*full_prefix* itself if it is a valid ``(prefix, subprefix)``.

    Raises:
        TypeError: not a 2-tuple of str or bytes.
    """
    if (
        type(full_prefix) is not tuple
        or len(full_prefix) != 2
        or type(full_prefix[0]) not in (str, bytes)
        or type(full_prefix[1]) not in (str, bytes)
    ):
        raise TypeError(
            f"a full prefix is a (prefix, subprefix) tuple of str or bytes, "
            f"not {full_prefix!r:.80}"
        )
    return full_prefix


def check_key(key: object) -> None:
    """Raise unless *key* is a valid key (see :func:`encode_key` for errors)."""
    out = bytearray()
    _encode(key, out)
    if len(out) > FULL_KEY_BYTES_MAX:
        raise ValueError(f"key longer than {FULL_KEY_BYTES_MAX} bytes")


def encode_full_key(full_prefix: FullPrefix, key: Key) -> bytes:
    """The storage and Merkle key of *key* under *full_prefix*.

    Raises:
        TypeError, ValueError: an invalid full prefix or key, or too long.
    """
    check_full_prefix(full_prefix)
    return encode_key((full_prefix[0], full_prefix[1], key))


def decode_full_key(data: bytes) -> tuple[FullPrefix, Key]:
    """``(full_prefix, key)`` from an encoded full key (e.g. from an exchange).

    Raises:
        MalformedData: not the canonical encoding of a valid full key.
    """
    decoded = decode_key(data)
    if (
        type(decoded) is not tuple
        or len(decoded) != 3
        or type(decoded[0]) not in (str, bytes)
        or type(decoded[1]) not in (str, bytes)
    ):
        raise MalformedData("a full key is (prefix, subprefix, key)")
    prefix, subprefix, key = decoded
    assert isinstance(prefix, str | bytes)
    assert isinstance(subprefix, str | bytes)
    return (prefix, subprefix), key


def full_prefix_range(full_prefix: FullPrefix) -> tuple[bytes, bytes]:
    """``(start, stop)``: encoded full keys of *full_prefix* are in ``[start, stop)``.

    Every key encoding begins with a type byte below ``0xFF``, so appending
    ``0xFF`` to the shared byte prefix bounds the range.
    """
    check_full_prefix(full_prefix)
    out = bytearray([_TUPLE])
    _encode(full_prefix[0], out)
    _encode(full_prefix[1], out)
    return bytes(out), bytes(out) + b"\xff"


def pattern_range(full_prefix: FullPrefix, pattern: KeyPattern) -> tuple[bytes, bytes]:
    """The narrowest ``[start, stop)`` that holds every key matching *pattern*.

    A pattern that is a whole key gives that key's range; a tuple pattern
    whose leading elements are concrete narrows the range to them; anything
    else gives the full prefix's range.
    """
    start, stop = full_prefix_range(full_prefix)
    if isinstance(pattern, _Any):
        return start, stop
    if type(pattern) is tuple:
        out = bytearray(start)
        out.append(_TUPLE)
        for element in pattern:
            if not _is_concrete(element):
                break
            _encode(element, out)
        return bytes(out), bytes(out) + b"\xff"
    # A whole key: its full key is exactly these bytes and the tuple's end.
    out = bytearray(start)
    _encode(pattern, out)
    return bytes(out), bytes(out) + b"\x01"


def _is_concrete(pattern: object) -> bool:
    if isinstance(pattern, _Any):
        return False
    if type(pattern) is tuple:
        return all(_is_concrete(element) for element in pattern)
    return True


def key_matches(pattern: KeyPattern, key: Key) -> bool:
    """Whether *key* matches *pattern* (``ANY`` matches anything)."""
    if isinstance(pattern, _Any):
        return True
    if type(pattern) is tuple:
        return (
            type(key) is tuple
            and len(key) == len(pattern)
            and all(key_matches(p, k) for p, k in zip(pattern, key, strict=True))
        )
    return type(pattern) is type(key) and pattern == key


def prefix_matches(pattern: FullPrefixPattern, full_prefix: FullPrefix) -> bool:
    """Whether *full_prefix* matches the full-prefix *pattern*."""
    return all(
        isinstance(p, _Any) or (type(p) is type(f) and p == f)
        for p, f in zip(pattern, full_prefix, strict=True)
    )
