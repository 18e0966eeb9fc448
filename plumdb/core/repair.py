"""Anti-entropy repair: the messages that move objects after a tree comparison.

:mod:`plumdb.core.exchange` finds *which* keys differ between two replicas of
a PlumDB partition; this module holds the messages that then move the
objects, and the wire contract of the whole anti-entropy protocol
(:data:`MESSAGE_TYPES`). The trio driver is :mod:`plumdb.anti_entropy`.

Theory of operation
-------------------
After an exchange of partition ``p`` the initiator knows three key lists
(``only_local``, ``only_remote``, ``different``) and repairs both sides:

* :class:`RepairRequest` carries ``push``: the initiator's objects for keys the
  responder lacks or holds differently, and ``pull``: keys only the responder
  holds. The responder merges every pushed object and answers with a
  :class:`RepairReply` holding its objects for the pulled keys, plus, for a
  pushed key where its own object held something the pushed one did not,
  the merged object, so one round trip repairs both sides of a ``different``
  key. Pulled keys left out to keep the reply within its byte budget are
  listed in ``remaining``: the initiator asks for them again.
* :class:`SyncRequest` / :class:`SyncReply`: a replica whose tree of ``p`` is
  empty (a new node, or one that discarded its replica) skips the tree
  descent and reads the peer's partition in key order, a page at a time
  (``resume`` is the first key of the next page, ``None`` at the end).

Objects travel as their canonical bytes (:func:`plumdb.core.object.encode_object`),
so the sender's byte budget is exact and the receiver validates them with
``decode_object``.

Bounds: a message names at most :data:`REPAIR_KEYS_MAX` keys; the driver
keeps each one's objects under its configured byte budget (far below the
runtime's 16 MiB frame limit), always admitting at least one object so that
a large object still moves.

Messages are ``@attrs.frozen`` values with plain fields, validated on
construction (a peer's malformed message is refused by the codec, never
asserted on).
"""

from __future__ import annotations

from typing import Final, TypeAlias, final

import attrs

from plumdb.core.exchange import (
    ExchangeRefused,
    NodesReply,
    NodesRequest,
    RootReply,
    RootRequest,
    SegmentsReply,
    SegmentsRequest,
)
from plumdb.core.keys import FULL_KEY_BYTES_MAX

__all__ = [
    "MESSAGE_TYPES",
    "REPAIR_KEYS_MAX",
    "AntiEntropyMessage",
    "RepairReply",
    "RepairRequest",
    "SyncReply",
    "SyncRequest",
]

REPAIR_KEYS_MAX: Final = 4096
"""Keys one repair or sync message may name or carry. A protocol bound for
validation; the driver's configured batch (``repair_keys_max``) is smaller."""


def _check_count(
    _instance: object, attribute: attrs.Attribute[int], value: object
) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, not {value!r:.40}")


def _valid_key(value: object) -> bool:
    return type(value) is bytes and 0 < len(value) <= FULL_KEY_BYTES_MAX


def _check_keys(
    _instance: object, attribute: attrs.Attribute[object], value: object
) -> None:
    if (
        type(value) is not tuple
        or len(value) > REPAIR_KEYS_MAX
        or not all(_valid_key(key) for key in value)
    ):
        raise ValueError(
            f"{attribute.name} is a tuple of at most {REPAIR_KEYS_MAX} encoded keys"
        )


def _check_objects(
    _instance: object, attribute: attrs.Attribute[object], value: object
) -> None:
    if (
        type(value) is not tuple
        or len(value) > REPAIR_KEYS_MAX
        or not all(
            type(entry) is tuple
            and len(entry) == 2
            and _valid_key(entry[0])
            and type(entry[1]) is bytes
            for entry in value
        )
    ):
        raise ValueError(
            f"{attribute.name} is a tuple of at most {REPAIR_KEYS_MAX}"
            " (encoded key, encoded object) pairs"
        )


def _check_optional_key(
    _instance: object, attribute: attrs.Attribute[bytes | None], value: bytes | None
) -> None:
    if value is not None and not _valid_key(value):
        raise ValueError(f"{attribute.name} is an encoded key or None")


def _check_positive(
    _instance: object, attribute: attrs.Attribute[int], value: object
) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, not {value!r:.40}")


@final
@attrs.frozen(kw_only=True)
class RepairRequest:
    """Merge these objects of mine; send me yours for those keys.

    Attributes:
        request_id: correlates the reply (unique within the exchange).
        partition: the PlumDB partition the keys belong to.
        push: ``(encoded full key, encoded object)`` pairs to merge.
        pull: encoded full keys the sender lacks.
    """

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    push: tuple[tuple[bytes, bytes], ...] = attrs.field(validator=_check_objects)
    pull: tuple[bytes, ...] = attrs.field(validator=_check_keys)


@final
@attrs.frozen(kw_only=True)
class RepairReply:
    """The responder's objects for the pulled keys (and merges it improved).

    Attributes:
        objects: ``(encoded full key, encoded object)`` pairs: pulled keys the
            responder holds, and pushed keys whose merge there held more than
            the pushed object.
        remaining: pulled keys left out to stay within the byte budget.
    """

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    objects: tuple[tuple[bytes, bytes], ...] = attrs.field(validator=_check_objects)
    remaining: tuple[bytes, ...] = attrs.field(validator=_check_keys)


@final
@attrs.frozen(kw_only=True)
class SyncRequest:
    """Send me your partition, in key order, from *start* (inclusive).

    Attributes:
        partition_count: the sender's; a peer with another count refuses
            (the same key would live in another partition).
        start: first key of the page; ``None`` for the beginning.
    """

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    partition_count: int = attrs.field(validator=_check_positive)
    start: bytes | None = attrs.field(validator=_check_optional_key)


@final
@attrs.frozen(kw_only=True)
class SyncReply:
    """One page of a partition.

    Attributes:
        objects: ``(encoded full key, encoded object)`` pairs in key order.
        resume: the first key of the next page, or ``None`` after the last.
    """

    request_id: int = attrs.field(validator=_check_count)
    partition: int = attrs.field(validator=_check_count)
    objects: tuple[tuple[bytes, bytes], ...] = attrs.field(validator=_check_objects)
    resume: bytes | None = attrs.field(validator=_check_optional_key)


AntiEntropyMessage: TypeAlias = (
    RootRequest
    | NodesRequest
    | SegmentsRequest
    | RootReply
    | NodesReply
    | SegmentsReply
    | ExchangeRefused
    | RepairRequest
    | RepairReply
    | SyncRequest
    | SyncReply
)

MESSAGE_TYPES: Final[tuple[type, ...]] = (
    RootRequest,
    NodesRequest,
    SegmentsRequest,
    RootReply,
    NodesReply,
    SegmentsReply,
    ExchangeRefused,
    RepairRequest,
    RepairReply,
    SyncRequest,
    SyncReply,
)
"""The anti-entropy wire contract: a message's position is its number (append
only), for ``runtime.core.codec.MessageCodec``."""
