"""Node specs and channel specs: what the cluster may learn about a node.

Pure values (no I/O), so protocol cores can carry them in messages: a membership
protocol hands a peer's :class:`NodeSpec` around so others can dial it. Secrets
are never in a spec; they live in the node's local ``NodeConfig``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

import attrs

from runtime.ref import validate_node_name

__all__ = [
    "DEFAULT_CHANNELS",
    "NODE_ROLES",
    "ChannelSpec",
    "NodeSpec",
    "with_default_channels",
]


def _check_name(_instance: object, _attribute: object, value: str) -> None:
    validate_node_name(value)


@final
@attrs.frozen(kw_only=True)
class ChannelSpec:
    """A named channel: its own connections to every peer.

    Attributes:
        name: the channel's name; ``default`` carries user messages.
        parallelism: connections per peer on this channel. Messages are spread
            over them by partition key (by default the sender), so one sender's
            messages to one receiver stay in order.
        monotonic: under backlog keep only the newest queued message per
            partition key (for state snapshots such as positions); refusal by
            ``overloaded`` does not apply, since superseded messages are dropped.
        send_queue_bytes_max: bytes that may wait per connection before ``send``
            refuses with ``overloaded`` (backpressure). 8 MiB absorbs a burst of
            tens of thousands of small messages or a few large ones.
    """

    name: str
    parallelism: int = attrs.field(default=1)
    monotonic: bool = False
    send_queue_bytes_max: int = 8 * 1024 * 1024

    @parallelism.validator
    def _check_parallelism(self, _attribute: object, value: int) -> None:
        if not 1 <= value <= 64:
            raise ValueError(f"parallelism must be 1..64, not {value}")


DEFAULT_CHANNELS: Final = (
    ChannelSpec(name="default"),
    ChannelSpec(name="membership"),
    ChannelSpec(name="broadcast"),
    ChannelSpec(name="rpc"),
)


def with_default_channels(value: Iterable[ChannelSpec]) -> tuple[ChannelSpec, ...]:
    """The four default channels, overridden or extended by *value*."""
    channels = {spec.name: spec for spec in DEFAULT_CHANNELS}
    for spec in value:
        channels[spec.name] = spec
    return tuple(channels.values())


def _addresses(value: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    return tuple((str(host), int(port)) for host, port in value)


NODE_ROLES: Final = ("peer", "server", "client")
"""``peer`` for every strategy but client/server, whose nodes are one of the others."""


@final
@attrs.frozen(kw_only=True)
class NodeSpec:
    """What the cluster knows of a node: name, listen addresses, channels, role.

    ``role`` matters only to the ``client_server`` strategy: clients link only
    to servers, servers to everyone.
    """

    name: str = attrs.field(validator=_check_name)
    addresses: tuple[tuple[str, int], ...] = attrs.field(converter=_addresses)
    channels: tuple[ChannelSpec, ...] = attrs.field(
        default=DEFAULT_CHANNELS, converter=with_default_channels
    )
    role: str = attrs.field(default="peer")

    @role.validator
    def _check_role(self, _attribute: object, value: str) -> None:
        if value not in NODE_ROLES:
            raise ValueError(f"role must be one of {NODE_ROLES}, not {value!r}")

    def channel(self, name: str) -> ChannelSpec | None:
        for spec in self.channels:
            if spec.name == name:
                return spec
        return None
