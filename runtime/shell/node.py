"""The node: processes, the router, and the send path.

Theory of operation
-------------------
A node owns a trio nursery. Processes are tasks in it, each with a
:class:`Mailbox` registered in the *router*: a dict from target key to anything
with ``deliver(message) -> bool``. A pid's key is its URI string, so the reader
routes a frame with one dict lookup on the envelope's plain-string target
(DESIGN.md, The hot path), and a pid of an older incarnation (another
``creation``) simply finds nothing. Registered names map to keys. Targets that
are not tasks (a silo hosting many activations) register a handler object.

``send`` is synchronous and never raises for delivery problems (Erlang's ``!``):
to a local target it appends to the mailbox, with no encoding and no copy; to a
remote one it encodes the envelope once and enqueues the frame on the
connection picked by (peer, channel, partition key), whose writer coalesces.
``send_checked`` returns a :class:`SendStatus` saying why a message was not
handed over; every refusal is counted in :meth:`Node.statistics`.

The current node and process live in context variables, so process code calls
``runtime.self()``, ``runtime.send(...)``, ``runtime.receive()`` without threading
a node object through.

Resource handling: :func:`open_node` is the only way to run a node; leaving its
``async with`` stops every process and closes every connection.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import random
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol, assert_never, final

import attrs
import trio

from runtime.config import NodeConfig, NodeSpec
from runtime.core import links as link_protocol
from runtime.core import monitors as monitor_protocol
from runtime.core.codec import MessageCodec
from runtime.core.effects import Send
from runtime.core.links import DeliverExit, LinkCounts, LinkExit, Links, LinksEffect
from runtime.core.monitors import (
    DeliverDown,
    DeliverNodeEvent,
    DownNotice,
    MonitorCounts,
    Monitors,
    MonitorsEffect,
)
from runtime.errors import (
    MessageRefused,
    NotInProcess,
    ProcessExit,
    ProtocolError,
    RemoteError,
    RuntimeStopped,
)
from runtime.ref import BadReference, Name, Pid, Ref, parse_target
from runtime.shell.connection import OutboundConnection, SendStatus, SlotStatistics
from runtime.shell.faults import FaultAction, Faults, Partition
from runtime.shell.mailbox import Mailbox
from runtime.shell.membership import MembershipService, build_membership
from runtime.shell.network import Address, Network, TcpNetwork
from runtime.shell.transport import Transport
from runtime.signals import Down, Exit, NodeDown, NodeUp
from runtime.wire import Kind, encode_envelope

__all__ = [
    "Deliverable",
    "Node",
    "NodeStatistics",
    "Process",
    "current_node",
    "current_process",
    "open_node",
]

log = logging.getLogger("runtime.node")

DEFAULT_CHANNEL: Final = "default"
# Envelope kinds as plain ints: an IntEnum member costs cbor2 a slow type lookup
# per message, and int comparisons are cheaper than enum ones on the reader's path.
_SEND: Final = int(Kind.SEND)
_SEND_NAME: Final = int(Kind.SEND_NAME)
_EXIT: Final = int(Kind.EXIT)
_CONTROL: Final = int(Kind.CONTROL)
MONITOR_PROTOCOL: Final = "monitor"
LINK_PROTOCOL: Final = "link"
# Calls (runtime/behaviours/call.py): a request is [CALL_TAG, reply address,
# caller, request]; the router answers one it cannot deliver with [NOPROC].
CALL_TAG: Final = "$gen_call"
NOPROC: Final = "noproc"
_PID_PREFIX: Final = "partisan:pid:"
# Parsed targets kept for reuse; a bound so a stream of distinct URIs cannot grow it.
_RESOLVED_MAX: Final = 4096

_current_node: contextvars.ContextVar[Node] = contextvars.ContextVar("partisan_node")
_current_process: contextvars.ContextVar[Process] = contextvars.ContextVar(
    "partisan_process"
)


class Deliverable(Protocol):
    """A routing target: a mailbox, or a handler that routes inside itself."""

    def deliver(self, message: object) -> bool:
        """Accept a message without blocking; False if refused (counted)."""
        ...


@final
class Process:
    """A running process: its pid, mailbox and the scope that can end it."""

    __slots__ = (
        "_cancel_scope",
        "exit_reason",
        "mailbox",
        "names",
        "node",
        "pid",
        "trap_exit",
    )

    def __init__(self, node: Node, pid: Pid, mailbox: Mailbox) -> None:
        self.node = node
        self.pid = pid
        self.mailbox = mailbox
        self.names: list[str] = []
        self._cancel_scope = trio.CancelScope()
        # Set when the process ends: "normal", the exception, or an exit reason.
        self.exit_reason: object = None
        # Exit signals become Exit messages instead of ending the process.
        self.trap_exit = False

    def kill(self, reason: object) -> None:
        if self.exit_reason is None:
            self.exit_reason = reason
        self._cancel_scope.cancel()


@final
@attrs.frozen
class NodeStatistics:
    """A snapshot of a node's counters (all monotonically increasing but gauges)."""

    name: str
    creation: int
    address: Address | None
    processes_count: int
    sent_local_count: int
    sent_remote_count: int
    received_remote_count: int
    frames_received_count: int
    dropped_no_target_count: int
    refused: dict[str, int]
    mailbox_overflow_count: int
    accepted_connections_count: int
    inbound_connections_open: int
    protocol_errors_count: int
    handshake_failures_count: int
    refused_messages_count: int
    slots: tuple[SlotStatistics, ...]


def current_node() -> Node:
    """The node of the running process (or of the enclosing ``open_node``).

    Raises:
        NotInProcess: outside any node.
    """
    try:
        return _current_node.get()
    except LookupError:
        raise NotInProcess("not inside a node (use open_node or spawn)") from None


def current_process() -> Process:
    """The running process.

    Raises:
        NotInProcess: called outside a process.
    """
    try:
        return _current_process.get()
    except LookupError:
        raise NotInProcess("not inside a process (spawn one first)") from None


@final
class Node:
    """A runtime node. Make one with :func:`open_node`."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        network: Network,
        nursery: trio.Nursery,
        creation: int | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.wall_clock = wall_clock
        self.name = config.name
        self.creation = creation if creation is not None else secrets.randbits(31)
        self._nursery = nursery
        self._rng = rng if rng is not None else random.Random(secrets.randbits(64))
        self._ids = itertools.count(1)
        # The router: target key (pid URI, ref URI, or handler key) -> target.
        self._targets: dict[str, Deliverable] = {}
        self._names: dict[str, str] = {}
        # Parsed targets (URIs, tuples, Names) -> (node, kind, key): sends to a
        # registered name parse it once, not per message. Bounded; cleared when full.
        self._resolved: dict[object, tuple[str, int, str]] = {}
        self._processes: dict[str, Process] = {}
        self._stopped = False
        self.transport = Transport(
            config=config,
            creation=self.creation,
            network=network,
            route=self._route,
            rng=self._rng,
        )
        self.sent_local_count = 0
        self.sent_remote_count = 0
        self.received_remote_count = 0
        self.dropped_no_target_count = 0
        self.refused: dict[SendStatus, int] = dict.fromkeys(SendStatus, 0)
        # Protocol name -> handler of its control messages (sender node, payload).
        self._control: dict[str, Callable[[str, Any], None]] = {}
        self.monitors = Monitors(self.name, resolve=self._resolve_local)
        self._monitor_codec = MessageCodec(monitor_protocol.MESSAGE_TYPES)
        self._control[MONITOR_PROTOCOL] = self._on_monitor_message
        self.links = Links(self.name, is_alive=self._processes.__contains__)
        self._link_codec = MessageCodec(link_protocol.MESSAGE_TYPES)
        self._control[LINK_PROTOCOL] = self._on_link_message
        self.faults = Faults(
            make_ref=self.make_ref,
            nursery=nursery,
            reset_peer=self.transport.reset_peer,
            on_change=self._faults_changed,
        )
        self.dropped_control_count = 0
        self.received_control_count = 0
        self._node_listeners: list[Callable[[str, bool], None]] = []
        # Built at start, once the listen address (part of our spec) is known.
        self._membership: MembershipService | None = None

    @property
    def address(self) -> Address | None:
        """The address the node listens on (known once started)."""
        return self.transport.address

    def spec(self) -> NodeSpec:
        """This node's spec, to hand to peers (no secrets in it)."""
        assert self.address is not None
        return NodeSpec(
            name=self.name,
            addresses=(self.address,),
            channels=self.config.channels,
            role=self.config.role,
        )

    @property
    def membership(self) -> MembershipService:
        """The membership service (join, leave, members, on_up / on_down...)."""
        if self._membership is None:
            raise RuntimeStopped(f"node {self.name} has not started")
        return self._membership

    # --------------------------------------------------------------- processes

    def spawn(
        self,
        fn: Callable[..., Awaitable[object]],
        *args: object,
        name: str | None = None,
        link: bool = False,
    ) -> Pid:
        """Start ``fn(*args)`` as a process; returns its pid at once.

        A process ends when *fn* returns (reason ``"normal"``), raises
        :class:`~runtime.errors.ProcessExit` (its reason) or any other
        exception (the exception, logged), or is killed by an exit signal.
        Its mailbox and names go with it.

        Args:
            link: link the new process to the calling one before it runs
                (Erlang's ``spawn_link``).

        Raises:
            RuntimeStopped: the node has stopped.
            ValueError: *name* is already registered.
            NotInProcess: *link* outside a process.
        """
        if self._stopped:
            raise RuntimeStopped(f"node {self.name} has stopped")
        parent = current_process() if link else None
        pid = Pid(node=self.name, creation=self.creation, id=next(self._ids))
        process = Process(
            self, pid, Mailbox(self.config.mailbox_length_max, label=pid.uri)
        )
        self._targets[pid.uri] = process.mailbox
        self._processes[pid.uri] = process
        if name is not None:
            try:
                self.register(name, pid)
            except ValueError:
                self._targets.pop(pid.uri)
                self._processes.pop(pid.uri)
                raise
        if parent is not None:
            self._execute_links(self.links.link(parent.pid.uri, pid.uri, node_up=True))
        self._nursery.start_soon(self._run_process, process, fn, args, name=pid.uri)
        return pid

    async def _run_process(
        self,
        process: Process,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
    ) -> None:
        _current_node.set(self)
        _current_process.set(process)
        reason: object = "normal"
        try:
            with process._cancel_scope:
                await fn(*args)
        except ProcessExit as exc:
            reason = exc.reason
        except Exception as exc:
            reason = exc
            log.error("process %s crashed", process.pid, exc_info=exc)
        finally:
            if process.exit_reason is None:
                process.exit_reason = reason
            self._processes.pop(process.pid.uri, None)
            self._targets.pop(process.pid.uri, None)
            for registered in process.names:
                if self._names.get(registered) == process.pid.uri:
                    del self._names[registered]
            process.mailbox.close()
            self._execute_monitors(
                self.monitors.process_exited(process.pid.uri, process.exit_reason)
            )
            self._execute_links(
                self.links.process_exited(process.pid.uri, process.exit_reason)
            )

    def register(self, name: str, pid: Pid) -> None:
        """Register *name* for a local live process.

        Raises:
            ValueError: the name is taken, or the pid is not a live local process.
        """
        if name in self._names:
            raise ValueError(f"name {name!r} is already registered on {self.name}")
        process = self._processes.get(pid.uri)
        if process is None:
            raise ValueError(f"{pid} is not a live process of {self.name}")
        self._names[name] = pid.uri
        process.names.append(name)

    def unregister(self, name: str) -> None:
        uri = self._names.pop(name, None)
        process = self._processes.get(uri) if uri is not None else None
        if process is not None:
            process.names.remove(name)

    def whereis(self, name: str) -> Pid | None:
        uri = self._names.get(name)
        process = self._processes.get(uri) if uri is not None else None
        return process.pid if process is not None else None

    def is_process_alive(self, pid: Pid) -> bool:
        """Whether a *local* pid is a live process.

        Raises:
            ValueError: *pid* is on another node (as Erlang's badarg).
        """
        if pid.node != self.name:
            raise ValueError(f"is_process_alive takes a local pid, not {pid}")
        return pid.uri in self._processes

    def processes(self) -> list[Pid]:
        return [process.pid for process in self._processes.values()]

    def register_target(self, key: str, target: Deliverable) -> None:
        """Route messages aimed at *key* (a URI) to a non-process target."""
        if key in self._targets:
            raise ValueError(f"target {key!r} is already registered")
        self._targets[key] = target

    def unregister_target(self, key: str) -> None:
        self._targets.pop(key, None)

    def make_ref(self) -> Ref:
        """A reference unique to this node incarnation."""
        return Ref(node=self.name, creation=self.creation, id=next(self._ids))

    # -------------------------------------------------------------------- sends

    def send(
        self,
        target: object,
        message: object,
        *,
        channel: str = DEFAULT_CHANNEL,
        key: object = None,
    ) -> None:
        """Send *message* to *target*; best effort, never blocks, never raises
        for delivery problems (they are counted).

        Args:
            target: a Pid, Name, their URI strings or tuple forms.
            channel: the channel to carry it (remote targets).
            key: the partition key choosing the connection on a channel with
                parallelism > 1, and the supersede key on a monotonic channel;
                defaults to the sending process, so one sender's messages to
                one receiver stay in order.

        Raises:
            BadReference: *target* is not a target at all (a programming error).
            TypeError: *message* holds something that cannot be sent remotely.
        """
        self.send_checked(target, message, channel=channel, key=key)

    def send_checked(
        self,
        target: object,
        message: object,
        *,
        channel: str = DEFAULT_CHANNEL,
        key: object = None,
    ) -> SendStatus:
        """As :meth:`send`, returning whether the message was handed over.

        ``OK`` for a local target means it reached a live mailbox (a dead
        local pid gives ``NO_ROUTE``); for a remote one it means it was queued
        on a connection.
        """
        if type(target) is Pid:
            node, kind, key_str = target.node, _SEND, target.uri
        else:
            try:
                resolved = self._resolved.get(target)
            except TypeError:  # unhashable: certainly not a target
                raise BadReference(f"not a target: {target!r}") from None
            if resolved is None:
                resolved = self._resolve(target)
            node, kind, key_str = resolved
        return self._send_to(node, kind, key_str, message, channel, key)

    def _send_to(
        self,
        node: str,
        kind: int,
        key_str: str,
        message: object,
        channel: str,
        key: object,
    ) -> SendStatus:
        """The send path once the target is resolved to (node, kind, key)."""
        if node == self.name:
            self.sent_local_count += 1
            if kind == _SEND_NAME:
                key_str = self._names.get(key_str, "")
            destination = self._targets.get(key_str)
            if destination is not None and destination.deliver(message):
                return SendStatus.OK
            self.dropped_no_target_count += 1
            return SendStatus.NO_ROUTE
        if key is None:
            process = _current_process.get(None)
            key = process.pid.uri if process is not None else None
        if self.transport.faults is not None:
            copies, delay = self.faults.on_send(node, message)
            if not copies:
                self.refused[SendStatus.PARTITIONED] += 1
                return SendStatus.PARTITIONED
            if delay or copies > 1:
                frame = encode_envelope(kind, key_str, None, None, message)
                self._nursery.start_soon(
                    self._send_later, node, channel, key, frame, copies, delay
                )
                return SendStatus.OK
        slot = self.transport.slot(node, channel, key)
        if type(slot) is not OutboundConnection:
            assert isinstance(slot, SendStatus)
            self.refused[slot] += 1
            return slot
        status = slot.enqueue(encode_envelope(kind, key_str, None, None, message), key)
        if status is SendStatus.OK:
            self.sent_remote_count += 1
        else:
            self.refused[status] += 1
        return status

    def _resolve(self, target: object) -> tuple[str, int, str]:
        """Parse a non-Pid target once; repeated targets hit ``_resolved``."""
        ref = parse_target(target)
        if isinstance(ref, Pid):
            resolved = (ref.node, _SEND, ref.uri)
        elif isinstance(ref, Name):
            resolved = (ref.node, _SEND_NAME, ref.name)
        else:
            raise BadReference(f"cannot send to a ref: {target!r}")
        if len(self._resolved) >= _RESOLVED_MAX:
            self._resolved.clear()
        self._resolved[target] = resolved
        return resolved

    def exit(self, pid: Pid, reason: object = "killed") -> None:
        """Send process *pid* (local or remote) an exit signal; silent if gone.

        As Erlang's ``exit/2``: ``"kill"`` ends it with reason ``"killed"``
        even if it traps exits; otherwise a process that traps exits gets an
        :class:`~runtime.signals.Exit` message, a ``"normal"`` signal is
        ignored by one that does not (unless it is the sender itself), and
        any other reason ends it with that reason.
        """
        process = _current_process.get(None)
        sender = process.pid.uri if process is not None else None
        if pid.node == self.name:
            self._exit_signal(pid.uri, sender, reason, linked=False)
            return
        # The sender's partition key, as for its messages: the exit signal
        # stays behind everything this process sent that process.
        slot = self.transport.slot(pid.node, DEFAULT_CHANNEL, sender)
        if type(slot) is not OutboundConnection:
            assert isinstance(slot, SendStatus)
            self.refused[slot] += 1
            return
        status = slot.enqueue(
            encode_envelope(_EXIT, pid.uri, sender, None, _reason_to_wire(reason)),
            sender,
        )
        if status is not SendStatus.OK:
            self.refused[status] += 1

    def _exit_signal(
        self, target: str, sender: str | None, reason: object, *, linked: bool
    ) -> None:
        """An exit signal from *sender* reaches local pid *target*.

        *linked*: it comes from a linked process that ended (not ``exit/2``),
        so ``"kill"`` is trappable there and arrives as ``"killed"``.
        """
        process = self._processes.get(target)
        if process is None:
            return
        if reason == "kill":
            if not linked:
                process.kill("killed")
                return
            reason = "killed"
        if process.trap_exit:
            process.mailbox.deliver(Exit(pid=_pid_or_none(sender), reason=reason))
        elif reason != "normal":
            process.kill(reason)
        elif sender == target:
            process.kill("normal")

    def _route(
        self, kind: int, target: Any, sender: Any, ref: Any, payload: Any
    ) -> None:
        """Deliver one decoded envelope from the network (the reader's hot path)."""
        if kind == _SEND:
            self.received_remote_count += 1
            destination = self._targets.get(target)
        elif kind == _SEND_NAME:
            self.received_remote_count += 1
            destination = self._targets.get(self._names.get(target, ""))
        elif kind == _EXIT:
            self.received_remote_count += 1
            if type(target) is str:
                self._exit_signal(
                    target,
                    sender if type(sender) is str else None,
                    _reason_from_wire(payload),
                    linked=False,
                )
            return
        elif kind == _CONTROL:
            self.received_control_count += 1
            handler = self._control.get(target)
            if handler is None or type(sender) is not str:
                self.dropped_control_count += 1
                return
            handler(sender, payload)
            return
        else:
            raise ProtocolError(f"unknown envelope kind {kind!r}")
        if destination is None or not destination.deliver(payload):
            self.dropped_no_target_count += 1
            if (
                type(payload) is list
                and len(payload) == 4
                and payload[0] == CALL_TAG
                and type(payload[1]) is str
            ):
                # A call request that reaches no process is answered at once,
                # so the caller fails now rather than at its timeout.
                self.send_to_address(
                    payload[1], [NOPROC if destination is None else "overloaded"]
                )

    async def _send_later(
        self,
        node: str,
        channel: str,
        key: object,
        frame: bytes,
        copies: int,
        delay: float,
    ) -> None:
        """An interposed send: delayed and/or duplicated (fault injection)."""
        if delay:
            await trio.sleep(delay)
        for _ in range(copies):
            slot = self.transport.slot(node, channel, key)
            if type(slot) is OutboundConnection:
                slot.enqueue(frame, key)

    # ------------------------------------------------------------- control path

    def control_frame(self, protocol: str, payload: object) -> bytes:
        """A control envelope from this node to *protocol* on the peer."""
        return encode_envelope(_CONTROL, protocol, self.name, None, payload)

    def register_control(
        self, protocol: str, handler: Callable[[str, Any], None]
    ) -> None:
        """Route control messages of *protocol* to ``handler(sender, payload)``."""
        if protocol in self._control:
            raise ValueError(f"control protocol {protocol!r} is already registered")
        self._control[protocol] = handler

    def _send_control(
        self, to: str, protocol: str, payload: object, channel: str, key: object
    ) -> None:
        """Send a control message (held while the connection comes up)."""
        if self._membership is None:
            self.dropped_control_count += 1
            return
        self._membership.send_control(to, protocol, payload, channel, key)

    # ------------------------------------------------------------------ monitors

    def monitor(self, target: object) -> Ref:
        """Monitor process *target* (a pid or a name, in any form) from the
        calling process: a :class:`~runtime.signals.Down` arrives in its
        mailbox when the target ends, at once with ``noproc`` if there is no
        such process, or ``noconnection`` if its node is not up.

        Raises:
            NotInProcess: called outside a process.
            BadReference: *target* is not a pid or a name.
        """
        watcher = current_process()
        parsed = parse_target(target)
        if isinstance(parsed, (Pid, Name)):
            key = parsed.uri
        else:
            raise BadReference(f"cannot monitor a ref: {target!r}")
        ref = self.make_ref()
        up = parsed.node == self.name or (
            self._membership is not None and self._membership.is_up(parsed.node)
        )
        self._execute_monitors(
            self.monitors.monitor(
                ref.uri, watcher.pid.uri, key, parsed.node, node_up=up
            )
        )
        return ref

    def demonitor(self, ref: Ref, *, flush: bool = False) -> bool:
        """Cancel monitor *ref*; with *flush*, also remove its Down if it
        already arrived. Returns whether the monitor was still active."""
        active = self.monitors.holds(ref.uri)
        self._execute_monitors(self.monitors.demonitor(ref.uri))
        if flush:
            process = _current_process.get(None)
            if process is not None:
                process.mailbox.discard(lambda m: isinstance(m, Down) and m.ref == ref)
        return active

    def monitor_node(self, node: str, flag: bool = True) -> None:  # noqa: FBT001, FBT002
        """Get a :class:`~runtime.signals.NodeDown` when *node* goes down
        (at once if it is not up now). Each True stacks one; False removes one.

        Raises:
            NotInProcess: called outside a process.
        """
        watcher = current_process()
        if flag and not (self._membership is not None and self._membership.is_up(node)):
            watcher.mailbox.deliver(NodeDown(node=node, reason="noconnection"))
            return
        self.monitors.monitor_node(watcher.pid.uri, node, on=flag)

    def monitor_nodes(self, flag: bool = True) -> None:  # noqa: FBT001, FBT002
        """Subscribe the calling process to every NodeUp and NodeDown."""
        self.monitors.monitor_nodes(current_process().pid.uri, on=flag)

    def monitor_counts(self) -> MonitorCounts:
        """How many monitors this node holds (a leak check)."""
        return self.monitors.counts()

    def _resolve_local(self, target: str) -> str | None:
        if target.startswith("partisan:pid:"):
            return target if target in self._processes else None
        try:
            name = Name.from_uri(target)
        except BadReference:
            return None
        if name.node != self.name:
            return None
        uri = self._names.get(name.name)
        return uri if uri is not None and uri in self._processes else None

    def _on_monitor_message(self, sender: str, payload: Any) -> None:
        try:
            message = self._monitor_codec.decode(payload)
        except MessageRefused as exc:
            self.dropped_control_count += 1
            log.warning("refused a monitor message from %s: %s", sender, exc)
            return
        self._execute_monitors(self.monitors.on_message(sender, message))

    def _execute_monitors(self, effects: list[MonitorsEffect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message, channel=channel, key=key):
                    if isinstance(message, DownNotice):
                        message = DownNotice(
                            ref=message.ref, reason=_reason_to_wire(message.reason)
                        )
                    self._send_control(
                        to,
                        MONITOR_PROTOCOL,
                        self._monitor_codec.encode(message),
                        channel,
                        key,
                    )
                case DeliverDown(
                    watcher=watcher, ref=ref, target=target, reason=reason
                ):
                    mailbox = self._targets.get(watcher)
                    if mailbox is not None:
                        mailbox.deliver(
                            Down(
                                ref=Ref.from_uri(ref),
                                target=_monitor_target(target),
                                reason=_reason_from_wire(reason),
                            )
                        )
                case DeliverNodeEvent(watcher=watcher, node=node, up=up, reason=reason):
                    mailbox = self._targets.get(watcher)
                    if mailbox is not None:
                        mailbox.deliver(
                            NodeUp(node=node)
                            if up
                            else NodeDown(node=node, reason=reason)
                        )
                case _:
                    assert_never(effect)

    def _node_changed(self, node: str, *, up: bool, reason: str) -> None:
        """The membership service's one report of a node going up or down:
        monitors first, then every service listening (broadcast groups)."""
        if up:
            self._execute_monitors(self.monitors.node_up(node))
        else:
            self._execute_monitors(
                self.monitors.node_down(node, reason or "noconnection")
            )
            self._execute_links(self.links.node_down(node))
        for listener in list(self._node_listeners):
            listener(node, up)

    def add_node_listener(self, listener: Callable[[str, bool], None]) -> None:
        """Call ``listener(node, up)`` synchronously on every node up / down.

        For the node's own services (broadcast groups); it must not block or
        raise. User code subscribes with ``membership.on_up`` / ``on_down``.
        """
        self._node_listeners.append(listener)

    def remove_node_listener(self, listener: Callable[[str, bool], None]) -> None:
        if listener in self._node_listeners:
            self._node_listeners.remove(listener)

    @property
    def nursery(self) -> trio.Nursery:
        """The node's nursery: the node's own services run their tasks in it."""
        return self._nursery

    # --------------------------------------------------------------------- links

    def link(self, pid: Pid) -> None:
        """Link the calling process with *pid* (on any node), both ways.

        If *pid* is not a live process, the caller gets an exit signal
        ``noproc`` (``noconnection`` if its node is not up). Linking twice,
        or to oneself, does nothing.

        Raises:
            NotInProcess: called outside a process.
        """
        me = current_process().pid.uri
        up = pid.node == self.name or (
            self._membership is not None and self._membership.is_up(pid.node)
        )
        self._execute_links(self.links.link(me, pid.uri, node_up=up))

    def unlink(self, pid: Pid) -> None:
        """Remove the link between the calling process and *pid*, if any.

        An exit signal from *pid* already turned into an ``Exit`` message
        stays in the mailbox (as Erlang's ``unlink``).

        Raises:
            NotInProcess: called outside a process.
        """
        self._execute_links(self.links.unlink(current_process().pid.uri, pid.uri))

    def trap_exit(self, flag: bool) -> bool:  # noqa: FBT001
        """Set whether the calling process traps exits; returns the old flag.

        Raises:
            NotInProcess: called outside a process.
        """
        process = current_process()
        old, process.trap_exit = process.trap_exit, bool(flag)
        return old

    def link_counts(self) -> LinkCounts:
        """How many links this node holds (a leak check)."""
        return self.links.counts()

    def _on_link_message(self, sender: str, payload: Any) -> None:
        try:
            message = self._link_codec.decode(payload)
        except MessageRefused as exc:
            self.dropped_control_count += 1
            log.warning("refused a link message from %s: %s", sender, exc)
            return
        self._execute_links(self.links.on_message(sender, message))

    def _execute_links(self, effects: list[LinksEffect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message, channel=channel, key=key):
                    if isinstance(message, LinkExit):
                        message = LinkExit(
                            sender=message.sender,
                            target=message.target,
                            reason=_reason_to_wire(message.reason),
                        )
                    payload = self._link_codec.encode(message)
                    self._send_control(to, LINK_PROTOCOL, payload, channel, key)
                case DeliverExit(target=target, sender=sender, reason=reason):
                    self._exit_signal(
                        target, sender, _reason_from_wire(reason), linked=True
                    )
                case _:
                    assert_never(effect)

    # ---------------------------------------- reply addresses (calls and rpc)

    def open_address(self, target: Deliverable) -> str:
        """Register *target* under a fresh pid-form URI and return it.

        An *address* is a one-shot destination that is not a process (OTP's
        process alias): a call's reply and the DOWN of the monitor it holds
        go there, and once :meth:`close_address` has removed it a late reply
        finds nothing and is dropped by the router (counted), never left in
        a mailbox. No process ever gets the same URI (ids are never reused).
        """
        address = f"{_PID_PREFIX}{self.name}:{self.creation}.{next(self._ids)}"
        self._targets[address] = target
        return address

    def close_address(self, address: str) -> None:
        """Remove an address and every monitor it holds (remote ones are
        cancelled on their nodes)."""
        if self._targets.pop(address, None) is not None:
            self._execute_monitors(self.monitors.process_exited(address, "normal"))

    def watch(self, address: str, target: object) -> None:
        """Monitor process *target* (a pid or a name, any form) on behalf of
        *address*: its :class:`~runtime.signals.Down` goes to the address
        (at once with ``noproc`` or ``noconnection``). :meth:`close_address`
        ends it.

        Raises:
            BadReference: *target* is not a pid or a name.
        """
        parsed = target if type(target) is Pid else parse_target(target)
        if not isinstance(parsed, (Pid, Name)):
            raise BadReference(f"cannot monitor a ref: {target!r}")
        ref = f"partisan:ref:{self.name}:{self.creation}.{next(self._ids)}"
        up = parsed.node == self.name or (
            self._membership is not None and self._membership.is_up(parsed.node)
        )
        self._execute_monitors(
            self.monitors.monitor(ref, address, parsed.uri, parsed.node, node_up=up)
        )

    def watch_node(self, address: str, node: str) -> None:
        """A :class:`~runtime.signals.NodeDown` goes to *address* when *node*
        goes down (at once if it is not up). :meth:`close_address` ends it."""
        if node == self.name:
            return
        if not (self._membership is not None and self._membership.is_up(node)):
            target = self._targets.get(address)
            if target is not None:
                target.deliver(NodeDown(node=node, reason="noconnection"))
            return
        self.monitors.monitor_node(address, node, on=True)

    def send_to_address(
        self, address: object, message: object, *, channel: str = DEFAULT_CHANNEL
    ) -> SendStatus:
        """Send *message* to a reply address as received in a request (a
        pid-form URI string), without parsing it into a :class:`Pid`. Never
        raises: anything that is not a pid URI is dropped and counted."""
        if type(address) is not str or not address.startswith(_PID_PREFIX):
            self.dropped_no_target_count += 1
            return SendStatus.NO_ROUTE
        node = address[len(_PID_PREFIX) :].rpartition(":")[0]
        return self._send_to(node, _SEND, address, message, channel, None)

    # -------------------------------------------------------------------- faults

    def inject_partition(self, nodes: Iterable[str], ttl: float | None = None) -> Ref:
        """Cut this node off from *nodes* (see ``runtime/shell/faults.py``)."""
        return self.faults.inject_partition(sorted(set(nodes)), ttl)

    def resolve_partition(self, ref: Ref) -> bool:
        """End an injected partition; False if it already ended."""
        return self.faults.resolve_partition(ref)

    def partitions(self) -> list[Partition]:
        """The injected partitions in force."""
        return self.faults.partitions()

    def interpose(
        self,
        direction: str,
        predicate: Callable[[str, object], bool],
        action: FaultAction | str,
        *,
        delay: float = 0.0,
    ) -> Ref:
        """Drop, delay or duplicate user messages sent to (``"send"``) or
        received from (``"receive"``) other nodes for which
        ``predicate(node, message)`` holds."""
        return self.faults.interpose(direction, predicate, action, delay=delay)

    def remove_interposition(self, ref: Ref) -> bool:
        return self.faults.remove_interposition(ref)

    def _faults_changed(self) -> None:
        self.transport.faults = self.faults if self.faults.active else None

    # ------------------------------------------------------------------- peers

    def add_peer(self, spec: NodeSpec) -> None:
        """Connect to *spec* on every channel (static membership)."""
        self.transport.add_peer(spec)

    def remove_peer(self, name: str) -> None:
        self.transport.remove_peer(name)

    def nodes(self) -> list[str]:
        """The peers this node is connected to (on any channel), sorted."""
        return sorted(n for n in self.transport.peers if self.transport.is_connected(n))

    def is_connected(self, node: str, channel: str | None = None) -> bool:
        """Whether a connection to *node* is up (on *channel*, or on any)."""
        return self.transport.is_connected(node, channel)

    def is_fully_connected(self, node: str) -> bool:
        """Whether every connection of every channel to *node* is up."""
        return self.transport.is_fully_connected(node)

    async def wait_connected(self, node: str, *, fully: bool = True) -> None:
        """Wait until *node* is (fully) connected. Wrap in a timeout."""
        check = self.is_fully_connected if fully else self.is_connected
        while not check(node):
            await self.transport.wait_changed()

    def statistics(self) -> NodeStatistics:
        transport = self.transport
        return NodeStatistics(
            name=self.name,
            creation=self.creation,
            address=self.address,
            processes_count=len(self._processes),
            sent_local_count=self.sent_local_count,
            sent_remote_count=self.sent_remote_count,
            received_remote_count=self.received_remote_count,
            frames_received_count=transport.frames_received_count,
            dropped_no_target_count=self.dropped_no_target_count,
            refused={s.value: n for s, n in self.refused.items() if n},
            mailbox_overflow_count=sum(
                p.mailbox.dropped_count for p in self._processes.values()
            ),
            accepted_connections_count=transport.accepted_count,
            inbound_connections_open=transport.inbound_open_count,
            protocol_errors_count=transport.protocol_errors_count,
            handshake_failures_count=transport.handshake_failures_count,
            refused_messages_count=transport.refused_messages_count,
            slots=tuple(
                slot.statistics()
                for peer in transport.peers.values()
                for slots in peer.channels.values()
                for slot in slots
            ),
        )

    # ---------------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        await self.transport.start(self._nursery)
        self._membership = build_membership(self, self._rng)
        self.transport.listener = self._membership
        self._control["membership"] = self._membership.on_membership_message
        self._control["heartbeat"] = self._membership.on_heartbeat
        self._membership.start(self._nursery)

    async def stop(self, *, flush_timeout: float = 1.0) -> None:
        """Stop: flush queued frames (for up to *flush_timeout*), end every
        process, close every connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with trio.move_on_after(flush_timeout):
            for peer in list(self.transport.peers.values()):
                for slots in list(peer.channels.values()):
                    for slot in slots:
                        await slot.wait_drained()
        for process in list(self._processes.values()):
            process.kill("shutdown")
        await self.transport.aclose()
        self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    network: Network | None = None,
    creation: int | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block.

    The node is listening (and dialling its static peers) when the block
    starts; inside it ``runtime.node()`` is this node.

    Args:
        network: TCP by default; ``runtime.testing.memory_network`` in tests.
        creation: the incarnation (random by default; the simulator fixes it).
        rng: randomness for backoff jitter (seeded by default from the OS).

    Raises:
        OSError: the listen address cannot be bound.
    """
    async with trio.open_nursery() as nursery:
        node = Node(
            config,
            network=network if network is not None else TcpNetwork(),
            nursery=nursery,
            creation=creation,
            rng=rng,
        )
        await node._start()
        token = _current_node.set(node)
        try:
            yield node
        finally:
            _current_node.reset(token)
            with trio.CancelScope(shield=True):
                await node.stop()


def _reason_to_wire(reason: object) -> object:
    """An exit reason as plain data: exceptions become a description."""
    if isinstance(reason, RemoteError):
        return {
            "error": reason.type_name,
            "message": reason.message,
            "traceback": reason.remote_traceback,
        }
    if isinstance(reason, BaseException):
        return {
            "error": type(reason).__qualname__,
            "message": str(reason),
            "traceback": "".join(traceback.format_exception(reason)),
        }
    if reason is None or isinstance(reason, (str, int, float, bool, bytes)):
        return reason
    if isinstance(reason, (list, tuple)):
        # ("shutdown", detail) and the like: OTP's compound reasons.
        return [_reason_to_wire(item) for item in reason]
    return repr(reason)


def _reason_from_wire(reason: object) -> object:
    """A reason from the wire: a described exception becomes a RemoteError."""
    if type(reason) is dict and type(reason.get("error")) is str:
        return RemoteError(
            reason["error"],
            str(reason.get("message", "")),
            str(reason.get("traceback", "")),
        )
    return reason


def _pid_or_none(uri: str | None) -> Pid | None:
    if uri is None:
        return None
    try:
        return Pid.from_uri(uri)
    except BadReference:
        return None


def _monitor_target(target: str) -> Pid | Name:
    if target.startswith("partisan:pid:"):
        return Pid.from_uri(target)
    return Name.from_uri(target)
