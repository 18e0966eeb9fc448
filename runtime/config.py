"""Node configuration: channels, node specs, TLS, and every limit, named.

A :class:`NodeSpec` is what other nodes may learn about a node (it is gossiped by
the membership layer): its name, where it listens and its channels. Secrets are
never in it. A :class:`NodeConfig` is a node's own local configuration: its spec's
inputs plus the keyring, TLS, limits and the static peer list.

Each limit is a knob with a default and the reason for it (STYLE.md, "put a limit
on everything, and name it").
"""

from __future__ import annotations

import ssl
from typing import Final, final

import attrs

from runtime.core.failure_detector import FailureDetectorConfig
from runtime.core.framing import FRAME_BYTES_MAX_DEFAULT
from runtime.core.full_mesh import FullMeshConfig
from runtime.core.handshake import Keyring
from runtime.core.hyparview import HyParViewConfig
from runtime.core.spec import (
    DEFAULT_CHANNELS,
    ChannelSpec,
    NodeSpec,
    with_default_channels,
)
from runtime.ref import validate_node_name

__all__ = [
    "DEFAULT_CHANNELS",
    "STRATEGIES",
    "ChannelSpec",
    "FailureDetectorConfig",
    "FullMeshConfig",
    "HyParViewConfig",
    "MembershipConfig",
    "NodeConfig",
    "NodeSpec",
    "TLSConfig",
]


def _check_name(_instance: object, _attribute: object, value: str) -> None:
    validate_node_name(value)


@final
@attrs.frozen(kw_only=True)
class TLSConfig:
    """TLS for the peer plane, with separate server and client sides.

    Mutual authentication: give the server context ``verify_mode =
    CERT_REQUIRED`` and a CA, and the client context a certificate chain.
    An HMAC handshake still runs inside TLS: TLS proves which node, the
    keyring proves membership of the cluster.

    Attributes:
        server: context for connections we accept.
        client: context for connections we dial.
        server_hostname: name to verify in the server's certificate; ``None``
            uses the host part of the peer's node name.
        handshake_timeout: seconds before an unfinished TLS handshake is dropped.
    """

    server: ssl.SSLContext
    client: ssl.SSLContext
    server_hostname: str | None = None
    handshake_timeout: float = 10.0

    @classmethod
    def from_files(
        cls,
        *,
        ca_file: str,
        cert_file: str,
        key_file: str,
        mutual: bool = True,
        server_hostname: str | None = None,
    ) -> TLSConfig:
        """Both contexts from PEM files of a private CA and this node's cert."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
        server.load_cert_chain(cert_file, key_file)
        if mutual:
            server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        client.load_cert_chain(cert_file, key_file)
        return cls(server=server, client=client, server_hostname=server_hostname)


STRATEGIES: Final = ("full_mesh", "hyparview", "static", "client_server")
"""The membership strategies a node can run (``MembershipConfig.strategy``)."""


@final
@attrs.frozen(kw_only=True)
class MembershipConfig:
    """How a node finds and watches its peers.

    Attributes:
        strategy: ``full_mesh`` (every node links to every other; membership
            is an add-wins map gossiped by all), ``hyparview`` (partial views,
            for clusters of hundreds to thousands), ``static`` (exactly the
            configured peers), ``client_server`` (full-mesh membership; clients
            link only to servers, servers to everyone; set ``NodeConfig.role``).
            ``NodeConfig.peers`` are the seeds joined at start (the fixed
            member list for ``static``).
        full_mesh, hyparview: the strategies' own knobs.
        failure_detector: heartbeat interval and timeout (see
            ``docs/operations.md``, Failure detection).
        join_retry_interval: seconds between joins through the seeds while
            this node has no neighbour (a seed was not up yet, or we were
            cut off). 2 s: a restarted cluster assembles within seconds
            without hammering a seed that is down.
        disconnect_timeout: seconds a graceful disconnect waits for queued
            messages to leave before it closes anyway.
    """

    strategy: str = attrs.field(default="full_mesh")
    full_mesh: FullMeshConfig = attrs.field(factory=FullMeshConfig)
    hyparview: HyParViewConfig = attrs.field(factory=HyParViewConfig)
    failure_detector: FailureDetectorConfig = attrs.field(factory=FailureDetectorConfig)
    join_retry_interval: float = 2.0
    disconnect_timeout: float = 5.0

    @strategy.validator
    def _check_strategy(self, _attribute: object, value: str) -> None:
        if value not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {value!r}")


def _keyring(value: Keyring | str | bytes) -> Keyring:
    return value if isinstance(value, Keyring) else Keyring.from_secret(value)


@final
@attrs.frozen(kw_only=True)
class NodeConfig:
    """A node's local configuration.

    Attributes:
        name: ``name@host``.
        listen: ``(host, port)`` to listen on; port 0 picks a free port. We
            listen on the given interface only, never on every address.
        secret: the cluster keyring (or one secret).
        channels: channels beyond (or overriding) the four defaults.
        peers: static membership: the specs of the nodes to connect to.
        tls: TLS for the peer plane, or ``None`` for plaintext (logged loudly).
        frame_bytes_max: largest frame accepted after the handshake.
        handshake_timeout: seconds for a connection to complete the hello.
        write_timeout: a peer that accepts no bytes for this long is
            disconnected, so no queue waits on it forever.
        reconnect_backoff_min / reconnect_backoff_max: seconds between dial
            attempts, doubling from min to max (with jitter).
        mailbox_length_max: bound on queued messages per process; ``None`` is
            unbounded, as in Erlang. Overflow drops the new message, counted
            and logged (rate-limited).
        refs_as_uri: references inside received payloads arrive as URI strings
            instead of Pid / Ref / Name objects.
        membership: the membership strategy and failure detection.
        role: this node's role for ``client_server`` (``server`` or
            ``client``); ``peer`` otherwise.
    """

    name: str = attrs.field(validator=_check_name)
    listen: tuple[str, int] = ("127.0.0.1", 0)
    secret: Keyring = attrs.field(converter=_keyring)
    channels: tuple[ChannelSpec, ...] = attrs.field(
        default=(), converter=with_default_channels
    )
    peers: tuple[NodeSpec, ...] = attrs.field(
        default=(), converter=tuple[NodeSpec, ...]
    )
    tls: TLSConfig | None = None
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    handshake_timeout: float = 5.0
    write_timeout: float = 30.0
    reconnect_backoff_min: float = 0.05
    reconnect_backoff_max: float = 5.0
    mailbox_length_max: int | None = None
    refs_as_uri: bool = False
    membership: MembershipConfig = attrs.field(factory=MembershipConfig)
    role: str = "peer"

    def channel(self, name: str) -> ChannelSpec | None:
        for spec in self.channels:
            if spec.name == name:
                return spec
        return None
