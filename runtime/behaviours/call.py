"""The request/reply protocol of the behaviours: ``call``, ``cast``, ``reply``.

Theory of operation
-------------------
A call is correlated by a one-shot *reply address* (Partisan v6; OTP's process
alias): :class:`ReplySlot` registers itself with the node's router under a
fresh pid-form URI (:meth:`Node.open_address`) and the request goes out as
plain data::

    ["$gen_call", reply_address, caller_pid_uri_or_None, request]

Whatever reaches the address first ends the call, and the slot wakes the
caller's task directly: the answer never passes through the caller's mailbox,
there is no task per call, and the caller need not be a process. The answers
(all plain data, two frames per remote call and nothing else):

==================================  ============================================
answer at the reply address         sent by; the caller gets
==================================  ============================================
``["ok", value]``                   the server (``Reply`` or :func:`reply`);
                                    *value*
``["noproc"]``                      the target node's router, when the request
                                    reaches no process; :class:`NoProcessError`
``["overloaded"]``                  the router, when the mailbox refused it
                                    (full); :class:`Overloaded`
``["exit", reason]``                the server as it ends, for every call it
                                    held (in progress, deferred, or still
                                    queued in its mailbox); :class:`ServerExited`
``NodeDown`` (local value)          the caller's node, when the target's node
                                    is not up or goes down (a node monitor
                                    held by the address: local bookkeeping, no
                                    frame); :class:`NodeDownError`
timeout (local value)               the node's deadline task;
                                    :class:`CallTimeout`
==================================  ============================================

Whatever ends the call closes the address, which also drops its node monitor;
an answer that comes later finds no target and is dropped by the router
(counted in ``dropped_no_target_count``), never left in a mailbox. A local
target that does not exist is known at once from the send itself.

Why not a process monitor per call, as OTP does? A remote monitor costs two
more frames per call (the request to monitor, and the demonitor after the
reply), encoded through the monitor protocol's codec: it doubled the cost of
a call measured here. Behaviours answer the calls they hold when they end,
which covers what the monitor was for, as long as the server is a behaviour
(GenServer, GenStatem, Supervisor). A plain process that takes a
``$gen_call`` and dies without answering leaves its caller to the timeout.

A cast is ``["$gen_cast", request]``: best effort, never raises for delivery.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from typing import Final, final

import trio

from runtime.errors import NotInProcess
from runtime.ref import BadReference, Name, Pid, parse_target
from runtime.shell.connection import SendStatus
from runtime.shell.node import (
    CALL_TAG,
    NOPROC,
    Node,
    Process,
    _reason_from_wire,
    _reason_to_wire,
    current_node,
    current_process,
)
from runtime.signals import Down, NodeDown

__all__ = [
    "CALL",
    "CAST",
    "DEFAULT_TIMEOUT",
    "STOP",
    "CallError",
    "CallTimeout",
    "From",
    "HeldCalls",
    "NoProcessError",
    "NodeDownError",
    "Overloaded",
    "ReplySlot",
    "ServerExited",
    "call",
    "cast",
    "reply",
    "resolve_server",
    "send_answer",
    "stop",
]

CALL: Final = CALL_TAG
CAST: Final = "$gen_cast"
STOP: Final = "$gen_stop"
OK: Final = "ok"
EXIT: Final = "exit"
OVERLOADED: Final = "overloaded"
DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a call waits by default (OTP's default for ``gen_server:call``)."""

_NODE_REFUSALS: Final = frozenset(
    {SendStatus.NOT_CONNECTED, SendStatus.DISCONNECTED, SendStatus.NO_ROUTE}
)
# Parsed call targets by what the caller passed (bare names, URIs, tuples):
# parsing a name costs more than a local call. Bounded; cleared when full.
_TARGETS_MAX: Final = 4096
_targets: dict[tuple[str, object], Pid | Name] = {}


class CallError(Exception):
    """A call (or rpc) failed; the subclass says why.

    Attributes:
        target: what was called.
        reason: the runtime's reason (``"noproc"``, ``"noconnection"``,
            ``"timeout"``, ``"overloaded"``, or the server's exit reason).
    """

    def __init__(self, target: object, reason: object, detail: str = "") -> None:
        super().__init__(detail or f"call to {target} failed: {reason!r}")
        self.target = target
        self.reason = reason


class CallTimeout(CallError, TimeoutError):
    """No reply came within the timeout. A reply that comes later is dropped."""


class NoProcessError(CallError):
    """No such process, or no process registered under that name (``noproc``)."""


class NodeDownError(CallError):
    """The target's node is not up, went down during the call, or the
    connection to it refused the request (``noconnection``)."""


class ServerExited(CallError):
    """The server ended before it replied; ``reason`` is its exit reason
    (``"normal"``, ``"shutdown"``, the exception locally, a ``RemoteError``
    from another node...)."""


class Overloaded(CallError):
    """Refused for overload: a full connection queue or mailbox, or the
    remote rpc service at its concurrency bound. Nothing was run."""


@final
class From:
    """Who a call came from, handed to ``handle_call``; reply with :func:`reply`.

    A local value: to let a process on another node reply, send it
    ``from_.address`` (a plain string) and reply to that.

    Attributes:
        address: the one-shot reply address (a pid-form URI string).
        caller: the calling process's pid URI, or None if the caller was not
            a process.
    """

    __slots__ = ("_held", "address", "caller")

    def __init__(
        self, address: str, caller: str | None, held: HeldCalls | None = None
    ) -> None:
        self.address = address
        self.caller = caller
        # The calls of the server that got this one, which answers them all
        # if it ends; replying removes the call from it.
        self._held = held

    @property
    def pid(self) -> Pid | None:
        """The calling process (None when the caller was not a process)."""
        if self.caller is None:
            return None
        try:
            return Pid.from_uri(self.caller)
        except BadReference:
            return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, From) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"From(address={self.address!r}, caller={self.caller!r})"


@final
class HeldCalls:
    """The calls a behaviour has taken and not answered yet.

    When the behaviour ends, :meth:`answer_all` answers each of them, and
    every call request still queued in its mailbox, with
    ``["exit", reason]``: that is what makes a call to a server that dies
    fail at once instead of at its timeout. Replies take calls out.
    """

    __slots__ = ("_froms",)

    def __init__(self) -> None:
        self._froms: dict[str, From] = {}

    def take(self, address: object, caller: object) -> From:
        """A call request arrived: its From, held until answered."""
        from_ = From(
            address if type(address) is str else "",
            caller if type(caller) is str else None,
            self,
        )
        self._froms[from_.address] = from_
        return from_

    def settle(self, from_: From) -> None:
        self._froms.pop(from_.address, None)

    def __len__(self) -> int:
        return len(self._froms)

    def answer_all(self, process: Process, reason: object) -> None:
        """Answer every held call, and every call queued in *process*'s
        mailbox, with the exit *reason* (at the end of the process)."""
        node = process.node
        local_prefix = f"partisan:pid:{node.name}:"
        wire: list[object] = []

        def answer(address: object) -> None:
            if type(address) is not str:
                return
            if address.startswith(local_prefix):
                node.send_to_address(address, [EXIT, reason])
                return
            if not wire:
                wire.append(_reason_to_wire(reason))
            node.send_to_address(address, [EXIT, wire[0]])

        froms, self._froms = self._froms, {}
        for address in froms:
            answer(address)

        def queued(message: object) -> bool:
            if type(message) is list and len(message) == 4 and message[0] == CALL:
                answer(message[1])
                return True
            return False

        process.mailbox.discard(queued)


@final
class _TimedOut:
    """Delivered to a slot by its node's deadline task (a local value)."""

    __slots__ = ()


_TIMED_OUT: Final = _TimedOut()


@final
class ReplySlot:
    """A one-shot reply address on a node, and the wait for what reaches it.

    The first message delivered is kept and wakes the waiting task; later
    ones are refused (the router counts them). Also the watcher of the
    call's monitor, so a :class:`~runtime.signals.Down` or
    :class:`~runtime.signals.NodeDown` may be that first message.

    Resource handling: :meth:`close` (idempotent) unregisters the address
    and ends its monitors; call it in a ``finally``.
    """

    __slots__ = ("_task", "address", "message", "node", "received")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.received = False
        self.message: object = None
        self._task: trio.lowlevel.Task | None = None
        self.address = node.open_address(self)

    def deliver(self, message: object) -> bool:
        if self.received:
            return False
        self.received = True
        self.message = message
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        return True

    async def wait(self, timeout: float | None) -> bool:
        """Wait for the first message, up to *timeout* seconds (None: no
        limit); True if it came, False on timeout. A checkpoint.

        The timeout is kept by the node's deadline task rather than a cancel
        scope per call: a cancel scope costs about a third of a local call.
        """
        if not self.received and timeout is not None and not math.isinf(timeout):
            if timeout <= 0:
                self.deliver(_TIMED_OUT)
            else:
                _deadlines(self.node).add(self, timeout)
        if self.received:
            await trio.lowlevel.checkpoint()
        else:
            self._task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._task = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        return self.message is not _TIMED_OUT

    def close(self) -> None:
        self.received = True
        self.node.close_address(self.address)


@final
class _Deadlines:
    """One task per node that times out waiting reply slots.

    Slots are queued FIFO per timeout value, so each queue is sorted by
    deadline and its head is its earliest (calls nearly always share a few
    timeout values). The task sleeps until the earliest head, in a cancel
    scope whose deadline an earlier newcomer moves forward. Finished slots
    leave their queue lazily: from its head, when the task wakes or a slot
    is added behind them.
    """

    __slots__ = ("_node", "_queues", "_scope", "_started")

    def __init__(self, node: Node) -> None:
        self._node = node
        self._queues: dict[float, deque[tuple[float, ReplySlot]]] = {}
        self._scope: trio.CancelScope | None = None
        self._started = False

    def add(self, slot: ReplySlot, timeout: float) -> None:
        deadline = trio.current_time() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        else:
            while queue and queue[0][1].received:
                queue.popleft()
        queue.append((deadline, slot))
        if not self._started:
            self._started = True
            self._node.nursery.start_soon(self._run, name="reply deadlines")
        elif self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    async def _run(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._expire()) as scope:
                self._scope = scope
                await trio.sleep_forever()

    def _expire(self) -> float:
        """Time out due slots; returns the next deadline."""
        now = trio.current_time()
        earliest = math.inf
        for timeout, queue in list(self._queues.items()):
            while queue:
                deadline, slot = queue[0]
                if slot.received:
                    queue.popleft()
                elif deadline <= now:
                    queue.popleft()
                    slot.deliver(_TIMED_OUT)
                else:
                    earliest = min(earliest, deadline)
                    break
            if not queue:
                del self._queues[timeout]
        return earliest


_DEADLINES: Final[weakref.WeakKeyDictionary[Node, _Deadlines]] = (
    weakref.WeakKeyDictionary()
)


def _deadlines(node: Node) -> _Deadlines:
    deadlines = _DEADLINES.get(node)
    if deadlines is None:
        deadlines = _DEADLINES[node] = _Deadlines(node)
    return deadlines


def resolve_server(server: object, node: Node) -> Pid | Name:
    """A call target as a Pid or Name: *server* is a Pid, a Name, their URI or
    tuple forms, or a bare registered name (a str without the ``partisan:``
    scheme) on this node.

    Raises:
        BadReference: *server* is none of these.
    """
    if type(server) is Pid or type(server) is Name:
        return server
    key = (node.name, server)
    try:
        target = _targets.get(key)
    except TypeError:
        raise BadReference(f"not a target: {server!r}") from None
    if target is not None:
        return target
    if isinstance(server, str) and not server.startswith("partisan:"):
        target = Name(node=node.name, name=server)
    else:
        parsed = parse_target(server)
        if not isinstance(parsed, (Pid, Name)):
            raise BadReference(f"cannot call a ref: {server!r}")
        target = parsed
    if len(_targets) >= _TARGETS_MAX:
        _targets.clear()
    _targets[key] = target
    return target


def _caller_uri() -> str | None:
    try:
        return current_process().pid.uri
    except NotInProcess:
        return None


def failure(message: object, target: Pid | Name, node: Node) -> CallError:
    """The error for an answer at a reply address that is not a reply."""
    if message is _TIMED_OUT:
        return CallTimeout(target, "timeout", f"no reply from {target} in time")
    if type(message) is NodeDown:
        return NodeDownError(
            target, message.reason, f"the node of {target} is down ({message.reason})"
        )
    if type(message) is Down:
        return exit_error(message.reason, target)
    if type(message) is list and message:
        tag = message[0]
        if tag == NOPROC:
            return NoProcessError(target, NOPROC, f"no process {target}")
        if tag == OVERLOADED:
            return Overloaded(target, OVERLOADED, f"{target} refused the call")
        if tag == EXIT and len(message) == 2:
            reason = message[1]
            if target.node != node.name:
                reason = _reason_from_wire(reason)
            return exit_error(reason, target)
    return CallError(target, "bad_reply", f"{target} answered {message!r}")


def exit_error(reason: object, target: Pid | Name) -> CallError:
    """The error for a server that ended (or a monitor's reason)."""
    if reason == NOPROC:
        return NoProcessError(target, reason, f"no process {target}")
    if reason == "noconnection":
        return NodeDownError(target, reason, f"the node of {target} is down")
    return ServerExited(target, reason, f"{target} exited: {reason!r}")


def refusal_error(status: SendStatus, target: Pid | Name, node: Node) -> CallError:
    """The error for a request the send path refused to take."""
    if target.node == node.name:
        # Locally the status is known at once: no process, or a full mailbox.
        return NoProcessError(target, NOPROC, f"no process {target}")
    if status is SendStatus.OVERLOADED:
        return Overloaded(target, OVERLOADED, f"the queue to {target} is full")
    return NodeDownError(target, status.value, f"cannot reach {target}: {status.value}")


async def call(
    server: object, request: object, timeout: float | None = DEFAULT_TIMEOUT
) -> object:
    """Send *request* to a GenServer or GenStatem and wait for its reply.

    Works from any task inside a node, in a process or not. A checkpoint.

    Args:
        server: a Pid, a Name, their URI or tuple forms, or a bare registered
            name on this node; on any node.
        request: plain data if the server is on another node.
        timeout: seconds; None waits for ever (a server that ends, or a node
            that goes down, still ends the wait).

    Returns:
        The server's reply.

    Raises:
        NoProcessError: no such process or name.
        ServerExited: the server ended before replying.
        NodeDownError: its node is not up or went down.
        Overloaded: a full connection queue or mailbox refused the request.
        CallTimeout: no reply within *timeout*.
        BadReference: *server* is not a target.
    """
    node = current_node()
    target = resolve_server(server, node)
    slot = ReplySlot(node)
    try:
        if target.node != node.name:
            node.watch_node(slot.address, target.node)
        if not slot.received:
            caller = _caller_uri()
            if caller is not None and caller == target.uri:
                # It would wait for itself until the timeout (OTP: calling_self).
                raise CallError(target, "calling_self", "a process called itself")
            status = node.send_checked(target, [CALL, slot.address, caller, request])
            # A partitioned status also stands for an interposed drop: the
            # request is lost as in a network, and the call times out.
            if status is not SendStatus.OK and status is not SendStatus.PARTITIONED:
                raise refusal_error(status, target, node)
        await slot.wait(timeout)
        message = slot.message
    finally:
        slot.close()
    if type(message) is list and len(message) == 2 and message[0] == OK:
        return message[1]
    raise failure(message, target, node)


def cast(server: object, request: object) -> None:
    """Send *request* to a GenServer or GenStatem without waiting (best
    effort: never raises for delivery, as Erlang's ``gen_server:cast``).

    Raises:
        BadReference: *server* is not a target.
    """
    node = current_node()
    node.send(resolve_server(server, node), [CAST, request])


def reply(to: From | str, value: object) -> None:
    """Answer a call: *to* is the ``From`` given to ``handle_call`` (or its
    ``address``). Best effort; a reply to a call that already ended (timed
    out, cancelled) is dropped by the caller's node.

    Raises:
        TypeError: *value* is not plain data and the caller is on another node.
    """
    send_answer(to, [OK, value])


def send_answer(
    to: From | str, answer: list[object], *, channel: str = "default"
) -> None:
    """Send *answer* as it is (``["ok", value]``, ``["overloaded"]``...) to a
    call's reply address and stop holding the call."""
    if type(to) is From:
        held = to._held
        if held is not None:
            held.settle(to)
        address = to.address
    else:
        address = to
    current_node().send_to_address(address, answer, channel=channel)


async def stop(
    server: object, reason: object = "normal", timeout: float | None = None
) -> None:
    """Stop a GenServer, GenStatem or Supervisor: it runs its ``terminate``
    after the messages already queued, then exits with *reason*; returns once
    it has ended (a monitor sees it go).

    Raises:
        NoProcessError: no such process.
        NodeDownError: its node is not up or went down.
        CallTimeout: it did not end within *timeout* seconds.
    """
    node = current_node()
    target = resolve_server(server, node)
    slot = ReplySlot(node)
    try:
        node.watch(slot.address, target)
        if not slot.received:
            node.send(target, [STOP, reason])
        await slot.wait(timeout)
        message = slot.message
    finally:
        slot.close()
    if type(message) is Down and message.reason not in (NOPROC, "noconnection"):
        return
    raise failure(message, target, node)
