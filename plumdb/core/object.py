"""The stored object of one key: siblings under a DVV set, tombstones, resolution.

Follows plum_db's ``plum_db_object`` (an object is a ``dvvset`` of timestamped
values), written from its documented behaviour; the causal part is
:mod:`plumdb.core.causal`.

Theory of operation
-------------------
An :class:`Object` is a DVV set whose values are :class:`Sibling` records:
the written value, the wall-clock time of the write in integer nanoseconds
(from the clock the store was given, never read here), and whether the write
was a delete. A delete is a write like any other, of a *tombstone* sibling
(``deleted=True``, ``value=None``), so it travels, merges and dominates older
values by the same rules; an object whose siblings are all tombstones reads as
absent and may later be collected (:func:`collectable`; the rule is in
docs/plumdb.md).

* :func:`modify` is a local write: the writer's context and the current object
  are synced, then the new sibling gets the writer's next dot. With the
  object's own context (the store's default) the write supersedes every
  sibling; with an older context the siblings it did not see remain.
* :func:`merge` combines a replica's object with another's (``DVVSet.sync``).
* :func:`resolve` picks one value among siblings, deterministically on every
  node: ``"lww"`` takes the sibling with the highest timestamp, ties broken by
  the canonical CBOR bytes of ``[timestamp, deleted, value]``; a function
  ``f(a, b) -> value`` is folded over the live values in that same order (a
  concurrent write wins over a delete: tombstones only win when every sibling
  is one). The result is a :class:`Resolved` carrying the object's full
  context, so writing it back supersedes every sibling.

Encoding: :func:`object_to_plain` gives plain CBOR-able data, format 1::

    [1, [[actor, counter, [[timestamp, deleted, value], ...]], ...]]

(entries sorted by actor, siblings newest first), and :func:`encode_object` is
its canonical CBOR (``canonical=True``), the bytes stored and hashed. Equal
objects have equal bytes on every node, so :func:`object_hash` (BLAKE2b-128
of those bytes) can feed the Merkle trees. Decoding accepts plain data only and
checks every field (:class:`plumdb.errors.MalformedData` otherwise).

Invariants (checked on construction)
------------------------------------
* An object holds at least one sibling, and every value of its DVV set is a
  dotted :class:`Sibling` (no anonymous values: a resolved value is a
  :class:`Resolved`, never stored).
* A tombstone sibling's value is ``None``; values are plain data
  (:func:`check_value`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final, Literal, TypeAlias, final

import attrs
import cbor2

from plumdb.core.causal import DVVSet, VersionVector, check_version_vector
from plumdb.errors import MalformedData

__all__ = [
    "FORMAT_VERSION",
    "HASH_BYTES",
    "VALUE_DEPTH_MAX",
    "Object",
    "Resolved",
    "Resolver",
    "Sibling",
    "check_value",
    "collectable",
    "decode_object",
    "encode_object",
    "merge",
    "modify",
    "object_from_plain",
    "object_hash",
    "object_to_plain",
    "resolve",
]

FORMAT_VERSION: Final = 1
"""First element of an object's plain form; a decoder refuses other versions."""
HASH_BYTES: Final = 16
"""Bytes of an object hash (BLAKE2b-128): accidental collisions are out of reach
(2**-64 at four billion keys), and the exchange sends one hash per key."""
VALUE_DEPTH_MAX: Final = 32
"""Nesting of lists and maps in a value. Metadata is shallow; the bound keeps
validation and decoding from recursing without end on hostile input."""

Resolver: TypeAlias = Literal["lww"] | Callable[[Any, Any], Any]
"""``"lww"`` or a function ``(a, b) -> value`` folded over the live values."""

_PLAIN_SCALARS: Final = (type(None), bool, int, float, str, bytes)
_MAP_KEYS: Final = (int, str, bytes)


def check_value(value: object, *, _depth: int = 0) -> None:
    """Raise unless *value* is plain CBOR-able data.

    Plain data: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
    lists and tuples of plain data, and dicts with ``int``, ``str`` or
    ``bytes`` keys, nested at most :data:`VALUE_DEPTH_MAX` deep. Tuples come
    back as lists (CBOR has one array type).

    Raises:
        TypeError: another type somewhere in *value*.
        ValueError: nested too deeply.
    """
    if _depth > VALUE_DEPTH_MAX:
        raise ValueError(f"value nested deeper than {VALUE_DEPTH_MAX}")
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return
    if kind is list or kind is tuple:
        for item in value:  # type: ignore[attr-defined]  # list or tuple
            check_value(item, _depth=_depth + 1)
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]  # a dict
            if type(key) not in _MAP_KEYS:
                raise TypeError(f"map keys are int, str or bytes, not {key!r:.80}")
            check_value(item, _depth=_depth + 1)
        return
    raise TypeError(f"values are plain CBOR data, not {kind.__name__}: {value!r:.80}")


def _check_timestamp(_instance: object, _attribute: object, value: int) -> None:
    if type(value) is not int:
        raise TypeError(f"a timestamp is an int of nanoseconds, not {value!r:.80}")


def _check_deleted(instance: Sibling, _attribute: object, value: object) -> None:
    if type(value) is not bool:
        raise TypeError("deleted is a bool")
    if value and instance.value is not None:
        raise ValueError("a tombstone's value is None")


@final
@attrs.frozen(kw_only=True)
class Sibling:
    """One written value (or tombstone) with its wall-clock write time.

    Attributes:
        value: plain data (see :func:`check_value`); ``None`` for a tombstone.
        timestamp: wall-clock nanoseconds at the write, from the writer's
            injected clock; used only to order concurrent siblings (LWW).
        deleted: whether this write was a delete (a tombstone).
    """

    value: object
    timestamp: int = attrs.field(validator=_check_timestamp)
    deleted: bool = attrs.field(default=False, validator=_check_deleted)


def _check_clock(_instance: object, _attribute: object, clock: object) -> None:
    if not isinstance(clock, DVVSet):
        raise TypeError("an object's clock is a DVVSet")
    if clock.anonymous:
        raise ValueError("a stored object has no anonymous values")
    if clock.size() < 1:
        raise ValueError("an object holds at least one sibling")
    for value in clock.values():
        if not isinstance(value, Sibling):
            raise TypeError("an object's values are Siblings")


@final
@attrs.frozen
class Object:
    """The state of one key on one replica: siblings and their causal history.

    Attributes:
        clock: a DVV set of :class:`Sibling` (invariants in the module docstring).
    """

    clock: DVVSet[Sibling] = attrs.field(validator=_check_clock)

    @property
    def siblings(self) -> tuple[Sibling, ...]:
        """Every concurrent value (tombstones included), in clock order."""
        return self.clock.values()

    @property
    def sibling_count(self) -> int:
        """How many siblings (1 unless writes were concurrent)."""
        return self.clock.size()

    @property
    def context(self) -> VersionVector:
        """The version vector to pass back to a write that supersedes this object."""
        return self.clock.join()

    @property
    def is_tombstone(self) -> bool:
        """Whether every sibling is a tombstone: the key reads as deleted."""
        return all(sibling.deleted for sibling in self.siblings)

    @property
    def timestamp(self) -> int:
        """The latest write time among the siblings (nanoseconds)."""
        return max(sibling.timestamp for sibling in self.siblings)


@final
@attrs.frozen(kw_only=True)
class Resolved:
    """One value chosen among an object's siblings, with the object's context.

    Attributes:
        sibling: the chosen (or computed) sibling; ``deleted`` if the result
            is a tombstone.
        context: the full context of the object it came from: a write with it
            supersedes every sibling.
    """

    sibling: Sibling
    context: VersionVector

    @property
    def value(self) -> object:
        """The resolved value (``None`` for a tombstone)."""
        return self.sibling.value

    @property
    def deleted(self) -> bool:
        """Whether the resolution is a tombstone."""
        return self.sibling.deleted


def modify(
    existing: Object | None,
    sibling: Sibling,
    *,
    actor: str,
    context: VersionVector,
    counter_floor: int = 0,
) -> Object:
    """The object after a local write of *sibling* by *actor*.

    Args:
        existing: the key's current object on this replica, if any.
        sibling: the written value or tombstone.
        actor: this replica's actor id (node name and incarnation).
        context: what the writer had seen: values it covers are superseded,
            others stay as siblings. ``existing.context`` supersedes all.
        counter_floor: see ``DVVSet.update``.

    Raises:
        TypeError, ValueError: a bad context or actor.
    """
    client = DVVSet.with_context(check_version_vector(context), sibling)
    replica = existing.clock if existing is not None else None
    return Object(client.update(actor, replica=replica, counter_floor=counter_floor))


def merge(local: Object, remote: Object) -> Object:
    """Both replicas' knowledge: commutative, associative, idempotent."""
    return Object(local.clock.sync(remote.clock))


def _sibling_plain(sibling: Sibling) -> list[object]:
    return [sibling.timestamp, sibling.deleted, sibling.value]


def _sibling_order(sibling: Sibling) -> tuple[int, bytes]:
    """Total, node-independent order of siblings: time, then canonical bytes."""
    return sibling.timestamp, cbor2.dumps(_sibling_plain(sibling), canonical=True)


def resolve(obj: Object, resolver: Resolver = "lww") -> Resolved:
    """One value for *obj*, the same on every node that holds the same object.

    Args:
        obj: the object.
        resolver: ``"lww"``: the sibling with the highest ``(timestamp,
            canonical bytes)``. A function ``f(a, b)``: folded over the live
            values sorted that way (``f(f(v1, v2), v3)``...); the result's
            timestamp is the newest folded sibling's. If every sibling is a
            tombstone, the result is the newest tombstone.

    Raises:
        ValueError: *resolver* is neither ``"lww"`` nor callable.
    """
    siblings = sorted(obj.siblings, key=_sibling_order)
    if resolver == "lww":
        winner = siblings[-1]
    elif callable(resolver):
        live = [sibling for sibling in siblings if not sibling.deleted]
        if not live:
            winner = siblings[-1]
        elif len(live) == 1:
            winner = live[0]
        else:
            value = live[0].value
            for sibling in live[1:]:
                value = resolver(value, sibling.value)
            winner = Sibling(value=value, timestamp=live[-1].timestamp)
    else:
        raise ValueError(f"a resolver is 'lww' or a function, not {resolver!r:.80}")
    return Resolved(sibling=winner, context=obj.context)


def collectable(obj: Object, *, now_ns: int, grace: float) -> bool:
    """Whether *obj* is a tombstone written at least *grace* seconds before *now_ns*.

    Necessary, not sufficient, for collection: every current member must also
    hold the tombstone (docs/plumdb.md, Tombstones).
    """
    return obj.is_tombstone and obj.timestamp + round(grace * 1e9) <= now_ns


# Encoding. Serialisation stays out of the classes (STYLE.md, attrs).


def object_to_plain(obj: Object) -> list[object]:
    """*obj* as plain CBOR-able data (format :data:`FORMAT_VERSION`)."""
    return [
        FORMAT_VERSION,
        [
            [actor, counter, [_sibling_plain(s) for s in siblings]]
            for actor, counter, siblings in obj.clock.entries
        ],
    ]


def _is_list(value: object) -> bool:
    return type(value) is list or type(value) is tuple


def object_from_plain(data: object) -> Object:
    """The object whose plain form is *data* (lists or tuples).

    Raises:
        MalformedData: *data* is not a valid object of format 1.
    """
    try:
        if not isinstance(data, list | tuple) or len(data) != 2:
            raise MalformedData("an object is [version, entries]")
        version: object = data[0]
        entries: object = data[1]
        if version != FORMAT_VERSION or type(version) is not int:
            raise MalformedData(f"unknown object format {version!r:.20}")
        if not isinstance(entries, list | tuple):
            raise MalformedData("an object's entries are a list")
        built: list[tuple[str, int, tuple[Sibling, ...]]] = []
        for entry in entries:
            if not _is_list(entry) or len(entry) != 3 or not _is_list(entry[2]):
                raise MalformedData("an entry is [actor, counter, siblings]")
            siblings: list[Sibling] = []
            for plain in entry[2]:
                if not _is_list(plain) or len(plain) != 3:
                    raise MalformedData("a sibling is [timestamp, deleted, value]")
                check_value(plain[2])
                siblings.append(
                    Sibling(value=plain[2], timestamp=plain[0], deleted=plain[1])
                )
            built.append((entry[0], entry[1], tuple(siblings)))
        return Object(DVVSet(tuple(built), ()))
    except MalformedData:
        raise
    except (TypeError, ValueError, RecursionError) as error:
        raise MalformedData(f"not a valid object: {error}") from None


def encode_object(obj: Object) -> bytes:
    """The canonical CBOR of *obj*: what is stored, sent and hashed."""
    return cbor2.dumps(object_to_plain(obj), canonical=True)


def decode_object(data: bytes) -> Object:
    """The object encoded in *data* (from storage or a peer).

    Raises:
        MalformedData: not the CBOR of a valid object.
    """
    try:
        plain = cbor2.loads(data)
    except Exception as error:
        # cbor2 raises several types on bad input (CBORDecodeError, ValueError,
        # RecursionError, OverflowError...); all mean "not an object".
        raise MalformedData(f"undecodable object: {error!r:.200}") from None
    return object_from_plain(plain)


def object_hash(data: bytes) -> bytes:
    """The Merkle-tree hash of an encoded object (BLAKE2b-128 of its bytes)."""
    return hashlib.blake2b(
        data, digest_size=HASH_BYTES, person=b"plumdb.object"
    ).digest()
