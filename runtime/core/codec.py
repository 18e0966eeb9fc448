"""Protocol messages (attrs values) to and from plain CBOR data, by annotation.

Cores speak in attrs values (``Join``, ``Gossip``, ``MembershipState``...); the
wire carries plain CBOR. A :class:`MessageCodec` is built from a protocol's
``MESSAGE_TYPES`` tuple, whose order is the wire contract (a message travels as
``[index, field, field, ...]``), and derives a converter per field from the type
annotations once, at construction:

==============================  ===========================  =====================
annotation                      on the wire                  decoded back to
==============================  ===========================  =====================
``None bool int float str       itself (checked exactly:     itself
bytes``                         a bool is not an int)
``NodeSpec``                    ``[name, addrs, chans,       ``NodeSpec``
                                role]``
an ``enum.Enum``                its value                    the member
``tuple[X, ...]`` /             array                        tuple, each converted
``tuple[A, B]``
``X | None``                    either                       either
an attrs class in the list      ``[field, ...]``             the class
``object`` / ``Hashable``       plain data as is             as is / lists frozen
                                                             into tuples
==============================  ===========================  =====================

Decoding is strict and never raises anything but :class:`MessageRefused`: a
wrong type, a wrong arity, an unknown index or a value an attrs validator
rejects all refuse the one message, which the driver counts and drops. No class
is ever looked up by a name taken from the wire: only the classes given at
construction can be built.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final, Union, final

import attrs

from runtime.core.spec import ChannelSpec, NodeSpec
from runtime.errors import MessageRefused

__all__ = ["MessageCodec"]

Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]

# Bounds on what a decoded NodeSpec may hold; far above any real node.
_ADDRESSES_MAX: Final = 16
_CHANNELS_MAX: Final = 64


def _exact(kind: type) -> tuple[Encode, Decode]:
    def decode(value: Any) -> Any:
        if type(value) is not kind:
            raise MessageRefused(
                f"expected {kind.__name__}, got {type(value).__name__}"
            )
        return value

    return _identity, decode


def _identity(value: Any) -> Any:
    return value


def _decode_float(value: Any) -> float:
    if type(value) not in (int, float):
        raise MessageRefused(f"expected a number, got {type(value).__name__}")
    return float(value)


def _freeze(value: Any) -> Any:
    """Lists from the wire become tuples, so a decoded id is hashable."""
    if type(value) is list:
        return tuple(_freeze(item) for item in value)
    if type(value) is dict:
        raise MessageRefused("a map cannot be an id")
    return value


def _encode_spec(spec: NodeSpec) -> list[Any]:
    return [
        spec.name,
        [[host, port] for host, port in spec.addresses],
        [
            [c.name, c.parallelism, c.monotonic, c.send_queue_bytes_max]
            for c in spec.channels
        ],
        spec.role,
    ]


def _decode_spec(value: Any) -> NodeSpec:
    if type(value) is not list or len(value) != 4:
        raise MessageRefused("a node spec is [name, addresses, channels, role]")
    name, addresses, channels, role = value
    if type(addresses) is not list or len(addresses) > _ADDRESSES_MAX:
        raise MessageRefused("bad node spec addresses")
    if type(channels) is not list or len(channels) > _CHANNELS_MAX:
        raise MessageRefused("bad node spec channels")
    try:
        parsed_addresses = []
        for address in addresses:
            host, port = address
            if type(host) is not str or type(port) is not int:
                raise MessageRefused("an address is [host, port]")
            parsed_addresses.append((host, port))
        parsed_channels = []
        for channel in channels:
            channel_name, parallelism, monotonic, queue_max = channel
            if (
                type(channel_name) is not str
                or type(parallelism) is not int
                or type(monotonic) is not bool
                or type(queue_max) is not int
            ):
                raise MessageRefused("a channel is [name, parallelism, monotonic, max]")
            parsed_channels.append(
                ChannelSpec(
                    name=channel_name,
                    parallelism=parallelism,
                    monotonic=monotonic,
                    send_queue_bytes_max=queue_max,
                )
            )
        if type(name) is not str or type(role) is not str:
            raise MessageRefused("a node spec's name and role are strings")
        return NodeSpec(
            name=name, addresses=parsed_addresses, channels=parsed_channels, role=role
        )
    except MessageRefused:
        raise
    except (TypeError, ValueError) as exc:
        raise MessageRefused(f"bad node spec: {exc}") from None


@final
class MessageCodec:
    """Converts the messages of one protocol to plain data and back.

    Args:
        message_types: the protocol's ``MESSAGE_TYPES``; the position of a class
            is its wire number, so the tuple may only grow at the end. Attrs
            classes nested inside messages must be listed too.

    Raises:
        TypeError: a field's annotation is not one the codec can carry (a
            programming error, caught at construction, never per message).
    """

    def __init__(self, message_types: Sequence[type]) -> None:
        self._types = tuple(message_types)
        self._index = {cls: i for i, cls in enumerate(self._types)}
        # Filled lazily per class, since nested classes refer to each other.
        self._fields: dict[type, tuple[tuple[str, Encode, Decode], ...]] = {}
        for cls in self._types:
            self._fields_of(cls)

    @property
    def message_types(self) -> tuple[type, ...]:
        return self._types

    def encode(self, message: object) -> list[Any]:
        """``[index, field...]`` for *message*.

        Raises:
            TypeError: *message* is not one of this codec's types.
        """
        index = self._index.get(type(message))
        if index is None:
            raise TypeError(f"{type(message).__qualname__} is not a known message")
        return [index, *self._encode_fields(message)]

    def decode(self, data: Any) -> object:
        """The message *data* encodes.

        Raises:
            MessageRefused: *data* is not a valid message of this protocol.
        """
        if type(data) is not list or not data or type(data[0]) is not int:
            raise MessageRefused("a protocol message is [index, field...]")
        index = data[0]
        if not 0 <= index < len(self._types):
            raise MessageRefused(f"unknown message number {index}")
        return self._decode_fields(self._types[index], data[1:])

    # -- internals ---------------------------------------------------------

    def _encode_fields(self, message: object) -> list[Any]:
        return [
            encode(getattr(message, name))
            for name, encode, _ in self._fields[type(message)]
        ]

    def _decode_fields(self, cls: type, values: Any) -> object:
        fields = self._fields[cls]
        if type(values) is not list or len(values) != len(fields):
            raise MessageRefused(f"{cls.__name__} takes {len(fields)} fields")
        kwargs = {
            name: decode(value)
            for (name, _, decode), value in zip(fields, values, strict=True)
        }
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise MessageRefused(f"invalid {cls.__name__}: {exc}") from None

    def _fields_of(self, cls: type) -> tuple[tuple[str, Encode, Decode], ...]:
        fields = self._fields.get(cls)
        if fields is not None:
            return fields
        if not attrs.has(cls):
            raise TypeError(f"{cls.__qualname__} is not an attrs class")
        hints = typing.get_type_hints(cls)
        fields = tuple(
            (field.name, *self._converter(hints[field.name]))
            for field in attrs.fields(cls)
        )
        self._fields[cls] = fields
        return fields

    def _converter(self, annotation: Any) -> tuple[Encode, Decode]:
        if annotation is type(None):
            return _exact(type(None))
        if annotation in (bool, int, str, bytes):
            return _exact(annotation)
        if annotation is float:
            return _identity, _decode_float
        if annotation is NodeSpec:
            return _encode_spec, _decode_spec
        if annotation is object or annotation is Any:
            return _identity, _identity
        if annotation is Hashable:
            return _identity, _freeze
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return self._enum(annotation)
        if isinstance(annotation, type) and annotation in self._index:
            return self._nested(annotation)
        origin = typing.get_origin(annotation)
        arguments = typing.get_args(annotation)
        if origin is tuple:
            return self._tuple(arguments)
        if origin in (Union, types.UnionType):
            return self._union(arguments)
        raise TypeError(f"the codec cannot carry a field of type {annotation!r}")

    def _enum(self, kind: type[enum.Enum]) -> tuple[Encode, Decode]:
        def decode(value: Any) -> Any:
            try:
                return kind(value)
            except (ValueError, TypeError):
                raise MessageRefused(f"not a {kind.__name__}: {value!r:.40}") from None

        return (lambda member: member.value), decode

    def _nested(self, cls: type) -> tuple[Encode, Decode]:
        def encode(value: Any) -> Any:
            return self._encode_fields(value)

        def decode(value: Any) -> Any:
            if cls not in self._fields:
                self._fields_of(cls)
            return self._decode_fields(cls, value)

        return encode, decode

    def _tuple(self, arguments: tuple[Any, ...]) -> tuple[Encode, Decode]:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            item_encode, item_decode = self._converter(arguments[0])

            def encode_many(value: Any) -> Any:
                return [item_encode(item) for item in value]

            def decode_many(value: Any) -> Any:
                if type(value) is not list:
                    raise MessageRefused("expected an array")
                return tuple(item_decode(item) for item in value)

            return encode_many, decode_many
        converters = [self._converter(argument) for argument in arguments]

        def encode_fixed(value: Any) -> Any:
            return [enc(item) for (enc, _), item in zip(converters, value, strict=True)]

        def decode_fixed(value: Any) -> Any:
            if type(value) is not list or len(value) != len(converters):
                raise MessageRefused(f"expected an array of {len(converters)}")
            return tuple(
                dec(item) for (_, dec), item in zip(converters, value, strict=True)
            )

        return encode_fixed, decode_fixed

    def _union(self, arguments: tuple[Any, ...]) -> tuple[Encode, Decode]:
        others = [argument for argument in arguments if argument is not type(None)]
        if len(others) != 1 or len(arguments) != 2:
            raise TypeError(f"only X | None unions are carried, not {arguments!r}")
        encode, decode = self._converter(others[0])

        def encode_optional(value: Any) -> Any:
            return None if value is None else encode(value)

        def decode_optional(value: Any) -> Any:
            return None if value is None else decode(value)

        return encode_optional, decode_optional
