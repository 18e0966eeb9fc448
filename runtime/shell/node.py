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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol, final

import attrs
import trio

from runtime.config import NodeConfig, NodeSpec
from runtime.errors import NotInProcess, ProtocolError, RuntimeStopped
from runtime.ref import BadReference, Name, Pid, Ref, parse_target
from runtime.shell.connection import OutboundConnection, SendStatus, SlotStatistics
from runtime.shell.mailbox import Mailbox
from runtime.shell.network import Address, Network, TcpNetwork
from runtime.shell.transport import Transport
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

    __slots__ = ("_cancel_scope", "exit_reason", "mailbox", "names", "node", "pid")

    def __init__(self, node: Node, pid: Pid, mailbox: Mailbox) -> None:
        self.node = node
        self.pid = pid
        self.mailbox = mailbox
        self.names: list[str] = []
        self._cancel_scope = trio.CancelScope()
        # Set when the process ends: "normal", the exception, or an exit reason.
        self.exit_reason: object = None

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
    ) -> None:
        self.config = config
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

    @property
    def address(self) -> Address | None:
        """The address the node listens on (known once started)."""
        return self.transport.address

    def spec(self) -> NodeSpec:
        """This node's spec, to hand to peers (no secrets in it)."""
        assert self.address is not None
        return NodeSpec(
            name=self.name, addresses=(self.address,), channels=self.config.channels
        )

    # --------------------------------------------------------------- processes

    def spawn(
        self,
        fn: Callable[..., Awaitable[object]],
        *args: object,
        name: str | None = None,
    ) -> Pid:
        """Start ``fn(*args)`` as a process; returns its pid at once.

        A process ends when *fn* returns (reason ``"normal"``), raises (the
        exception, logged), or is killed by :meth:`exit`. Its mailbox and names
        go with it.

        Raises:
            RuntimeStopped: the node has stopped.
            ValueError: *name* is already registered.
        """
        if self._stopped:
            raise RuntimeStopped(f"node {self.name} has stopped")
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
        """End process *pid* (local or remote) with *reason*; silent if gone."""
        if pid.node == self.name:
            process = self._processes.get(pid.uri)
            if process is not None:
                process.kill(reason)
            return
        # The sender's partition key, as for its messages: the exit signal
        # stays behind everything this process sent that process.
        process = _current_process.get(None)
        key = process.pid.uri if process is not None else None
        slot = self.transport.slot(pid.node, DEFAULT_CHANNEL, key)
        if type(slot) is not OutboundConnection:
            assert isinstance(slot, SendStatus)
            self.refused[slot] += 1
            return
        status = slot.enqueue(encode_envelope(_EXIT, pid.uri, None, None, reason), key)
        if status is not SendStatus.OK:
            self.refused[status] += 1

    def _route(
        self, kind: int, target: Any, sender: Any, ref: Any, payload: Any
    ) -> None:
        """Deliver one decoded envelope from the network (the reader's hot path)."""
        self.received_remote_count += 1
        if kind == _SEND:
            destination = self._targets.get(target)
        elif kind == _SEND_NAME:
            destination = self._targets.get(self._names.get(target, ""))
        elif kind == _EXIT:
            process = self._processes.get(target)
            if process is not None:
                process.kill(payload)
            return
        else:
            raise ProtocolError(f"unknown envelope kind {kind!r}")
        if destination is None or not destination.deliver(payload):
            self.dropped_no_target_count += 1

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

    async def stop(self, *, flush_timeout: float = 1.0) -> None:
        """Stop: flush queued frames (for up to *flush_timeout*), end every
        process, close every connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with trio.move_on_after(flush_timeout):
            for peer in list(self.transport.peers.values()):
                for slots in peer.channels.values():
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
