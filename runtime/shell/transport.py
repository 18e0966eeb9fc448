"""The channelled transport: listening, dialling, handshakes, readers and writers.

Theory of operation
-------------------
Each node *dials* every peer once per (channel, connection index) and sends only on
the connections it dialled; it *receives* only on the connections it accepted. So
there is no simultaneous-connect race to break, each direction of each channel has
its own TCP connection (a bulk channel cannot block the default one), and the
messages one node sends another on one connection arrive in order.

A dial loop owns one :class:`OutboundConnection` slot. It connects, wraps TLS if
configured, runs the handshake core (``core/handshake.py``) under a timeout, then
runs the slot's writer beside a watcher that notices the peer closing. When either
fails the slot is detached (queued frames counted as dropped, ``send`` refuses with
``disconnected``) and the loop dials again after an exponential backoff with
jitter, until the peer is removed.

An accepted connection runs TLS and the handshake with a frame limit of
``HANDSHAKE_FRAME_BYTES_MAX``, then raises the limit to ``frame_bytes_max`` and
feeds every frame to the node's router. A protocol error (bad frame, oversized
frame, refused tag, failed handshake) closes that one connection with a logged
reason; frames routed before it stay delivered, and the node serves on.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, final

import trio

from runtime.config import ChannelSpec, NodeConfig, NodeSpec
from runtime.core.framing import HANDSHAKE_FRAME_BYTES_MAX, FrameDecoder
from runtime.core.handshake import (
    NONCE_BYTES,
    Established,
    Handshake,
    PeerIdentity,
    Role,
    SendBody,
)
from runtime.errors import (
    FrameTooLarge,
    HandshakeError,
    MessageRefused,
    ProtocolError,
)
from runtime.ref import node_host
from runtime.shell.connection import ConnectionState, OutboundConnection, SendStatus
from runtime.shell.network import Address, Listener, Network
from runtime.wire import Decoder, encode_frame

__all__ = ["FaultFilter", "Transport", "TransportListener"]

log = logging.getLogger("runtime.transport")

# Bytes asked of the kernel per read: about 430 small frames. Larger reads cost
# more per call on this kind of machine (the buffer is allocated per call, and
# past 128 KiB glibc maps fresh pages), which small messages pay for.
RECEIVE_BYTES: Final = 64 * 1024

# What a failing connection may raise; each closes that connection only.
_CONNECTION_ERRORS: Final = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    ssl.SSLError,
    ProtocolError,
)

Route = Callable[[int, Any, Any, Any, Any], None]


class TransportListener(Protocol):
    """Who hears about connection changes (the membership service).

    Called synchronously from the dial loops; must not block or raise.
    """

    def slot_up(self, slot: OutboundConnection) -> None:
        """Our connection *slot* (peer, channel, index) completed its handshake."""
        ...

    def slot_down(self, slot: OutboundConnection, reason: str) -> None:
        """That connection, once up, is gone (also when we closed it)."""
        ...

    def dial_failed(self, slot: OutboundConnection, reason: str) -> None:
        """A dial of *slot* failed before it came up."""
        ...


class FaultFilter(Protocol):
    """Injected faults the transport must honour (runtime/shell/faults.py)."""

    def partitioned(self, node: str) -> bool:
        """Whether all traffic with *node* is cut."""
        ...

    def filter_received(self, node: str, route: Route, envelope: list[Any]) -> None:
        """Route *envelope* from *node* through the receive interpositions."""
        ...


class ConnectionLost(Exception):
    """The peer closed a connection we only write to."""


@final
class _Peer:
    """What the transport keeps per peer: its spec and its outgoing slots."""

    __slots__ = ("channels", "creation", "dial_scope", "nursery", "spec")

    def __init__(self, spec: NodeSpec, channels: dict[str, list[OutboundConnection]]):
        self.spec = spec
        self.channels = channels
        self.creation: int | None = None
        self.dial_scope = trio.CancelScope()
        # The nursery of the peer's dial loops, once they run.
        self.nursery: trio.Nursery | None = None


@final
class Transport:
    """Connections of one node to its peers, on every channel.

    Resource handling: all tasks run in the nursery given to :meth:`start`;
    cancelling it closes every connection and listener.
    """

    def __init__(
        self,
        *,
        config: NodeConfig,
        creation: int,
        network: Network,
        route: Route,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.name = config.name
        self.creation = creation
        self.network = network
        self._route = route
        self._rng = rng
        self._channel_names = frozenset(spec.name for spec in config.channels)
        self.peers: dict[str, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self._listener: Listener | None = None
        self.address: Address | None = None
        # Replaced on every connection state change; waiters re-check and loop.
        self._changed = trio.Event()
        self.accepted_count = 0
        self.inbound_open_count = 0
        self.protocol_errors_count = 0
        self.handshake_failures_count = 0
        self.frames_received_count = 0
        self.refused_messages_count = 0
        # Frames received per peer node: the failure detector's "heard from".
        self.heard: dict[str, int] = {}
        self.listener: TransportListener | None = None
        # Injected faults, or None (the common case: one attribute test).
        self.faults: FaultFilter | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self, nursery: trio.Nursery) -> Address:
        """Bind the listener and start accepting; returns the bound address."""
        self._nursery = nursery
        listener, address = await self.network.listen(
            self.config.listen, local_name=self.name
        )
        self._listener = listener
        self.address = address
        if self.config.tls is None:
            log.warning(
                "node %s: the peer plane is PLAINTEXT on %s:%d (no TLS configured);"
                " only the HMAC handshake protects it",
                self.name,
                *address,
            )
        nursery.start_soon(self._accept_loop, listener)
        # The configured peers are the membership service's business (seeds,
        # or the static member list): it connects to them.
        return address

    async def aclose(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --------------------------------------------------------------------- peers

    def add_peer(self, spec: NodeSpec, channels: Iterable[str] | None = None) -> None:
        """Start dialling *spec* on every channel, or only on *channels*
        (replacing an older spec). Adding a known peer with more channels
        dials the missing ones: the membership layer opens only the
        ``membership`` channel to a node it merely talks to, and the rest
        once the node becomes a neighbour."""
        if spec.name == self.name:
            return
        wanted = [
            channel
            for channel in self.config.channels
            if channels is None or channel.name in channels
        ]
        old = self.peers.get(spec.name)
        if old is not None:
            if old.spec == spec:
                self._add_channels(old, wanted)
                return
            self.remove_peer(spec.name)
        peer = _Peer(spec, {})
        self._add_channels(peer, wanted)
        self.peers[spec.name] = peer
        assert self._nursery is not None, "add_peer before start"
        self._nursery.start_soon(self._run_peer, peer, name=f"peer {spec.name}")

    def _add_channels(self, peer: _Peer, wanted: list[ChannelSpec]) -> None:
        for channel in wanted:
            if channel.name in peer.channels:
                continue
            slots = [
                OutboundConnection(
                    peer=peer.spec.name,
                    channel=channel.name,
                    index=index,
                    monotonic=channel.monotonic,
                    queued_bytes_max=channel.send_queue_bytes_max,
                )
                for index in range(channel.parallelism)
            ]
            peer.channels[channel.name] = slots
            if peer.nursery is not None:
                for slot in slots:
                    peer.nursery.start_soon(self._dial_loop, peer, slot)

    def channels_of(self, name: str) -> list[str]:
        """The channels we dial *name* on (empty if it is not a peer)."""
        peer = self.peers.get(name)
        return list(peer.channels) if peer is not None else []

    def remove_peer(self, name: str) -> None:
        """Stop dialling *name* and close its connections."""
        peer = self.peers.pop(name, None)
        if peer is None:
            return
        peer.dial_scope.cancel()
        for slots in peer.channels.values():
            for slot in slots:
                slot.detach("peer removed", closed=True)
        self._notify()

    def reset_peer(self, name: str) -> None:
        """Close every connection to *name* and dial it afresh (it went silent)."""
        peer = self.peers.get(name)
        if peer is not None:
            self.remove_peer(name)
            self.add_peer(peer.spec, list(peer.channels))

    def slot(
        self, node: str, channel: str, key: object
    ) -> OutboundConnection | SendStatus:
        """The connection that carries *key*'s messages to *node* on *channel*."""
        peer = self.peers.get(node)
        if peer is None:
            return SendStatus.NO_ROUTE
        slots = peer.channels.get(channel)
        if slots is None:
            return SendStatus.NO_ROUTE
        if len(slots) == 1:
            return slots[0]
        return slots[hash(key) % len(slots)]

    def is_connected(self, node: str, channel: str | None = None) -> bool:
        peer = self.peers.get(node)
        if peer is None:
            return False
        channels = (
            peer.channels.values()
            if channel is None
            else ([peer.channels[channel]] if channel in peer.channels else [])
        )
        return any(
            slot.state is ConnectionState.CONNECTED
            for slots in channels
            for slot in slots
        )

    def is_fully_connected(self, node: str) -> bool:
        peer = self.peers.get(node)
        return peer is not None and all(
            slot.state is ConnectionState.CONNECTED
            for slots in peer.channels.values()
            for slot in slots
        )

    async def wait_changed(self) -> None:
        await self._changed.wait()

    # ------------------------------------------------------------------ dialling

    async def _run_peer(self, peer: _Peer) -> None:
        with peer.dial_scope:
            async with trio.open_nursery() as nursery:
                peer.nursery = nursery
                for slots in list(peer.channels.values()):
                    for slot in slots:
                        nursery.start_soon(self._dial_loop, peer, slot)

    async def _dial_loop(self, peer: _Peer, slot: OutboundConnection) -> None:
        config = self.config
        backoff = config.reconnect_backoff_min
        while True:
            started = trio.current_time()
            reason, established = await self._connect_once(peer, slot)
            listener = self.listener
            if listener is not None and not established:
                listener.dial_failed(slot, reason)
            if trio.current_time() - started > 1.0 and slot.connects_count:
                # The connection lived a while: a fresh failure, not a storm.
                backoff = config.reconnect_backoff_min
            delay = backoff * (0.5 + self._rng.random())
            log.debug(
                "dial %s/%s: %s; retry in %.3fs",
                peer.spec.name,
                slot.channel,
                reason,
                delay,
            )
            await trio.sleep(delay)
            backoff = min(backoff * 2, config.reconnect_backoff_max)

    async def _connect_once(
        self, peer: _Peer, slot: OutboundConnection
    ) -> tuple[str, bool]:
        """One connection's life; returns why it ended, and whether it was up."""
        config = self.config
        name = peer.spec.name
        stream: trio.abc.Stream | None = None
        identity: PeerIdentity | None = None
        try:
            faults = self.faults
            if faults is not None and faults.partitioned(name):
                raise OSError(f"partitioned from {name} (injected fault)")
            stream = await self._dial(peer.spec)
            stream = await self._start_tls(stream, peer=name)
            handshake = Handshake(
                role=Role.INITIATOR,
                node=self.name,
                creation=self.creation,
                keyring=config.secret,
                nonce=secrets.token_bytes(NONCE_BYTES),
                channel=slot.channel,
                index=slot.index,
                expected_peer=name,
            )
            decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
            with trio.fail_after(config.handshake_timeout):
                identity, _ = await self._run_handshake(stream, handshake, decoder)
        except _CONNECTION_ERRORS as exc:
            reason = _describe(exc)
            if isinstance(exc, ProtocolError):
                self.handshake_failures_count += 1
                log.warning(
                    "connection to %s/%s refused: %s", name, slot.channel, reason
                )
            else:
                log.debug("connect to %s/%s failed: %s", name, slot.channel, reason)
            if stream is not None and isinstance(exc, HandshakeError):
                await _send_reject(stream, exc)
            return reason, False
        finally:
            # Any way out before the connection is established (a failure, or
            # the node stopping mid-handshake) closes the stream.
            if identity is None and stream is not None:
                await _close_quietly(stream)
        assert stream is not None
        if peer.creation != identity.creation:
            if peer.creation is not None:
                log.info(
                    "peer %s restarted (creation %s -> %s)",
                    name,
                    peer.creation,
                    identity.creation,
                )
            peer.creation = identity.creation
        direct_fd = (
            stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        )
        slot.attach(direct_fd=direct_fd)
        self._notify()
        log.debug("connected to %s/%s[%d]", name, slot.channel, slot.index)
        reason = "closed locally"
        if self.listener is not None:
            self.listener.slot_up(slot)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slot.run_writer, stream, config.write_timeout)
                nursery.start_soon(self._watch_eof, stream)
        except* _CONNECTION_ERRORS as group:
            reason = _describe(group.exceptions[0])
        except* ConnectionLost:
            reason = "peer closed the connection"
        finally:
            slot.detach(reason)
            self._notify()
            # Reported here, not by the dial loop: a removed or reset peer's
            # connection ends by cancellation and never returns.
            if self.listener is not None:
                self.listener.slot_down(slot, reason)
            await _close_quietly(stream)
        log.info(
            "connection to %s/%s[%d] lost: %s", name, slot.channel, slot.index, reason
        )
        return reason, True

    async def _start_tls(
        self, stream: trio.abc.Stream, *, peer: str | None
    ) -> trio.abc.Stream:
        """Wrap *stream* in TLS when configured: as client when dialling *peer*,
        as server when *peer* is None. The TLS handshake has its own timeout.

        Resource handling: on failure the caller still owns (and closes) the
        raw *stream*.
        """
        tls = self.config.tls
        if tls is None:
            return stream
        if peer is None:
            ssl_stream = trio.SSLStream(stream, tls.server, server_side=True)
        else:
            ssl_stream = trio.SSLStream(
                stream,
                tls.client,
                server_hostname=tls.server_hostname or node_host(peer),
            )
        with trio.fail_after(tls.handshake_timeout):
            await ssl_stream.do_handshake()
        return ssl_stream

    async def _dial(self, spec: NodeSpec) -> trio.abc.Stream:
        errors: list[OSError] = []
        for address in spec.addresses:
            try:
                return await self.network.connect(
                    (address[0], address[1]), local_name=self.name
                )
            except OSError as exc:
                errors.append(exc)
        if not errors:
            raise OSError(f"node {spec.name} has no addresses")
        raise errors[-1]

    async def _watch_eof(self, stream: trio.abc.Stream) -> None:
        # The acceptor sends nothing after its Ready: any byte is a violation.
        data = await stream.receive_some(RECEIVE_BYTES)
        if data:
            raise ProtocolError("peer sent data on a connection it accepted")
        raise ConnectionLost

    # ----------------------------------------------------------------- accepting

    async def _accept_loop(self, listener: Listener) -> None:
        assert self._nursery is not None
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:
                # EMFILE and friends: log, pause, keep serving.
                log.error("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            self.accepted_count += 1
            self._nursery.start_soon(self._serve_inbound, stream)

    async def _serve_inbound(self, stream: trio.abc.Stream) -> None:
        config = self.config
        peer_name = "?"
        handshake: Handshake | None = None
        self.inbound_open_count += 1
        try:
            stream = await self._start_tls(stream, peer=None)
            handshake = Handshake(
                role=Role.ACCEPTOR,
                node=self.name,
                creation=self.creation,
                keyring=config.secret,
                nonce=secrets.token_bytes(NONCE_BYTES),
                channels=self._channel_names,
            )
            decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
            with trio.fail_after(config.handshake_timeout):
                identity, leftover = await self._run_handshake(
                    stream, handshake, decoder
                )
            peer_name = f"{identity.node}/{identity.channel}[{identity.index}]"
            faults = self.faults
            if faults is not None and faults.partitioned(identity.node):
                raise OSError("partitioned (injected fault)")
            decoder.frame_bytes_max = config.frame_bytes_max
            await self._read_loop(
                stream, decoder, leftover, peer_name, node=identity.node
            )
        except HandshakeError as exc:
            self.handshake_failures_count += 1
            claimed = handshake.peer_node if handshake is not None else None
            log.warning(
                "refused inbound connection from %s: %s", claimed or peer_name, exc
            )
            await _send_reject(stream, exc)
        except ProtocolError as exc:
            self.protocol_errors_count += 1
            log.warning("closing inbound connection from %s: %s", peer_name, exc)
        except _CONNECTION_ERRORS as exc:
            log.info("inbound connection from %s ended: %s", peer_name, _describe(exc))
        finally:
            self.inbound_open_count -= 1
            await _close_quietly(stream)

    async def _read_loop(
        self,
        stream: trio.abc.Stream,
        decoder: FrameDecoder,
        leftover: list[bytes],
        peer: str,
        *,
        node: str,
    ) -> None:
        """The inbound hot path: bytes -> frames -> envelopes -> router."""
        decode = Decoder(refs_as_uri=self.config.refs_as_uri).decode_envelope
        route = self._route
        feed = decoder.feed
        receive = stream.receive_some
        heard = self.heard
        bodies = leftover
        try:
            while True:
                faults = self.faults
                for body in bodies:
                    try:
                        kind, target, sender, ref, payload = decode(body)
                    except MessageRefused as exc:
                        # Only this message is bad; the stream is still in step.
                        self.refused_messages_count += 1
                        log.warning("dropped a message from %s: %s", peer, exc)
                        continue
                    if faults is None:
                        route(kind, target, sender, ref, payload)
                    else:
                        faults.filter_received(
                            node, route, [kind, target, sender, ref, payload]
                        )
                self.frames_received_count += len(bodies)
                if bodies:
                    if faults is None or not faults.partitioned(node):
                        heard[node] = heard.get(node, 0) + len(bodies)
                    # Let the processes we just woke run before we go back to
                    # the socket: their replies are the latency path. Twice,
                    # since trio may run a batch in either order.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    await trio.lowlevel.cancel_shielded_checkpoint()
                data = await receive(RECEIVE_BYTES)
                if not data:
                    return
                try:
                    bodies = feed(data)
                except FrameTooLarge as exc:
                    # Deliver the whole frames ahead of the bad header first.
                    bodies = exc.bodies
                    for body in bodies:
                        with contextlib.suppress(MessageRefused):
                            route(*decode(body))
                    self.frames_received_count += len(bodies)
                    raise
        except TypeError as exc:
            # An unhashable target or sender field: the envelope's schema is wrong.
            raise ProtocolError(f"malformed envelope: {exc}") from None

    # ----------------------------------------------------------------- handshake

    async def _run_handshake(
        self, stream: trio.abc.Stream, handshake: Handshake, decoder: FrameDecoder
    ) -> tuple[PeerIdentity, list[bytes]]:
        """Drive the handshake core over *stream*; returns the peer and any frames
        that arrived behind the last handshake message."""
        body_decoder = Decoder(strict=True)
        effects = handshake.start() if handshake.role is Role.INITIATOR else []
        bodies: list[bytes] = []
        consumed = 0
        while True:
            identity: PeerIdentity | None = None
            for effect in effects:
                match effect:
                    case SendBody(body=body):
                        await stream.send_all(encode_frame(body))
                    case Established(peer=peer):
                        identity = peer
            if identity is not None:
                return identity, bodies[consumed:]
            data = await stream.receive_some(HANDSHAKE_FRAME_BYTES_MAX)
            if not data:
                raise ProtocolError("peer closed the connection during the handshake")
            bodies = decoder.feed(data)
            effects = []
            consumed = 0
            while consumed < len(bodies) and not handshake.done:
                effects += handshake.on_body(body_decoder.decode(bodies[consumed]))
                consumed += 1
            faults = self.faults
            claimed = handshake.peer_node
            if faults is not None and claimed and faults.partitioned(claimed):
                # Refuse before the peer sees the connection come up, so a
                # partitioned peer never flaps up and down.
                raise OSError(f"partitioned from {claimed} (injected fault)")


async def _send_reject(stream: trio.abc.Stream, error: HandshakeError) -> None:
    """Tell the peer why we refuse it (best effort), so both sides log it."""
    if error.reply is None:
        return
    with trio.move_on_after(1.0), contextlib.suppress(*_CONNECTION_ERRORS):
        await stream.send_all(encode_frame(error.reply))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return (
        f"{type(exc).__name__}: {text}" if not isinstance(exc, ProtocolError) else text
    )


async def _close_quietly(stream: trio.abc.Stream) -> None:
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(1.0),
        contextlib.suppress(*_CONNECTION_ERRORS),
    ):
        await stream.aclose()
