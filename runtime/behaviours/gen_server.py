"""GenServer: a process that serves calls, casts and other messages with state.

Theory of operation
-------------------
Port of OTP's ``gen_server``. A subclass of :class:`GenServer` implements the
callbacks; :func:`start` / :func:`start_link` run an instance as a process and
return once its ``init`` has returned (or raise :class:`StartError`). The
process then loops over its mailbox, one message at a time, in arrival order:

=====================================  ========================================
message                                callback
=====================================  ========================================
``["$gen_call", address, caller, r]``  ``handle_call(r, from_, state)``
``["$gen_cast", r]``                   ``handle_cast(r, state)``
``["$gen_stop", reason]``              ``terminate(reason, state)``, then exit
an ``Exit`` from the parent (when      ``terminate(reason, state)``, then exit
trapping exits)                        with that reason
the timeout of the last result         ``handle_info(TIMEOUT, state)``
anything else                          ``handle_info(message, state)``
=====================================  ========================================

Callbacks return what happens next, as values: :class:`Reply`,
:class:`NoReply`, :class:`Stop` (``handle_continue`` is run before the next
message when a result carries ``continue_``; a result's ``timeout`` delivers
:data:`TIMEOUT` if no message arrives in that many seconds). State is threaded
through the results, so callbacks need not mutate hidden state; a server that
prefers attributes on ``self`` returns ``None`` as its state.

If a callback raises, ``terminate(exception, state)`` runs and the process
exits with the exception (logged by the node; monitors and links see it). An
untrapped exit signal ends the process at once without ``terminate``, as in
OTP: call ``runtime.trap_exit(True)`` in ``init`` to get ``terminate`` when the
parent (a supervisor) shuts the server down.

Differences from OTP: no hot code upgrade (``code_change``), no hibernation,
no ``format_status``; ``init`` failing makes ``start_link`` raise
:class:`StartError` without sending the starter an exit signal.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar, final

import attrs
import trio

from runtime.behaviours.call import CALL, CAST, OK, STOP, From, HeldCalls
from runtime.errors import ProcessExit, ReceiveTimeout
from runtime.ref import Pid
from runtime.shell.node import Node, current_node, current_process
from runtime.signals import Exit

__all__ = [
    "IGNORE",
    "KEEP",
    "NO_REPLY",
    "TIMEOUT",
    "AlreadyStarted",
    "GenServer",
    "NoReply",
    "Reply",
    "StartError",
    "Stop",
    "start",
    "start_link",
]

S = TypeVar("S")


@final
class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


TIMEOUT: Final = _Marker("TIMEOUT")
"""What ``handle_info`` receives when a result's ``timeout`` expired (OTP's
``timeout`` message). A local value: no peer can send it."""

IGNORE: Final = _Marker("IGNORE")
"""``init`` may return it: the server does not start and ``start`` returns
None (OTP's ``ignore``; a supervisor keeps the child spec without a pid)."""

KEEP: Final = _Marker("KEEP")
"""The default of :class:`Stop`'s state: leave it as it was."""

NO_REPLY: Final = _Marker("NO_REPLY")
"""The default of :class:`Stop`'s reply: none is sent."""

_NO_CONTINUE: Final = _Marker("NO_CONTINUE")


@final
@attrs.frozen
class Reply:
    """Answer the call with *value* and go on with *state*.

    Attributes:
        timeout: seconds without a message before ``handle_info(TIMEOUT)``.
        continue_: if given, ``handle_continue(continue_, state)`` runs before
            the next message.
    """

    value: object
    state: object
    timeout: float | None = attrs.field(default=None, kw_only=True)
    continue_: object = attrs.field(default=_NO_CONTINUE, kw_only=True)


@final
@attrs.frozen
class NoReply:
    """Go on with *state* without replying now (reply later with ``reply``)."""

    state: object
    timeout: float | None = attrs.field(default=None, kw_only=True)
    continue_: object = attrs.field(default=_NO_CONTINUE, kw_only=True)


@final
@attrs.frozen
class Stop:
    """Stop: run ``terminate(reason, state)`` and exit with *reason*.

    Attributes:
        reason: the exit reason (``"normal"``, ``"shutdown"``...).
        state: the new state (GenServer) or data (GenStatem); KEEP leaves it.
        reply: from ``handle_call`` only: sent to the caller before
            ``terminate`` runs.
    """

    reason: object = "normal"
    state: object = KEEP
    reply: object = attrs.field(default=NO_REPLY, kw_only=True)


class StartError(Exception):
    """``start`` / ``start_link`` failed: ``init`` raised (the exception is
    the ``__cause__`` and the ``reason``), returned ``Stop(reason)``, or did
    not return within the start timeout (reason ``"timeout"``)."""

    def __init__(self, reason: object) -> None:
        super().__init__(f"start failed: {reason!r}")
        self.reason = reason


class AlreadyStarted(StartError):
    """The name is already registered, to ``pid``."""

    def __init__(self, name: str, pid: Pid) -> None:
        super().__init__(("already_started", pid))
        self.name = name
        self.pid = pid


class GenServer(Generic[S]):
    """Extension point: subclass and implement the callbacks you need.

    Every callback is a coroutine. The instance is the server: run it with
    :func:`start` or :func:`start_link` (one instance per process).
    """

    async def init(self, arg: Any) -> Any:
        """Return the initial state, a :class:`NoReply` (state with a
        timeout or a continue), :class:`Stop` (start fails with its reason)
        or :data:`IGNORE`. Raising fails the start too."""
        return arg

    async def handle_call(self, request: Any, from_: From, state: S) -> Any:
        """Return :class:`Reply`, :class:`NoReply` (reply later with
        ``reply(from_, value)``) or :class:`Stop`."""
        raise NotImplementedError(
            f"{type(self).__qualname__} got a call it does not handle: {request!r}"
        )

    async def handle_cast(self, request: Any, state: S) -> Any:
        """Return :class:`NoReply` or :class:`Stop`."""
        raise NotImplementedError(
            f"{type(self).__qualname__} got a cast it does not handle: {request!r}"
        )

    async def handle_info(self, message: Any, state: S) -> Any:
        """Any other message (and :data:`TIMEOUT`, and ``Exit`` messages when
        trapping exits). Return :class:`NoReply` or :class:`Stop`. The
        default ignores the message."""
        return NoReply(state)

    async def handle_continue(self, continue_: Any, state: S) -> Any:
        """Run when a result carried ``continue_``; returns as ``handle_cast``."""
        raise NotImplementedError(f"{type(self).__qualname__} has no handle_continue")

    async def terminate(self, reason: object, state: S) -> None:
        """Clean up before the process exits with *reason* (not called when
        an untrapped exit signal kills it)."""


# -- starting -------------------------------------------------------------------


@final
class StartAck:
    """Where a starting behaviour reports the end of its ``init`` (local)."""

    __slots__ = ("_event", "done", "error", "ignored")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.done = False
        self.ignored = False
        self.error: StartError | None = None

    def ok(self) -> None:
        self._finish()

    def ignore(self) -> None:
        self.ignored = True
        self._finish()

    def fail(self, error: StartError) -> None:
        if not self.done:
            self.error = error
        self._finish()

    def _finish(self) -> None:
        self.done = True
        self._event.set()

    async def wait(self, timeout: float | None) -> bool:
        if timeout is None or math.isinf(timeout):
            await self._event.wait()
        else:
            with trio.move_on_after(timeout):
                await self._event.wait()
        return self.done


async def start_process(
    node: Node,
    body: Any,
    server: object,
    arg: object,
    *,
    name: str | None,
    link: bool,
    timeout: float | None,
) -> Pid | None:
    """Spawn ``body(server, arg, ack, parent)`` and wait for its ack (shared by
    GenServer, GenStatem and Supervisor)."""
    if name is not None:
        existing = node.whereis(name)
        if existing is not None:
            raise AlreadyStarted(name, existing)
    parent = current_process().pid if link else None
    ack = StartAck()
    pid = node.spawn(body, server, arg, ack, parent, name=name, link=link)
    if not await ack.wait(timeout):
        if link:
            node.unlink(pid)
        node.exit(pid, "kill")
        raise StartError("timeout")
    if ack.error is not None:
        raise ack.error
    return None if ack.ignored else pid


async def start(
    server: GenServer[Any],
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Run *server* as a process on the current node (not linked).

    Returns once ``init`` has returned: the pid, or None if it returned
    :data:`IGNORE`.

    Raises:
        AlreadyStarted: *name* is taken.
        StartError: ``init`` raised, returned :class:`Stop`, or took longer
            than *timeout* seconds (the process is then killed).
    """
    return await start_process(
        current_node(), _run, server, arg, name=name, link=False, timeout=timeout
    )


async def start_link(
    server: GenServer[Any],
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """As :func:`start`, linked to the calling process (supervisors use it).

    Raises:
        NotInProcess: called outside a process.
    """
    return await start_process(
        current_node(), _run, server, arg, name=name, link=True, timeout=timeout
    )


def init_failed(ack: StartAck, parent: Pid | None, error: StartError) -> None:
    """Report a failed init without an exit signal to the starter."""
    if parent is not None:
        current_node().unlink(parent)
    ack.fail(error)


async def run_init(
    init: Callable[[], Awaitable[object]], ack: StartAck, parent: Pid | None
) -> object:
    """Run a behaviour's ``init`` and tell the starter about every way it can
    end but success: a crash or ``Stop`` fails the start (and is re-raised as
    the process's exit), ``IGNORE`` is acknowledged and returned. The caller
    checks the shape of anything else and acknowledges it (GenServer and
    GenStatem share this; only what a good ``init`` returns differs)."""
    try:
        result = await init()
    except ProcessExit as exc:
        init_failed(ack, parent, StartError(exc.reason))
        raise
    except Exception as exc:
        error = StartError(exc)
        error.__cause__ = exc
        init_failed(ack, parent, error)
        raise
    if result is IGNORE:
        if parent is not None:
            current_node().unlink(parent)
        ack.ignore()
    elif type(result) is Stop:
        init_failed(ack, parent, StartError(result.reason))
        raise ProcessExit(result.reason)
    return result


# -- the loop -------------------------------------------------------------------


async def _run(
    server: GenServer[Any], arg: object, ack: StartAck, parent: Pid | None
) -> None:
    process = current_process()
    held = HeldCalls()
    reason: object = "normal"
    try:
        try:
            result = await run_init(lambda: server.init(arg), ack, parent)
            if result is IGNORE:
                return
            ack.ok()
        finally:
            if not ack.done:
                ack.fail(StartError("killed"))
        if type(result) is NoReply:
            await _loop(
                server, result.state, result.timeout, result.continue_, parent, held
            )
        else:
            await _loop(server, result, None, _NO_CONTINUE, parent, held)
    except ProcessExit as exc:
        reason = exc.reason
        raise
    except Exception as exc:
        reason = exc
        raise
    except BaseException:
        # Killed by an exit signal (or the node stopping): its reason is set.
        reason = process.exit_reason
        raise
    finally:
        held.answer_all(process, reason)


async def _loop(
    server: GenServer[Any],
    state: object,
    timeout: float | None,
    continue_: object,
    parent: Pid | None,
    held: HeldCalls,
) -> None:
    """Serve until a callback stops or crashes (see the module doc)."""
    process = current_process()
    receive = process.mailbox.receive
    send_to_address = process.node.send_to_address
    handle_call = server.handle_call
    take = held.take
    settle = held.settle
    while True:
        try:
            if continue_ is not _NO_CONTINUE:
                result = await server.handle_continue(continue_, state)
            else:
                if timeout is None:
                    message = await receive()
                else:
                    try:
                        message = await receive(None, timeout)
                    except ReceiveTimeout:
                        message = TIMEOUT
                if type(message) is list and message:
                    tag = message[0]
                    if tag == CALL and len(message) == 4:
                        from_ = take(message[1], message[2])
                        result = await handle_call(message[3], from_, state)
                        if type(result) is Reply:
                            settle(from_)
                            send_to_address(from_.address, [OK, result.value])
                            state = result.state
                            timeout = result.timeout
                            continue_ = result.continue_
                            continue
                        if type(result) is Stop and result.reply is not NO_REPLY:
                            settle(from_)
                            send_to_address(from_.address, [OK, result.reply])
                    elif tag == CAST and len(message) == 2:
                        result = await server.handle_cast(message[1], state)
                    elif tag == STOP and len(message) == 2:
                        result = Stop(message[1])
                    else:
                        result = await server.handle_info(message, state)
                elif (
                    type(message) is Exit
                    and parent is not None
                    and message.pid == parent
                    and process.trap_exit
                ):
                    result = Stop(message.reason)
                else:
                    result = await server.handle_info(message, state)
        except ProcessExit as exc:
            # A callback ended the process itself (Erlang's exit/1 in a
            # callback): terminate runs, as OTP does.
            await server.terminate(exc.reason, state)
            raise
        except Exception as exc:
            await server.terminate(exc, state)
            raise
        if type(result) is NoReply:
            state = result.state
            timeout = result.timeout
            continue_ = result.continue_
            continue
        if type(result) is Stop:
            if result.state is not KEEP:
                state = result.state
            await server.terminate(result.reason, state)
            raise ProcessExit(result.reason)
        wanted = (
            "NoReply or Stop" if type(result) is Reply else "Reply, NoReply or Stop"
        )
        error = TypeError(f"{type(server).__qualname__} returned {result!r}: {wanted}")
        await server.terminate(error, state)
        raise error
