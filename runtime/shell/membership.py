"""The membership service: drives a membership core and the failure detector.

Theory of operation
-------------------
One :class:`MembershipService` per node runs the configured strategy's sans-IO
core (``full_mesh``, ``hyparview``, ``static`` or ``client_server``) and the
heartbeat :class:`FailureDetector` for real. It is the only place effects of
those cores are carried out:

========================  ======================================================
effect                    what the service does
========================  ======================================================
``Send``                  encode with the protocol's codec, enqueue a control
                          envelope on the peer's connection; while that
                          connection is still coming up, hold it (bounded) and
                          send it when it is up
``SetTimer/CancelTimer``  one timer task, earliest deadline first
``Connect(spec)``         ``transport.add_peer`` (a new spec replaces the old)
``Disconnect(peer)``      graceful: wait (bounded) until what was queued for the
                          peer has left, then ``transport.remove_peer``
``NeighbourUp/Down``      the peer is (no longer) one we link to
``PeerSilent``            close and redial its connections; it is down
========================  ======================================================

A peer is **up** when it is linked (the core said ``NeighbourUp``) and our
connection to it on the ``membership`` channel is established; it goes **down**
when either stops: a connection lost (a killed peer's kernel resets it at
once), a heartbeat timeout (a hung peer, a silent partition), or removal from
the membership. Every up/down goes through :meth:`_refresh`, the one function
that tells the node (monitors, later broadcast groups) synchronously and user
callbacks (``on_up`` / ``on_down``) through a dispatcher task, so a slow
callback never holds up the membership path (DESIGN.md, what Partisan learned).

Connection events come from the transport (``slot_up`` / ``slot_down`` /
``dial_failed``); the core sees the ones of the ``membership`` channel's
connection: a failed dial after ``Connect`` as ``on_connect_failed`` (once per
``Connect``), an established connection lost as ``on_connection_lost``.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Final, assert_never, final

import attrs
import trio

from runtime.core import hyparview
from runtime.core.codec import MessageCodec
from runtime.core.effects import (
    CancelTimer,
    Connect,
    Disconnect,
    Effect,
    NeighbourDown,
    NeighbourUp,
    Send,
    SetTimer,
)
from runtime.core.failure_detector import (
    MESSAGE_TYPES as HEARTBEAT_TYPES,
)
from runtime.core.failure_detector import (
    FailureDetector,
    FailureDetectorEffect,
    PeerSilent,
)
from runtime.core.membership import MembershipCore
from runtime.core.spec import NodeSpec
from runtime.errors import MessageRefused
from runtime.shell.connection import ConnectionState, OutboundConnection
from runtime.shell.parking import ParkingSpot
from runtime.shell.timers import Timers

if TYPE_CHECKING:
    from runtime.config import MembershipConfig
    from runtime.shell.node import Node

__all__ = [
    "MembershipService",
    "MembershipSnapshot",
    "Subscription",
    "build_membership",
]

log = logging.getLogger("runtime.membership")

MEMBERSHIP_PROTOCOL: Final = "membership"
HEARTBEAT_PROTOCOL: Final = "heartbeat"
MEMBERSHIP_CHANNEL: Final = "membership"
# Control frames held per peer while its connection comes up. A core sends a
# handful per peer; the bound only stops a peer that never connects from
# holding memory.
PENDING_FRAMES_MAX: Final = 256
# Timer owners: the core's timer names are its own, so they are namespaced.
_CORE: Final = "core"
_DETECTOR: Final = "detector"
_SERVICE: Final = "service"
_JOIN_RETRY: Final = "join_retry"


@final
@attrs.frozen
class MembershipSnapshot:
    """The membership as this node sees it, at one version.

    Attributes:
        version: increases on every change of members or of up nodes.
        members: every member known (ourselves included), sorted by name.
        up: the nodes linked and connected now, sorted.
    """

    version: int
    members: tuple[NodeSpec, ...]
    up: tuple[str, ...]


@final
class Subscription:
    """A registered ``on_up`` / ``on_down`` callback; :meth:`cancel` removes it."""

    def __init__(
        self,
        service: MembershipService,
        *,
        up: bool,
        node: str | None,
        fn: Callable[[str], object],
    ) -> None:
        self._service = service
        self.up = up
        self.node = node
        self.fn = fn

    def cancel(self) -> None:
        self._service._subscriptions = [
            s for s in self._service._subscriptions if s is not self
        ]


@final
class MembershipService:
    """Runs one node's membership core and failure detector (see module doc)."""

    def __init__(
        self,
        node: Node,
        config: MembershipConfig,
        core: MembershipCore,
        message_types: Iterable[type],
        *,
        seeds: Iterable[NodeSpec],
    ) -> None:
        self._node = node
        self.config = config
        self.core = core
        self._codec = MessageCodec(tuple(message_types))
        self._heartbeat_codec = MessageCodec(HEARTBEAT_TYPES)
        self.detector = FailureDetector(config.failure_detector)
        self._seeds = [spec for spec in seeds if spec.name != node.name]
        self._nursery: trio.Nursery | None = None
        # Timers, named (owner, name): the core's names are its own.
        self._timers = Timers(self._fire)
        # Control frames waiting for a connection: peer -> [(channel, key, frame)].
        self._pending: dict[str, list[tuple[str, object, bytes]]] = {}
        self._linked: dict[str, NodeSpec] = {}
        self._connected: dict[str, OutboundConnection] = {}
        self._up: dict[str, None] = {}
        # Peers whose failed dial the core was told of since their last Connect.
        self._dial_reported: set[str] = set()
        # Peer -> generation of its latest Connect/Disconnect: a graceful
        # disconnect gives up if a Connect came after it.
        self._generation: dict[str, int] = {}
        self._disconnecting: dict[str, trio.Event] = {}
        self._down_reason: dict[str, str] = {}
        self._heard_seen: dict[str, int] = {}
        self._subscriptions: list[Subscription] = []
        self._events: deque[tuple[bool, str, str]] = deque()
        self._events_spot = ParkingSpot()
        self.version = 0
        self.refused_messages_count = 0
        self.dropped_control_count = 0
        self.callback_errors_count = 0
        self._join_attempts = 0

    # ----------------------------------------------------------------- lifecycle

    def start(self, nursery: trio.Nursery) -> None:
        """Start the core, the detector, the timers and the callback dispatcher."""
        self._nursery = nursery
        nursery.start_soon(self._timers.run, name="membership timers")
        nursery.start_soon(self._run_dispatcher, name="membership callbacks")
        now = trio.current_time()
        self._execute(self.core.start(now))
        self._execute_detector(self.detector.start(now))
        if self._seeds and self.config.strategy != "static":
            self._join_seed(now)
            self._set_timer(
                (_SERVICE, _JOIN_RETRY), now + self.config.join_retry_interval
            )

    def _join_seed(self, now: float) -> None:
        seed = self._seeds[self._join_attempts % len(self._seeds)]
        self._join_attempts += 1
        if self.config.strategy == "hyparview":
            # HyParView joins through one contact; the walk does the rest.
            self._execute(self.core.join(seed, now))
            return
        for spec in self._seeds:
            self._execute(self.core.join(spec, now))

    # ------------------------------------------------------------------- queries

    def members(self) -> list[NodeSpec]:
        return self.core.members()

    def member(self, name: str) -> NodeSpec | None:
        for spec in self.core.members():
            if spec.name == name:
                return spec
        return None

    def up_nodes(self) -> list[str]:
        """Linked and connected nodes, sorted."""
        return sorted(self._up)

    def is_up(self, name: str) -> bool:
        return name in self._up

    def snapshot(self) -> MembershipSnapshot:
        return MembershipSnapshot(
            version=self.version,
            members=tuple(self.core.members()),
            up=tuple(sorted(self._up)),
        )

    # ------------------------------------------------------------------ commands

    def join(self, spec: NodeSpec) -> None:
        """Join the cluster through *spec* (for ``static``: add it)."""
        now = trio.current_time()
        update = getattr(self.core, "update_members", None)
        if self.config.strategy == "static" and update is not None:
            members = {s.name: s for s in self.core.members()}
            members[spec.name] = spec
            self._execute(update(list(members.values()), now))
            return
        self._execute(self.core.join(spec, now))
        self._bump()

    async def leave(self, node: str | None = None) -> None:
        """Leave the cluster (``node`` None or ours), or remove *node* from it.

        Returns once the change was handed to the peers and the links closed
        (bounded by the graceful-disconnect timeout), so a node that leaves
        and then stops has told the others first.
        """
        now = trio.current_time()
        if node is None or node == self._node.name:
            self._execute(self.core.leave(now))
        else:
            remove = getattr(self.core, "remove", None)
            if remove is None:
                raise ValueError(
                    f"the {self.config.strategy} strategy cannot remove other nodes"
                )
            self._execute(remove(node, now))
        self._bump()
        for event in list(self._disconnecting.values()):
            await event.wait()

    def update_members(self, specs: Iterable[NodeSpec]) -> None:
        """Make the membership exactly *specs* plus this node.

        Raises:
            ValueError: the strategy has no such operation (HyParView).
        """
        update = getattr(self.core, "update_members", None)
        if update is None:
            raise ValueError(
                f"the {self.config.strategy} strategy does not take update_members"
            )
        self._execute(update(list(specs), trio.current_time()))
        self._bump()

    def on_up(self, node: str | None, fn: Callable[[str], object]) -> Subscription:
        """Call ``fn(node)`` whenever *node* (any node if None) comes up."""
        subscription = Subscription(self, up=True, node=node, fn=fn)
        self._subscriptions.append(subscription)
        return subscription

    def on_down(self, node: str | None, fn: Callable[[str], object]) -> Subscription:
        """Call ``fn(node)`` whenever *node* (any node if None) goes down."""
        subscription = Subscription(self, up=False, node=node, fn=fn)
        self._subscriptions.append(subscription)
        return subscription

    async def wait_up(self, nodes: Iterable[str]) -> None:
        """Wait until every node in *nodes* is up. Wrap in a timeout."""
        wanted = list(nodes)
        while not all(name in self._up for name in wanted):
            await self._node.transport.wait_changed()

    # ----------------------------------------------------------- control input

    def on_membership_message(self, sender: str, payload: Any) -> None:
        try:
            message = self._codec.decode(payload)
        except MessageRefused as exc:
            self.refused_messages_count += 1
            log.warning("refused a membership message from %s: %s", sender, exc)
            return
        self._execute(self.core.on_message(sender, message, trio.current_time()))
        self._bump()

    def on_heartbeat(self, sender: str, payload: Any) -> None:
        # Hearing anything counts (the transport's per-peer frame counter);
        # the body is checked only so garbage is noticed.
        try:
            self._heartbeat_codec.decode(payload)
        except MessageRefused as exc:
            self.refused_messages_count += 1
            log.warning("refused a heartbeat from %s: %s", sender, exc)

    # ---------------------------------------------------- transport listener

    def slot_up(self, slot: OutboundConnection) -> None:
        peer = slot.peer
        self._flush_pending(peer, slot.channel)
        if slot.channel != MEMBERSHIP_CHANNEL or slot.index != 0:
            # Another channel of a neighbour: it may complete its coming up.
            self._refresh(peer, "")
            return
        self._connected[peer] = slot
        self._dial_reported.discard(peer)
        if peer in self._linked:
            self._watch(peer)
        self._refresh(peer, "")

    def _watch(self, peer: str) -> None:
        """Heartbeat a linked, connected peer: it links back to us, so it
        heartbeats us too (a node we merely talk to would look silent)."""
        if peer not in self.detector.watched():
            self._heard_seen.pop(peer, None)
            self._execute_detector(self.detector.connected(peer, trio.current_time()))

    def slot_down(self, slot: OutboundConnection, reason: str) -> None:
        peer = slot.peer
        if self._connected.get(peer) is not slot:
            return
        del self._connected[peer]
        self.detector.disconnected(peer)
        reason = self._down_reason.pop(peer, reason)
        self._refresh(peer, reason)
        self._execute(self.core.on_connection_lost(peer, trio.current_time()))

    def dial_failed(self, slot: OutboundConnection, reason: str) -> None:
        peer = slot.peer
        if slot.channel != MEMBERSHIP_CHANNEL or slot.index != 0:
            return
        if peer in self._dial_reported:
            return
        self._dial_reported.add(peer)
        dropped = self._pending.pop(peer, None)
        if dropped:
            self.dropped_control_count += len(dropped)
        self._execute(self.core.on_connect_failed(peer, trio.current_time()))

    # ------------------------------------------------------------------ effects

    def _execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message, channel=channel, key=key):
                    self._send(
                        MEMBERSHIP_PROTOCOL, self._codec, to, message, channel, key
                    )
                case SetTimer(name=name, at=at):
                    self._set_timer((_CORE, name), at)
                case CancelTimer(name=name):
                    self._timers.cancel((_CORE, name))
                case Connect(spec=spec):
                    self._connect(spec)
                case Disconnect(peer=peer):
                    self._disconnect(peer)
                case NeighbourUp(spec=spec):
                    self._linked[spec.name] = spec
                    if spec.name in self._node.transport.peers:
                        # A neighbour gets every channel (user traffic too).
                        self._node.transport.add_peer(spec)
                    if spec.name in self._connected:
                        self._watch(spec.name)
                    self._bump()
                    self._refresh(spec.name, "")
                case NeighbourDown(peer=peer):
                    self._linked.pop(peer, None)
                    self.detector.disconnected(peer)
                    self._bump()
                    self._refresh(peer, "removed from the membership")
                case _:
                    assert_never(effect)

    def _execute_detector(self, effects: list[FailureDetectorEffect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message, channel=channel, key=key):
                    self._send(
                        HEARTBEAT_PROTOCOL,
                        self._heartbeat_codec,
                        to,
                        message,
                        channel,
                        key,
                    )
                case SetTimer(name=name, at=at):
                    self._set_timer((_DETECTOR, name), at)
                case PeerSilent(peer=peer, silent_for=silent_for):
                    log.warning(
                        "node %s silent for %.1f s: presumed down", peer, silent_for
                    )
                    self._down_reason[peer] = "heartbeat timeout"
                    self._node.transport.reset_peer(peer)
                case _:
                    assert_never(effect)

    def _send(
        self,
        protocol: str,
        codec: MessageCodec,
        to: str,
        message: object,
        channel: str,
        key: object,
    ) -> None:
        frame = self._node.control_frame(protocol, codec.encode(message))
        self._send_frame(to, channel, key, frame)

    def send_control(
        self, to: str, protocol: str, payload: object, channel: str, key: object
    ) -> None:
        """Send a control message to *to*, held (bounded) while its connection
        on *channel* comes up: a neighbour's other channels connect just after
        its membership channel, and a monitor request must not be lost then."""
        self._send_frame(to, channel, key, self._node.control_frame(protocol, payload))

    def _send_frame(self, to: str, channel: str, key: object, frame: bytes) -> None:
        faults = self._node.transport.faults
        if faults is not None and faults.partitioned(to):
            self.dropped_control_count += 1
            return
        slot = self._node.transport.slot(to, channel, key)
        if type(slot) is OutboundConnection:
            if slot.state is ConnectionState.CONNECTED:
                slot.enqueue(frame, key)
                return
            if slot.state is not ConnectionState.CLOSED:
                pending = self._pending.setdefault(to, [])
                if len(pending) < PENDING_FRAMES_MAX:
                    pending.append((channel, key, frame))
                    return
        self.dropped_control_count += 1

    def _flush_pending(self, peer: str, channel: str) -> None:
        pending = self._pending.get(peer)
        if not pending:
            return
        keep = [item for item in pending if item[0] != channel]
        ready = [item for item in pending if item[0] == channel]
        if keep:
            self._pending[peer] = keep
        else:
            del self._pending[peer]
        for channel_name, key, frame in ready:
            self._send_frame(peer, channel_name, key, frame)

    def _connect(self, spec: NodeSpec) -> None:
        if spec.name == self._node.name:
            return
        self._generation[spec.name] = self._generation.get(spec.name, 0) + 1
        self._dial_reported.discard(spec.name)
        # Only the membership channel until the core makes it a neighbour:
        # most HyParView connections are a request or a reply and a close.
        linked = spec.name in self._linked
        self._node.transport.add_peer(spec, None if linked else (MEMBERSHIP_CHANNEL,))

    def _disconnect(self, peer: str) -> None:
        generation = self._generation.get(peer, 0) + 1
        self._generation[peer] = generation
        done = self._disconnecting.get(peer)
        if done is None:
            done = self._disconnecting[peer] = trio.Event()
        assert self._nursery is not None
        self._nursery.start_soon(self._disconnect_gracefully, peer, generation, done)

    async def _disconnect_gracefully(
        self, peer: str, generation: int, done: trio.Event
    ) -> None:
        """Close *peer*'s links once what we queued for it has left (bounded)."""
        transport = self._node.transport
        with trio.move_on_after(self.config.disconnect_timeout):
            while True:
                record = transport.peers.get(peer)
                if record is None:
                    break
                busy = peer in self._pending or any(
                    slot.queued_bytes > 0 and slot.state is ConnectionState.CONNECTED
                    for slots in record.channels.values()
                    for slot in slots
                )
                if not busy:
                    break
                # Woken by the connection coming up (pending frames leave
                # then), or re-checked after a short while for the drain.
                with trio.move_on_after(0.05):
                    await transport.wait_changed()
        if self._generation.get(peer) == generation:
            dropped = self._pending.pop(peer, None)
            if dropped:
                self.dropped_control_count += len(dropped)
            transport.remove_peer(peer)
        if self._disconnecting.get(peer) is done:
            del self._disconnecting[peer]
        done.set()

    # -------------------------------------------------------------------- timers

    def _set_timer(self, key: tuple[str, Hashable], at: float) -> None:
        self._timers.set(key, at)

    def _fire(self, key: Hashable, now: float) -> None:
        assert isinstance(key, tuple)
        owner, name = key
        if owner == _CORE:
            self._execute(self.core.on_timer(name, now))
            self._bump()
        elif owner == _DETECTOR:
            heard = self._node.transport.heard
            for peer in self.detector.watched():
                count = heard.get(peer, 0)
                if count != self._heard_seen.get(peer):
                    self._heard_seen[peer] = count
                    self.detector.heard(peer, now)
            self._execute_detector(self.detector.on_timer(name, now))
        elif name == _JOIN_RETRY:
            if not self.core.left and not self.core.neighbours():
                self._join_seed(now)
            self._set_timer(key, now + self.config.join_retry_interval)

    # ------------------------------------------------------------ up and down

    def _bump(self) -> None:
        self.version += 1

    def _refresh(self, peer: str, reason: str) -> None:
        """The one place a node goes up or down (see the module doc)."""
        # Up once linked and every channel is connected, so a user who hears
        # of it can send on any channel at once; down when unlinked or the
        # membership connection is lost (another channel's reconnect is not a
        # node failure).
        was_up = peer in self._up
        should_be_up = peer in self._linked and peer in self._connected
        if should_be_up and not was_up:
            should_be_up = self._node.transport.is_fully_connected(peer)
        if should_be_up == was_up:
            return
        self.version += 1
        if should_be_up:
            self._up[peer] = None
            log.info("node %s is up", peer)
        else:
            del self._up[peer]
            log.info("node %s is down: %s", peer, reason or "unknown")
        self._node._node_changed(peer, up=should_be_up, reason=reason)
        self._events.append((should_be_up, peer, reason))
        self._events_spot.wake()

    async def _run_dispatcher(self) -> None:
        while True:
            if not self._events:
                await self._events_spot.park()
                continue
            up, peer, _ = self._events.popleft()
            for subscription in list(self._subscriptions):
                if subscription.up != up or subscription.node not in (None, peer):
                    continue
                try:
                    result = subscription.fn(peer)
                    if inspect.isawaitable(result):
                        assert self._nursery is not None
                        self._nursery.start_soon(self._await_callback, result)
                except Exception:
                    self.callback_errors_count += 1
                    log.exception("membership callback for %s raised", peer)
            await trio.lowlevel.checkpoint()

    async def _await_callback(self, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception:
            self.callback_errors_count += 1
            log.exception("membership callback raised")


def build_membership(node: Node, rng: random.Random) -> MembershipService:
    """The service for *node*'s configured strategy (the node is listening)."""
    config = node.config.membership
    me = node.spec()
    seeds = node.config.peers
    core: MembershipCore
    message_types: tuple[type, ...]
    core_rng = random.Random(rng.getrandbits(64))
    match config.strategy:
        case "hyparview":
            core = hyparview.HyParView(me, config.hyparview, core_rng)
            message_types = hyparview.MESSAGE_TYPES
        case "static":
            from runtime.core import static

            core = static.Static(me, seeds, rng=core_rng)
            message_types = static.MESSAGE_TYPES
        case "full_mesh" | "client_server":
            from runtime.core import full_mesh

            core = full_mesh.FullMesh(
                me,
                config.full_mesh,
                core_rng,
                incarnation=node.creation,
                started_at=node.wall_clock(),
                link=(
                    full_mesh.client_server_link
                    if config.strategy == "client_server"
                    else None
                ),
            )
            message_types = full_mesh.MESSAGE_TYPES
        case _:
            raise ValueError(f"unknown membership strategy {config.strategy!r}")
    return MembershipService(node, config, core, message_types, seeds=seeds)
