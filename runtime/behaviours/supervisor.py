"""Supervisor: starts, watches and restarts child processes.

Theory of operation
-------------------
Port of OTP's ``supervisor``. A supervisor is a GenServer that traps exits and
links to each child it starts (a child's ``start`` must link the new process
to its caller: ``gen_server.start_link``, ``gen_statem.start_link``,
``supervisor.start_link``, ``runtime.spawn_link``). Children are started in
the order of their specs and shut down in the reverse order.

When a child ends (an ``Exit`` from it), its *restart* type decides:

==============  ================================================================
restart         restarted when it ends with
==============  ================================================================
``permanent``   any reason
``transient``   a reason other than ``"normal"``, ``"shutdown"`` or
                ``("shutdown", x)`` (a list ``["shutdown", x]`` from another
                node); otherwise its spec stays, without a pid
``temporary``   never; its spec is removed
==============  ================================================================

and the *strategy* decides what is restarted with it: ``one_for_one`` only
the child; ``one_for_all`` every child (the others are shut down first, in
reverse order, then all started in order); ``rest_for_one`` the child and
those started after it. Temporary children caught up in a group restart are
shut down and removed, never restarted.

Restart intensity: more than ``intensity`` restarts within ``period`` seconds
and the supervisor gives up: it shuts every child down and exits with reason
``"shutdown"``, so its own supervisor sees it end (escalation). A child whose
restart fails counts as another restart and is retried (after the messages
already queued), until it starts or the intensity is exceeded.

Shutting a child down (``shutdown`` of its spec): the supervisor monitors and
unlinks it, sends it an exit signal ``"shutdown"`` and waits up to
``shutdown`` seconds for it to end, then kills it (``"kill"``);
``"brutal_kill"`` kills at once and ``"infinity"`` waits for ever (the
default for a child that is a supervisor, so it shuts its own children down).
A GenServer child gets ``terminate`` only if it traps exits, as in OTP.

Dynamic children: :func:`start_child`, :func:`terminate_child`,
:func:`restart_child`, :func:`delete_child`, :func:`which_children`,
:func:`count_children` are calls to the supervisor process. ``start_child``
carries a Python callable, so it works with a supervisor on the same node
only; the others take a child id (a str) and work across nodes.

The node root supervisor (:func:`root_supervisor`): one per node, registered
as ``"partisan_sup"``, ``one_for_one``, started on first use and not linked to
anything (it lives as long as the node). The runtime puts its own process
services under it (today the rpc service, ``"partisan_rpc"``, once anything is
exported); applications attach their own trees with :func:`start_child`. The
node's transport, membership and broadcast machinery are trio tasks owned by
the node's nursery, not processes: they stop with the node, never alone.

Differences from OTP: no ``simple_one_for_one`` (use ``start_child`` with
distinct ids), no ``significant`` children or ``auto_shutdown``, no
``modules`` list; child ids are strings.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import trio

from runtime.behaviours.call import DEFAULT_TIMEOUT, From, call
from runtime.behaviours.gen_server import (
    IGNORE,
    GenServer,
    NoReply,
    Reply,
    StartError,
    Stop,
    start_process,
)
from runtime.behaviours.gen_server import _run as _run_gen_server
from runtime.errors import ReceiveTimeout
from runtime.ref import Pid
from runtime.shell.node import Node, current_node, current_process
from runtime.signals import Down, Exit

__all__ = [
    "ROOT_NAME",
    "ChildInfo",
    "ChildSpec",
    "Supervisor",
    "SupervisorError",
    "SupervisorSpec",
    "count_children",
    "delete_child",
    "restart_child",
    "root_supervisor",
    "start",
    "start_child",
    "start_link",
    "terminate_child",
    "which_children",
]

log = logging.getLogger("runtime.supervisor")

ROOT_NAME: Final = "partisan_sup"
"""The registered name of a node's root supervisor."""

_RESTARTS: Final = ("permanent", "transient", "temporary")
_STRATEGIES: Final = ("one_for_one", "one_for_all", "rest_for_one")
_TYPES: Final = ("worker", "supervisor")
_RETRY: Final = "$sup_retry"
# The root supervisor's intensity: generous, since it holds unrelated trees.
_ROOT_INTENSITY: Final = 10
_ROOT_PERIOD: Final = 10.0


def _check_shutdown(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value in ("brutal_kill", "infinity"):
        return
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return
    raise ValueError(
        f"{attribute.name} is seconds >= 0, 'brutal_kill' or 'infinity', not {value!r}"
    )


def _default_shutdown(spec: ChildSpec) -> float | str:
    return "infinity" if spec.type == "supervisor" else 5.0


@final
@attrs.frozen(kw_only=True)
class ChildSpec:
    """How to start and look after one child.

    Attributes:
        id: the child's name within its supervisor (unique there).
        start: called (in the supervisor process) to start the child linked
            to the supervisor; returns its pid, or None to be ignored (its
            spec is kept without a pid). May be a coroutine function.
        restart: ``"permanent"`` (default), ``"transient"`` or ``"temporary"``.
        shutdown: seconds to wait after the exit signal ``"shutdown"`` before
            killing; ``"brutal_kill"``; or ``"infinity"``. Defaults to 5.0 for
            a worker and ``"infinity"`` for a supervisor.
        type: ``"worker"`` or ``"supervisor"``.
    """

    id: str = attrs.field(validator=attrs.validators.instance_of(str))
    start: Callable[[], Awaitable[Pid | None] | Pid | None] = attrs.field(
        validator=attrs.validators.is_callable()
    )
    restart: str = attrs.field(
        default="permanent", validator=attrs.validators.in_(_RESTARTS)
    )
    type: str = attrs.field(default="worker", validator=attrs.validators.in_(_TYPES))
    shutdown: float | str = attrs.field(
        default=attrs.Factory(_default_shutdown, takes_self=True),
        validator=_check_shutdown,
    )


@final
@attrs.frozen(kw_only=True)
class SupervisorSpec:
    """A supervisor's strategy, restart intensity and children.

    Attributes:
        strategy: ``"one_for_one"`` (default), ``"one_for_all"`` or
            ``"rest_for_one"``.
        intensity: restarts allowed within *period* (OTP's default, 1).
        period: seconds (OTP's default, 5).
        children: started in this order, shut down in the reverse order.
    """

    strategy: str = attrs.field(
        default="one_for_one", validator=attrs.validators.in_(_STRATEGIES)
    )
    intensity: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    period: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    children: tuple[ChildSpec, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        ids = [child.id for child in self.children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"child ids are not unique: {ids}")


@final
@attrs.frozen
class ChildInfo:
    """One child, as :func:`which_children` reports it."""

    id: str
    pid: Pid | None
    type: str
    restart: str


class SupervisorError(Exception):
    """A dynamic-child request was refused; ``reason`` says why
    (``"not_found"``, ``"running"``, ``"already_present"``, ``("already_started",
    pid)``, or the child's start error)."""

    def __init__(self, reason: object) -> None:
        super().__init__(f"supervisor refused: {reason!r}")
        self.reason = reason


class Supervisor:
    """Extension point: override :meth:`init`, or give a spec to the
    constructor."""

    def __init__(self, spec: SupervisorSpec | None = None) -> None:
        self.spec = spec

    async def init(self, arg: Any) -> SupervisorSpec | Any:
        """Return the :class:`SupervisorSpec` (or ``IGNORE``)."""
        if self.spec is None:
            raise NotImplementedError(
                f"{type(self).__qualname__} needs a spec or an init"
            )
        return self.spec


async def start(
    supervisor: Supervisor,
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Run *supervisor* (not linked); returns once every child has started.

    Raises:
        AlreadyStarted: *name* is taken.
        StartError: ``init`` failed, or a child failed to start (reason
            ``("failed_to_start_child", id, error)``; the children already
            started were shut down).
    """
    return await start_process(
        current_node(),
        _run_gen_server,
        _SupervisorServer(supervisor),
        arg,
        name=name,
        link=False,
        timeout=timeout,
    )


async def start_link(
    supervisor: Supervisor,
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """As :func:`start`, linked to the calling process (a supervisor child)."""
    return await start_process(
        current_node(),
        _run_gen_server,
        _SupervisorServer(supervisor),
        arg,
        name=name,
        link=True,
        timeout=timeout,
    )


# -- dynamic children (calls) -------------------------------------------------


async def _request(
    supervisor: object, request: list[object], timeout: float | None
) -> Any:
    answer = await call(supervisor, request, timeout)
    assert isinstance(answer, list)
    if answer[0] == "error":
        raise SupervisorError(answer[1])
    return answer[1]


async def start_child(
    supervisor: object, spec: ChildSpec, timeout: float | None = None
) -> Pid | None:
    """Add *spec* to a supervisor on this node and start it.

    Raises:
        SupervisorError: the id is taken (``"already_present"``, or
            ``("already_started", pid)``), or the child failed to start.
    """
    pid = await _request(supervisor, ["start_child", spec], timeout)
    assert pid is None or isinstance(pid, Pid)
    return pid


async def terminate_child(
    supervisor: object, child_id: str, timeout: float | None = None
) -> None:
    """Shut a child down; its spec stays (a temporary child's is removed)."""
    await _request(supervisor, ["terminate_child", child_id], timeout)


async def restart_child(
    supervisor: object, child_id: str, timeout: float | None = None
) -> Pid | None:
    """Start again a child that is not running (after ``terminate_child``)."""
    pid = await _request(supervisor, ["restart_child", child_id], timeout)
    return _pid(pid)


async def delete_child(
    supervisor: object, child_id: str, timeout: float | None = DEFAULT_TIMEOUT
) -> None:
    """Remove the spec of a child that is not running."""
    await _request(supervisor, ["delete_child", child_id], timeout)


async def which_children(
    supervisor: object, timeout: float | None = DEFAULT_TIMEOUT
) -> list[ChildInfo]:
    """The children in start order."""
    rows = await _request(supervisor, ["which_children"], timeout)
    return [ChildInfo(row[0], _pid(row[1]), row[2], row[3]) for row in rows]


async def count_children(
    supervisor: object, timeout: float | None = DEFAULT_TIMEOUT
) -> dict[str, int]:
    """``specs``, ``active``, ``supervisors`` and ``workers`` counts."""
    counts = await _request(supervisor, ["count_children"], timeout)
    assert isinstance(counts, dict)
    return counts


def _pid(value: object) -> Pid | None:
    if value is None or isinstance(value, Pid):
        return value
    return Pid.from_uri(value)


# -- the root supervisor -----------------------------------------------------------


_root_locks: weakref.WeakKeyDictionary[Node, trio.Lock] = weakref.WeakKeyDictionary()


async def root_supervisor() -> Pid:
    """The current node's root supervisor, started on first use (see the
    module doc); attach children to it with :func:`start_child`."""
    node = current_node()
    pid = node.whereis(ROOT_NAME)
    if pid is not None:
        return pid
    lock = _root_locks.get(node)
    if lock is None:
        lock = _root_locks[node] = trio.Lock()
    async with lock:
        pid = node.whereis(ROOT_NAME)
        if pid is None:
            spec = SupervisorSpec(intensity=_ROOT_INTENSITY, period=_ROOT_PERIOD)
            pid = await start(Supervisor(spec), name=ROOT_NAME)
            assert pid is not None
    if not node.is_process_alive(pid):  # stopped meanwhile: not ours to hide
        raise SupervisorError("root supervisor stopped")
    return pid


# -- the supervisor process ------------------------------------------------------


@attrs.define(eq=False)
class _Child:
    spec: ChildSpec
    pid: Pid | None = None


@attrs.define(eq=False)
class _State:
    spec: SupervisorSpec
    children: list[_Child]
    restarts: deque[float] = attrs.field(factory=deque)


def _is_shutdown_reason(reason: object) -> bool:
    if reason in ("normal", "shutdown"):
        return True
    return (
        isinstance(reason, tuple | list)
        and len(reason) == 2
        and reason[0] == "shutdown"
    )


@final
class _SupervisorServer(GenServer[_State]):
    """The GenServer that runs a :class:`Supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.name = type(supervisor).__qualname__

    async def init(self, arg: Any) -> Any:
        current_node().trap_exit(flag=True)
        spec = await self.supervisor.init(arg)
        if spec is IGNORE:
            return IGNORE
        if not isinstance(spec, SupervisorSpec):
            raise TypeError(f"{self.name}.init returned {spec!r}, not a SupervisorSpec")
        state = _State(spec, [_Child(child) for child in spec.children])
        for child in state.children:
            try:
                await self._start(child)
            except Exception as exc:
                await self._shutdown_all(state)
                return Stop(("failed_to_start_child", child.spec.id, exc))
        return state

    # -- events -------------------------------------------------------------

    async def handle_info(self, message: Any, state: _State) -> Any:
        if type(message) is Exit and message.pid is not None:
            return await self._child_exited(message.pid, message.reason, state)
        if type(message) is list and len(message) == 2 and message[0] == _RETRY:
            child = self._find(state, message[1])
            if child is not None and child.pid is None:
                return await self._restart(child, state)
            return NoReply(state)
        if type(message) is Down:
            return NoReply(state)  # a monitor from a shutdown that raced
        log.warning("supervisor %s ignored a message: %r", self.name, message)
        return NoReply(state)

    async def handle_call(self, request: Any, from_: From, state: _State) -> Any:
        match request:
            case ["start_child", ChildSpec() as spec]:
                existing = self._find(state, spec.id)
                if existing is not None:
                    reason: object = (
                        ("already_started", existing.pid)
                        if existing.pid is not None
                        else "already_present"
                    )
                    return Reply(["error", reason], state)
                child = _Child(spec)
                try:
                    await self._start(child)
                except Exception as exc:
                    return Reply(["error", _plain(exc, from_)], state)
                state.children.append(child)
                return Reply(["ok", child.pid], state)
            case ["terminate_child", str(child_id)]:
                found = self._find(state, child_id)
                if found is None:
                    return Reply(["error", "not_found"], state)
                await self._shutdown(found)
                if found.spec.restart == "temporary":
                    state.children.remove(found)
                return Reply(["ok", None], state)
            case ["restart_child", str(child_id)]:
                found = self._find(state, child_id)
                if found is None:
                    return Reply(["error", "not_found"], state)
                if found.pid is not None:
                    return Reply(["error", "running"], state)
                try:
                    await self._start(found)
                except Exception as exc:
                    return Reply(["error", _plain(exc, from_)], state)
                return Reply(["ok", found.pid], state)
            case ["delete_child", str(child_id)]:
                found = self._find(state, child_id)
                if found is None:
                    return Reply(["error", "not_found"], state)
                if found.pid is not None:
                    return Reply(["error", "running"], state)
                state.children.remove(found)
                return Reply(["ok", None], state)
            case ["which_children"]:
                rows = [
                    [c.spec.id, c.pid, c.spec.type, c.spec.restart]
                    for c in state.children
                ]
                return Reply(["ok", rows], state)
            case ["count_children"]:
                counts = {
                    "specs": len(state.children),
                    "active": sum(c.pid is not None for c in state.children),
                    "supervisors": sum(
                        c.spec.type == "supervisor" for c in state.children
                    ),
                    "workers": sum(c.spec.type == "worker" for c in state.children),
                }
                return Reply(["ok", counts], state)
        return Reply(["error", ("bad_request", repr(request))], state)

    async def terminate(self, reason: object, state: _State) -> None:
        await self._shutdown_all(state)

    # -- restarts -------------------------------------------------------------

    async def _child_exited(self, pid: Pid, reason: object, state: _State) -> Any:
        child = next((c for c in state.children if c.pid == pid), None)
        if child is None:
            return NoReply(state)
        child.pid = None
        restart = child.spec.restart
        if restart == "temporary":
            state.children.remove(child)
            return NoReply(state)
        if restart == "transient" and _is_shutdown_reason(reason):
            return NoReply(state)
        if reason not in ("normal", "shutdown"):
            log.error(
                "supervisor %s: child %s (%s) exited: %r",
                self.name,
                child.spec.id,
                pid,
                reason,
            )
        return await self._restart(child, state)

    async def _restart(self, child: _Child, state: _State) -> Any:
        if not self._add_restart(state):
            log.error(
                "supervisor %s: more than %d restarts in %s s; shutting down",
                self.name,
                state.spec.intensity,
                state.spec.period,
            )
            await self._shutdown_all(state)
            return Stop("shutdown", state)
        strategy = state.spec.strategy
        if strategy == "one_for_one":
            group = [child]
        else:
            index = state.children.index(child)
            group = (
                state.children if strategy == "one_for_all" else state.children[index:]
            )
            group = list(group)
            for other in reversed(group):
                if other is not child:
                    await self._shutdown(other)
            # Temporary children caught up in a group restart are removed.
            for other in group:
                if other.spec.restart == "temporary":
                    state.children.remove(other)
            group = [c for c in group if c.spec.restart != "temporary"]
        for member in group:
            if member.pid is not None:
                continue
            try:
                await self._start(member)
            except Exception as exc:
                log.error(
                    "supervisor %s: restarting %s failed: %r",
                    self.name,
                    member.spec.id,
                    exc,
                )
                # Retried after what is queued, as another restart (OTP).
                current_node().send(current_process().pid, [_RETRY, member.spec.id])
                break
        return NoReply(state)

    def _add_restart(self, state: _State) -> bool:
        """Record a restart; False if that exceeds the intensity."""
        now = trio.current_time()
        restarts = state.restarts
        restarts.append(now)
        while restarts and restarts[0] < now - state.spec.period:
            restarts.popleft()
        return len(restarts) <= state.spec.intensity

    # -- starting and stopping children ----------------------------------------

    async def _start(self, child: _Child) -> None:
        result = child.spec.start()
        if inspect.isawaitable(result):
            result = await result
        if result is not None and not isinstance(result, Pid):
            raise StartError(f"child {child.spec.id} start returned {result!r}")
        child.pid = result

    async def _shutdown(self, child: _Child) -> None:
        """Stop one child (see the module doc); its pid is cleared."""
        pid = child.pid
        if pid is None:
            return
        child.pid = None
        node = current_node()
        mailbox = current_process().mailbox
        monitor = node.monitor(pid)
        node.unlink(pid)
        # An Exit it sent before the unlink is no longer news (OTP's flush).
        mailbox.discard(lambda m: type(m) is Exit and m.pid == pid)
        shutdown = child.spec.shutdown

        def is_down(message: object) -> bool:
            return type(message) is Down and message.ref == monitor

        if shutdown == "brutal_kill":
            node.exit(pid, "kill")
            down = await mailbox.receive(is_down)
        else:
            node.exit(pid, "shutdown")
            try:
                down = await mailbox.receive(
                    is_down, None if shutdown == "infinity" else float(shutdown)
                )
            except ReceiveTimeout:
                node.exit(pid, "kill")
                down = await mailbox.receive(is_down)
        assert isinstance(down, Down)
        if down.reason not in ("shutdown", "killed", "noproc", "normal"):
            log.warning(
                "supervisor %s: child %s ended with %r while shutting down",
                self.name,
                child.spec.id,
                down.reason,
            )

    async def _shutdown_all(self, state: _State) -> None:
        for child in reversed(state.children):
            await self._shutdown(child)

    @staticmethod
    def _find(state: _State, child_id: object) -> _Child | None:
        return next((c for c in state.children if c.spec.id == child_id), None)


def _plain(exc: Exception, from_: From) -> object:
    """An error for a reply: the exception locally, its repr for another node
    (replies across nodes hold plain data)."""
    if from_.address.startswith(f"partisan:pid:{current_node().name}:"):
        return exc
    return repr(exc)
