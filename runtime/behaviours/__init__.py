"""OTP behaviours: GenServer, GenStatem and Supervisor (``docs/behaviours.md``).

Subclass :class:`GenServer`, :class:`GenStatem` or :class:`Supervisor`, run an
instance with :func:`start` / :func:`start_link`, and talk to it with
:func:`call`, :func:`cast`, :func:`reply` and :func:`stop`, on any node::

    from runtime import behaviours
    from runtime.behaviours import GenServer, Reply

    class Counter(GenServer[int]):
        async def init(self, start):
            return start

        async def handle_call(self, request, from_, count):
            return Reply(count + request, count + request)

    pid = await behaviours.start(Counter(), 0, name="counter")
    await behaviours.call(("counter", "a@host"), 5)  # 5
"""

from __future__ import annotations

from typing import Any

from runtime.behaviours import gen_server, gen_statem, supervisor
from runtime.behaviours.call import (
    CallError,
    CallTimeout,
    From,
    NodeDownError,
    NoProcessError,
    Overloaded,
    ServerExited,
    call,
    cast,
    reply,
    stop,
)
from runtime.behaviours.gen_server import (
    IGNORE,
    TIMEOUT,
    AlreadyStarted,
    GenServer,
    NoReply,
    Reply,
    StartError,
    Stop,
)
from runtime.behaviours.gen_statem import (
    EventTimeout,
    GenericTimeout,
    GenStatem,
    KeepState,
    KeepStateAndData,
    NextEvent,
    NextState,
    Postpone,
    RepeatState,
    RepeatStateAndData,
    ReplyTo,
    StateTimeout,
)
from runtime.behaviours.supervisor import (
    ChildInfo,
    ChildSpec,
    Supervisor,
    SupervisorError,
    SupervisorSpec,
    count_children,
    delete_child,
    restart_child,
    root_supervisor,
    start_child,
    terminate_child,
    which_children,
)
from runtime.ref import Pid

__all__ = [
    "IGNORE",
    "TIMEOUT",
    "AlreadyStarted",
    "CallError",
    "CallTimeout",
    "ChildInfo",
    "ChildSpec",
    "EventTimeout",
    "From",
    "GenServer",
    "GenStatem",
    "GenericTimeout",
    "KeepState",
    "KeepStateAndData",
    "NextEvent",
    "NextState",
    "NoProcessError",
    "NoReply",
    "NodeDownError",
    "Overloaded",
    "Postpone",
    "RepeatState",
    "RepeatStateAndData",
    "Reply",
    "ReplyTo",
    "ServerExited",
    "StartError",
    "StateTimeout",
    "Stop",
    "Supervisor",
    "SupervisorError",
    "SupervisorSpec",
    "call",
    "cast",
    "count_children",
    "delete_child",
    "reply",
    "restart_child",
    "root_supervisor",
    "start",
    "start_child",
    "start_link",
    "stop",
    "terminate_child",
    "which_children",
]

Behaviour = GenServer[Any] | GenStatem[Any] | Supervisor


async def start(
    behaviour: Behaviour,
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Run a GenServer, GenStatem or Supervisor as a process on this node
    (not linked); returns its pid once its ``init`` has returned (None if
    ``init`` returned ``IGNORE``).

    Raises:
        AlreadyStarted: *name* is registered already.
        StartError: ``init`` raised, returned ``Stop``, or took longer than
            *timeout* seconds; a supervisor's child failed to start.
        TypeError: *behaviour* is none of the three.
    """
    if isinstance(behaviour, GenServer):
        return await gen_server.start(behaviour, arg, name=name, timeout=timeout)
    if isinstance(behaviour, GenStatem):
        return await gen_statem.start(behaviour, arg, name=name, timeout=timeout)
    if isinstance(behaviour, Supervisor):
        return await supervisor.start(behaviour, arg, name=name, timeout=timeout)
    raise TypeError(f"not a behaviour: {behaviour!r}")


async def start_link(
    behaviour: Behaviour,
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """As :func:`start`, linked to the calling process (what a supervisor
    child's ``start`` does).

    Raises:
        NotInProcess: called outside a process.
    """
    if isinstance(behaviour, GenServer):
        return await gen_server.start_link(behaviour, arg, name=name, timeout=timeout)
    if isinstance(behaviour, GenStatem):
        return await gen_statem.start_link(behaviour, arg, name=name, timeout=timeout)
    if isinstance(behaviour, Supervisor):
        return await supervisor.start_link(behaviour, arg, name=name, timeout=timeout)
    raise TypeError(f"not a behaviour: {behaviour!r}")
