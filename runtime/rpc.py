"""Remote procedure calls to functions a node has exported by name.

Theory of operation
-------------------
As Erlang's ``erpc`` (``call``, ``cast``, ``multicall``), with one difference
that matters for safety: a node runs only functions it has *exported* under a
name (:func:`export`). A request names a function; nothing from the wire is
ever looked up as code, so a peer can never make a node run arbitrary code.

Each node that exports anything runs an rpc service process, registered as
``"partisan_rpc"`` under the node's root supervisor. While it lives, the
node's router hands requests at the service address (``partisan:pid:NODE:0.0``:
id 0 is never a process's) straight to the service's bookkeeping, with no hop
through a mailbox. A request is a behaviour call on the ``rpc`` channel::

    ["$gen_call", reply_address, caller, ["call", name, args]]

and each one runs in a process of its own (so a slow function delays no
other, and the function may use ``runtime.self()``, ``receive``, links...),
up to ``concurrency_max`` of them at once: beyond that a request is refused at
once with ``["overloaded"]``, never queued (Partisan v6). Answers, on the
``rpc`` channel to the one-shot reply address:

=========================  =====================================================
answer                     the caller gets
=========================  =====================================================
``["ok", value]``          the function's return value
``["error", description]`` the exception it raised: a :class:`RemoteError` with
                           type name, message and remote traceback; re-raised
                           as the original class only for builtin exceptions
                           and classes given to :func:`register_error` (no
                           class is ever found by a name from the wire
                           otherwise)
``["undef"]``              :class:`NotExported`: no function by that name
``["noproc"]``             :class:`NotExported`: the node exports nothing (its
                           router answers for the missing service)
``["exit", reason]``       :class:`~runtime.behaviours.ServerExited`: the call's
                           process was ended before it answered
``["overloaded"]``         :class:`~runtime.behaviours.Overloaded`
=========================  =====================================================

A node that is not up, or goes down during the call, gives
:class:`~runtime.behaviours.NodeDownError` at once (a node monitor held by the
reply address: local bookkeeping, no frame); no answer within the timeout
gives :class:`~runtime.behaviours.CallTimeout`, and a late answer is dropped
by the router. Arguments and results must be plain data for another node.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import traceback
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, final

import attrs
import trio

from runtime.behaviours.call import (
    CALL,
    CAST,
    DEFAULT_TIMEOUT,
    EXIT,
    OK,
    OVERLOADED,
    CallError,
    NodeDownError,
    ReplySlot,
    failure,
)
from runtime.behaviours.supervisor import (
    ChildSpec,
    SupervisorError,
    restart_child,
    root_supervisor,
    start_child,
)
from runtime.errors import NotInProcess, RemoteError
from runtime.ref import Pid
from runtime.shell.connection import SendStatus
from runtime.shell.node import NOPROC, Node, current_node, current_process

__all__ = [
    "CHANNEL",
    "CONCURRENCY_MAX",
    "SERVICE_NAME",
    "NotExported",
    "Outcome",
    "RpcStatistics",
    "call",
    "cast",
    "configure",
    "export",
    "exported",
    "multicall",
    "register_error",
    "service_address",
    "statistics",
    "unexport",
]

log = logging.getLogger("runtime.rpc")

SERVICE_NAME: Final = "partisan_rpc"
"""The registered name of a node's rpc service process."""
CHANNEL: Final = "rpc"
"""Requests and answers travel on this channel (DESIGN.md, default channels)."""
CONCURRENCY_MAX: Final = 256
"""Inbound calls run at once per node by default; more are refused with
``overloaded``. A bound rather than a queue: a caller learns at once, and a
flood cannot pile up processes (Partisan v6)."""

_UNDEF: Final = "undef"
_ERROR: Final = "error"


class NotExported(CallError):
    """The node exports no function by that name (or nothing at all)."""


@final
@attrs.frozen
class Outcome:
    """One node's result of :func:`multicall`: a value or an error.

    Attributes:
        node: the node called.
        value: the function's return value (None if it failed).
        error: the exception the call raised (None if it succeeded).
    """

    node: str
    value: object = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> object:
        """The value, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value


@final
@attrs.frozen
class RpcStatistics:
    """The rpc service of one node: exports and what came in."""

    exported_count: int
    in_flight_count: int
    concurrency_max: int
    calls_count: int
    casts_count: int
    refused_overloaded_count: int
    refused_undef_count: int
    errors_count: int


@final
class _Service:
    """A node's exports and inbound bookkeeping (survives service restarts)."""

    def __init__(self) -> None:
        self.exports: dict[str, Callable[..., Any]] = {}
        self.concurrency_max = CONCURRENCY_MAX
        self.in_flight = 0
        self.calls_count = 0
        self.casts_count = 0
        self.refused_overloaded_count = 0
        self.refused_undef_count = 0
        self.errors_count = 0
        self.lock = trio.Lock()
        self.node: Node | None = None

    def deliver(self, message: object) -> bool:
        """A request from the router (any node, this one included); never
        blocks: refusals are answered at once, calls get a process each."""
        node = self.node
        if node is None or type(message) is not list or len(message) < 2:
            return False
        tag = message[0]
        if tag == CALL and len(message) == 4:
            self.calls_count += 1
            address = message[1]
            if type(address) is not str:
                return False
            request = message[3]
            fn = self._function(request)
            if fn is None:
                self.refused_undef_count += 1
                node.send_to_address(address, [_UNDEF], channel=CHANNEL)
            elif self.in_flight >= self.concurrency_max:
                self.refused_overloaded_count += 1
                node.send_to_address(address, [OVERLOADED], channel=CHANNEL)
            else:
                self.in_flight += 1
                node.spawn(_run_call, self, fn, request[2], address)
            return True
        if tag == CAST and len(message) == 2:
            self.casts_count += 1
            request = message[1]
            fn = self._function(request)
            if fn is None:
                self.refused_undef_count += 1
            elif self.in_flight >= self.concurrency_max:
                self.refused_overloaded_count += 1
            else:
                self.in_flight += 1
                node.spawn(_run_call, self, fn, request[2], None)
            return True
        return False

    def _function(self, request: object) -> Callable[..., Any] | None:
        if (
            type(request) is list
            and len(request) == 3
            and type(request[1]) is str
            and type(request[2]) in (list, tuple)
        ):
            return self.exports.get(request[1])
        return None


_services: weakref.WeakKeyDictionary[Node, _Service] = weakref.WeakKeyDictionary()
# Exception classes callers may re-raise as themselves, by (module, qualname).
_registered: dict[tuple[str, str], type[Exception]] = {}


def _service(node: Node) -> _Service:
    service = _services.get(node)
    if service is None:
        service = _services[node] = _Service()
        service.node = node
    return service


# -- exporting -------------------------------------------------------------------


async def export(name: str, fn: Callable[..., Any]) -> None:
    """Let other nodes (and this one) call *fn* as *name*.

    *fn* may be a plain or a coroutine function; it runs in a process of its
    own per call. Starts the node's rpc service (under the root supervisor)
    if it is not running.

    Raises:
        ValueError: *name* is already exported (unexport it first).
        TypeError: *fn* is not callable.
    """
    checked: object = name  # checked at run time: callers are not all typed
    if not isinstance(checked, str) or not checked:
        raise ValueError(f"an export name is a non-empty str, not {name!r}")
    if not callable(fn):
        raise TypeError(f"cannot export {fn!r}: not callable")
    node = current_node()
    service = _service(node)
    if name in service.exports:
        raise ValueError(f"{name!r} is already exported on {node.name}")
    service.exports[name] = fn
    await _ensure_running(node, service)


def unexport(name: str) -> bool:
    """Stop exporting *name*; False if it was not exported. Calls already
    running finish."""
    return _service(current_node()).exports.pop(name, None) is not None


def exported() -> list[str]:
    """The names this node exports, sorted."""
    return sorted(_service(current_node()).exports)


def configure(*, concurrency_max: int) -> None:
    """Set how many inbound calls may run at once on this node."""
    if concurrency_max < 1:
        raise ValueError(f"concurrency_max must be >= 1, not {concurrency_max}")
    _service(current_node()).concurrency_max = concurrency_max


def statistics() -> RpcStatistics:
    """This node's rpc counters."""
    service = _service(current_node())
    return RpcStatistics(
        exported_count=len(service.exports),
        in_flight_count=service.in_flight,
        concurrency_max=service.concurrency_max,
        calls_count=service.calls_count,
        casts_count=service.casts_count,
        refused_overloaded_count=service.refused_overloaded_count,
        refused_undef_count=service.refused_undef_count,
        errors_count=service.errors_count,
    )


def register_error(cls: type[Exception]) -> type[Exception]:
    """Let callers re-raise remote exceptions of *cls* as *cls* (by module and
    qualified name, which both sides must share). Usable as a decorator.

    The class is built with one argument, the remote message; one that cannot
    be arrives as :class:`RemoteError`.
    """
    checked: object = cls
    if not (isinstance(checked, type) and issubclass(checked, Exception)):
        raise TypeError(f"not an exception class: {cls!r}")
    _registered[(cls.__module__, cls.__qualname__)] = cls
    return cls


async def _ensure_running(node: Node, service: _Service) -> None:
    if node.whereis(SERVICE_NAME) is not None:
        return
    async with service.lock:
        if node.whereis(SERVICE_NAME) is not None:
            return
        root = await root_supervisor()

        async def start() -> Pid:
            # Return once the service takes requests: an export is usable
            # as soon as export returns.
            listening = trio.Event()
            pid = node.spawn(
                _serve, node, service, listening, name=SERVICE_NAME, link=True
            )
            await listening.wait()
            return pid

        try:
            await start_child(root, ChildSpec(id=SERVICE_NAME, start=start))
        except SupervisorError as exc:
            # Its spec is there but the process is not (it gave up): restart.
            if exc.reason != "already_present":
                raise
            await restart_child(root, SERVICE_NAME)


# -- the service -------------------------------------------------------------------


def service_address(node: str) -> Pid:
    """Where *node*'s rpc service takes requests: its pid-form address with
    creation 0 and id 0, which no process ever has (ids start at 1)."""
    address = _addresses.get(node)
    if address is None:
        if len(_addresses) >= _ADDRESSES_MAX:
            _addresses.clear()
        address = _addresses[node] = Pid(node=node, creation=0, id=0)
    return address


_addresses: dict[str, Pid] = {}
_ADDRESSES_MAX: Final = 4096


async def _serve(node: Node, service: _Service, listening: trio.Event) -> None:
    """The rpc service process: while it lives, the node's router hands
    requests at the service address straight to *service* (no hop through
    this process's mailbox), which starts a process per call."""
    address = service_address(node.name).uri
    try:
        node.register_target(address, service)
    finally:
        listening.set()
    try:
        await trio.sleep_forever()
    finally:
        node.unregister_target(address)


async def _run_call(
    service: _Service,
    fn: Callable[..., Any],
    args: Sequence[object],
    address: str | None,
) -> None:
    """One inbound call, in a process of its own; answers *address*."""
    node = current_node()
    answered = False
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        if address is not None:
            try:
                node.send_to_address(address, [OK, result], channel=CHANNEL)
            except TypeError as exc:  # the result is not plain data
                service.errors_count += 1
                node.send_to_address(address, [_ERROR, _describe(exc)], channel=CHANNEL)
            answered = True
    except Exception as exc:
        service.errors_count += 1
        log.debug("rpc %r raised", fn, exc_info=exc)
        if address is not None:
            node.send_to_address(address, [_ERROR, _describe(exc)], channel=CHANNEL)
            answered = True
    finally:
        service.in_flight -= 1
        if address is not None and not answered:
            # Ended (an exit signal, or the node stopping) before answering.
            reason = current_process().exit_reason
            node.send_to_address(address, [EXIT, repr(reason)], channel=CHANNEL)


def _describe(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    return {
        "error": kind.__qualname__,
        "module": kind.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _remote_exception(description: object) -> Exception:
    """The exception to raise for an ``error`` answer (see the module doc)."""
    if type(description) is not dict:
        return RemoteError("unknown", repr(description))
    type_name = str(description.get("error", "unknown"))
    module = str(description.get("module", ""))
    message = str(description.get("message", ""))
    remote = RemoteError(type_name, message, str(description.get("traceback", "")))
    cls: object = _registered.get((module, type_name))
    if cls is None and module == "builtins":
        found = builtins.__dict__.get(type_name)
        if isinstance(found, type) and issubclass(found, Exception):
            cls = found
    if not isinstance(cls, type) or not issubclass(cls, Exception):
        return remote
    try:
        local = cls(message)
    except Exception:
        return remote
    local.__cause__ = remote
    if remote.remote_traceback:
        local.add_note(f"remote traceback:\n{remote.remote_traceback}")
    return local


# -- calling -------------------------------------------------------------------------


def _caller() -> str | None:
    try:
        return current_process().pid.uri
    except NotInProcess:
        return None


def _send_request(
    me: Node, node: str, name: str, args: Iterable[object]
) -> tuple[ReplySlot, Pid]:
    """Open a reply slot and send one call request; the slot may already
    hold an answer (a refusal)."""
    target = service_address(node)
    slot = ReplySlot(me)
    try:
        if node != me.name:
            me.watch_node(slot.address, node)
        if not slot.received:
            status = me.send_checked(
                target,
                [CALL, slot.address, _caller(), ["call", name, list(args)]],
                channel=CHANNEL,
            )
            if status is not SendStatus.OK and status is not SendStatus.PARTITIONED:
                slot.deliver(
                    [NOPROC]
                    if node == me.name
                    else (
                        [OVERLOADED]
                        if status is SendStatus.OVERLOADED
                        else [_NOT_SENT, status.value]
                    )
                )
    except BaseException:
        slot.close()
        raise
    return slot, target


_NOT_SENT: Final = "$not_sent"


def _result(me: Node, target: Pid, name: str, message: object) -> object:
    if type(message) is list and message:
        tag = message[0]
        if tag == OK and len(message) == 2:
            return message[1]
        if tag == _ERROR and len(message) == 2:
            raise _remote_exception(message[1])
        if tag in (_UNDEF, NOPROC):
            raise NotExported(
                target.node, tag, f"{target.node} exports no function {name!r}"
            )
        if tag == _NOT_SENT:
            raise NodeDownError(
                target.node, message[1], f"cannot reach {target.node}: {message[1]}"
            )
    raise failure(message, target, me)


async def call(
    node: str,
    name: str,
    args: Iterable[object] = (),
    timeout: float | None = DEFAULT_TIMEOUT,
) -> object:
    """Run the function *node* exports as *name* with *args*; its result.

    Works from any task inside a node; *node* may be this node.

    Raises:
        NotExported: no such export on *node*.
        RemoteError: the function raised (or the builtin / registered
            exception class it raised, with the RemoteError as its cause).
        Overloaded: *node* is at its concurrency bound (nothing ran).
        NodeDownError: *node* is not up or went down.
        CallTimeout: no answer within *timeout* seconds.
    """
    me = current_node()
    slot, target = _send_request(me, node, name, args)
    try:
        await slot.wait(timeout)
        message = slot.message
    finally:
        slot.close()
    return _result(me, target, name, message)


def cast(node: str, name: str, args: Iterable[object] = ()) -> None:
    """Run *name* on *node* without waiting (best effort; errors are counted
    there, never reported)."""
    current_node().send(
        service_address(node), [CAST, ["cast", name, list(args)]], channel=CHANNEL
    )


async def multicall(
    nodes: Iterable[str],
    name: str,
    args: Iterable[object] = (),
    timeout: float | None = DEFAULT_TIMEOUT,
) -> list[Outcome]:
    """Call *name* on every node at once; one :class:`Outcome` per node, in
    the order given, within one shared *timeout*."""
    me = current_node()
    arguments = list(args)
    pending: list[tuple[str, ReplySlot, Pid]] = []
    try:
        for node in nodes:
            slot, target = _send_request(me, node, name, arguments)
            pending.append((node, slot, target))
        deadline = None if timeout is None else trio.current_time() + timeout
        outcomes = []
        for node, slot, target in pending:
            remaining = (
                None if deadline is None else max(0.0, deadline - trio.current_time())
            )
            await slot.wait(remaining)
            try:
                value = _result(me, target, name, slot.message)
            except Exception as exc:
                outcomes.append(Outcome(node, error=exc))
            else:
                outcomes.append(Outcome(node, value=value))
        return outcomes
    finally:
        for _, slot, _ in pending:
            slot.close()
