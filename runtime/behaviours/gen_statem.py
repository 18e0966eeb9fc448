"""GenStatem: an event-driven state machine process.

Theory of operation
-------------------
Port of OTP's ``gen_statem``. A subclass of :class:`GenStatem` holds the
callbacks; :func:`start` / :func:`start_link` run it as a process. The machine
has a *state* and *data*. Every *event* goes to one callback:

* ``callback_mode = "state_functions"``: the method named after the state,
  ``async def locked(self, event_type, content, data)`` (states are then
  identifier strings, never a callback's name);
* ``callback_mode = "handle_event_function"``:
  ``async def handle_event(self, event_type, content, state, data)`` (states
  are any values compared with ``==``).

Event types, as OTP's (tuples where OTP has tuples, so ``match`` reads well):

=========================  =====================================================
event type                 content
=========================  =====================================================
``("call", from_)``        the request of ``call(statem, request)``; answer
                           with ``reply(from_, value)`` or a :class:`ReplyTo`
``"cast"``                 the request of ``cast(statem, request)``
``"info"``                 any other message
``"timeout"``              the content of an :class:`EventTimeout`
``"state_timeout"``        the content of a :class:`StateTimeout`
``("timeout", name)``      the content of a :class:`GenericTimeout`
``"internal"``             the content of a :class:`NextEvent` (any type may
                           be inserted, ``"internal"`` is the usual one)
``"enter"``                the previous state (``state_enter = True`` only)
=========================  =====================================================

A callback returns a transition: :class:`NextState`, :class:`KeepState`,
:class:`KeepStateAndData`, :class:`RepeatState`, :class:`RepeatStateAndData`
or :class:`~runtime.behaviours.gen_server.Stop`, each with a list of actions
(or one action):

* :class:`Postpone`: keep this event and retry it after the next state change;
* :class:`NextEvent`: insert an event, processed before any queued message
  (inserted events of one transition keep their order);
* :class:`EventTimeout`: an event ``"timeout"`` if no event at all comes in
  that many seconds (any event cancels it);
* :class:`StateTimeout`: a ``"state_timeout"`` event after that many seconds
  unless the state changes first (a new one replaces the old; ``None``
  cancels);
* :class:`GenericTimeout`: a named timer, ``("timeout", name)``, that only a
  new one of the same name (or ``None``) cancels;
* :class:`ReplyTo`: reply to a call.

Order of processing: events inserted by the last transition, then (after a
state change) the postponed events in their original order, then state and
generic timeouts that are due, then mailbox messages in arrival order. With
``state_enter = True`` the callback is also called with ``("enter", old_state)``
after every state change (and on :class:`RepeatState`, and for the initial
state with the initial state as old state); an enter call may not change the
state, postpone, or insert events.

Differences from OTP: no hibernation, no ``code_change``, no absolute or
``update`` timers; a timer that is already due fires before mailbox messages
that arrived before its deadline but are not yet processed (OTP delivers the
timeout as a message, after them); :class:`RepeatState` from an enter call is
a keep.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final, Generic, TypeAlias, TypeVar, final

import attrs
import trio

from runtime.behaviours.call import CALL, CAST, STOP, HeldCalls, reply
from runtime.behaviours.gen_server import (
    IGNORE,
    KEEP,
    StartAck,
    StartError,
    Stop,
    init_failed,
    run_init,
    start_process,
)
from runtime.errors import ProcessExit
from runtime.ref import Pid
from runtime.shell.node import current_node, current_process
from runtime.signals import Exit

__all__ = [
    "EventTimeout",
    "GenStatem",
    "GenericTimeout",
    "KeepState",
    "KeepStateAndData",
    "NextEvent",
    "NextState",
    "Postpone",
    "RepeatState",
    "RepeatStateAndData",
    "ReplyTo",
    "StateTimeout",
    "start",
    "start_link",
]

D = TypeVar("D")


@final
@attrs.frozen
class Postpone:
    """Action: retry this event after the next state change."""


@final
@attrs.frozen
class NextEvent:
    """Action: insert an event to process before any queued message."""

    event_type: object
    content: object = None


@final
@attrs.frozen
class EventTimeout:
    """Action: an event ``"timeout"`` with *content* if no event comes within
    *time* seconds (None: no timeout)."""

    time: float | None
    content: object = None


@final
@attrs.frozen
class StateTimeout:
    """Action: an event ``"state_timeout"`` with *content* after *time*
    seconds unless the state changes first (None cancels it)."""

    time: float | None
    content: object = None


@final
@attrs.frozen
class GenericTimeout:
    """Action: an event ``("timeout", name)`` with *content* after *time*
    seconds (None cancels the timer of that name)."""

    name: object
    time: float | None
    content: object = None


@final
@attrs.frozen
class ReplyTo:
    """Action: answer the call *from_* with *value*."""

    from_: object
    value: object


Action: TypeAlias = (
    Postpone | NextEvent | EventTimeout | StateTimeout | GenericTimeout | ReplyTo
)
Actions: TypeAlias = "Action | Iterable[Action]"


def _actions_field() -> Any:
    return attrs.field(default=(), converter=_to_actions)


_ACTION_TYPES: Final = (
    Postpone,
    NextEvent,
    EventTimeout,
    StateTimeout,
    GenericTimeout,
    ReplyTo,
)


def _to_actions(actions: Actions) -> tuple[Action, ...]:
    if isinstance(actions, _ACTION_TYPES):
        return (actions,)
    return tuple(actions)


@final
@attrs.frozen
class NextState:
    """Go to *state* with *data* (a state change if *state* differs)."""

    state: object
    data: object
    actions: tuple[Action, ...] = _actions_field()


@final
@attrs.frozen
class KeepState:
    """Stay in the state with new *data*."""

    data: object
    actions: tuple[Action, ...] = _actions_field()


@final
@attrs.frozen
class KeepStateAndData:
    """Stay in the state with the same data."""

    actions: tuple[Action, ...] = _actions_field()


@final
@attrs.frozen
class RepeatState:
    """As :class:`KeepState`, but the enter call runs again (state_enter)."""

    data: object
    actions: tuple[Action, ...] = _actions_field()


@final
@attrs.frozen
class RepeatStateAndData:
    """As :class:`KeepStateAndData`, but the enter call runs again."""

    actions: tuple[Action, ...] = _actions_field()


class GenStatem(Generic[D]):
    """Extension point: subclass, choose a ``callback_mode``, implement the
    state callbacks (see the module doc)."""

    callback_mode: ClassVar[str] = "state_functions"
    """``"state_functions"`` or ``"handle_event_function"``."""
    state_enter: ClassVar[bool] = False
    """Call the state callback with ``("enter", old_state)`` on state changes."""

    async def init(self, arg: Any) -> Any:
        """Return :class:`NextState` (the initial state, data and actions),
        :class:`~runtime.behaviours.gen_server.Stop` or ``IGNORE``."""
        raise NotImplementedError(f"{type(self).__qualname__} has no init")

    async def handle_event(
        self, event_type: Any, content: Any, state: Any, data: D
    ) -> Any:
        """Every event, in ``handle_event_function`` mode."""
        raise NotImplementedError(
            f"{type(self).__qualname__} has no handle_event for {event_type!r}"
        )

    async def terminate(self, reason: object, state: Any, data: D) -> None:
        """Clean up before the process exits with *reason* (not called when
        an untrapped exit signal kills it)."""


async def start(
    statem: GenStatem[Any],
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Run *statem* as a process (not linked); returns once ``init`` has.

    Raises:
        AlreadyStarted: *name* is taken.
        StartError: ``init`` raised or returned ``Stop``, or timed out.
    """
    return await start_process(
        current_node(), _run, statem, arg, name=name, link=False, timeout=timeout
    )


async def start_link(
    statem: GenStatem[Any],
    arg: object = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """As :func:`start`, linked to the calling process."""
    return await start_process(
        current_node(), _run, statem, arg, name=name, link=True, timeout=timeout
    )


_ENTER: Final = "enter"


async def _run(
    statem: GenStatem[Any], arg: object, ack: StartAck, parent: Pid | None
) -> None:
    process = current_process()
    held = HeldCalls()
    machine: _Machine | None = None
    reason: object = "normal"
    try:
        try:
            result = await run_init(lambda: statem.init(arg), ack, parent)
            if result is IGNORE:
                return
            if type(result) is not NextState:
                error = StartError(f"init returned {result!r}, want NextState")
                init_failed(ack, parent, error)
                raise error
            ack.ok()
        finally:
            if not ack.done:
                ack.fail(StartError("killed"))
        machine = _Machine(statem, result.state, result.data, parent, held)
        await machine.run(result.actions)
    except ProcessExit as exc:
        reason = exc.reason
        raise
    except Exception as exc:
        reason = exc
        raise
    except BaseException:
        reason = process.exit_reason
        raise
    finally:
        held.answer_all(process, reason)


class _Machine:
    """One running state machine (the loop and its queues)."""

    def __init__(
        self,
        statem: GenStatem[Any],
        state: object,
        data: object,
        parent: Pid | None,
        held: HeldCalls,
    ) -> None:
        if statem.callback_mode not in ("state_functions", "handle_event_function"):
            raise ValueError(f"unknown callback_mode {statem.callback_mode!r}")
        self.statem = statem
        self.state = state
        self.data = data
        self.parent = parent
        self.held = held
        self.process = current_process()
        self.by_state = statem.callback_mode == "state_functions"
        self.inserted: deque[tuple[object, object]] = deque()
        self.postponed: list[tuple[object, object]] = []
        # (deadline, content) of the state timeout, or None.
        self.state_timer: tuple[float, object] | None = None
        # Generic timers by name: (deadline, content).
        self.timers: dict[object, tuple[float, object]] = {}
        # (seconds, content) of the event timeout set by the last transition.
        self.event_timeout: tuple[float, object] | None = None
        self._methods: dict[object, Callable[..., Any]] = {}

    async def run(self, actions: tuple[Action, ...]) -> None:
        statem = self.statem
        try:
            self.inserted.extend(self._apply_actions(actions, None, enter=False))
            if statem.state_enter:
                await self._enter(self.state)
            while True:
                event_type, content = await self._next_event()
                await self._handle(event_type, content)
        except _Stopped as stopped:
            await statem.terminate(stopped.reason, self.state, self.data)
            raise ProcessExit(stopped.reason) from None
        except ProcessExit as exc:
            await statem.terminate(exc.reason, self.state, self.data)
            raise
        except Exception as exc:
            await statem.terminate(exc, self.state, self.data)
            raise

    # -- choosing the next event ------------------------------------------

    async def _next_event(self) -> tuple[object, object]:
        if self.inserted:
            self.event_timeout = None
            return self.inserted.popleft()
        mailbox = self.process.mailbox
        while True:
            now = trio.current_time()
            due = self._due_timer(now)
            if due is not None:
                self.event_timeout = None
                return due
            if len(mailbox):
                self.event_timeout = None
                return self._to_event(await mailbox.receive())
            deadline = self._next_deadline()
            event_deadline: float | None = None
            if self.event_timeout is not None:
                event_deadline = now + self.event_timeout[0]
                if deadline is None or event_deadline <= deadline:
                    deadline = event_deadline
            if deadline is None:
                message = await mailbox.receive()
                self.event_timeout = None
                return self._to_event(message)
            with trio.move_on_at(deadline):
                message = await mailbox.receive()
                self.event_timeout = None
                return self._to_event(message)
            if event_deadline is not None and deadline == event_deadline:
                assert self.event_timeout is not None
                content = self.event_timeout[1]
                self.event_timeout = None
                return ("timeout", content)
            # Otherwise a state or generic timer is due: the loop takes it
            # (an event, so it cancels the event timeout).

    def _due_timer(self, now: float) -> tuple[object, object] | None:
        """The earliest state or generic timer that is due, removed."""
        best: tuple[float, object, object] | None = None
        if self.state_timer is not None and self.state_timer[0] <= now:
            best = (self.state_timer[0], "state_timeout", self.state_timer[1])
        for name, (deadline, content) in self.timers.items():
            if deadline <= now and (best is None or deadline < best[0]):
                best = (deadline, ("timeout", name), content)
        if best is None:
            return None
        _, event_type, content = best
        if event_type == "state_timeout":
            self.state_timer = None
        else:
            assert isinstance(event_type, tuple)
            del self.timers[event_type[1]]
        return event_type, content

    def _next_deadline(self) -> float | None:
        deadlines = [deadline for deadline, _ in self.timers.values()]
        if self.state_timer is not None:
            deadlines.append(self.state_timer[0])
        return min(deadlines) if deadlines else None

    def _to_event(self, message: object) -> tuple[object, object]:
        if type(message) is list and message:
            tag = message[0]
            if tag == CALL and len(message) == 4:
                return (("call", self.held.take(message[1], message[2])), message[3])
            if tag == CAST and len(message) == 2:
                return ("cast", message[1])
            if tag == STOP and len(message) == 2:
                raise _Stopped(message[1])
        elif (
            type(message) is Exit
            and self.parent is not None
            and message.pid == self.parent
            and self.process.trap_exit
        ):
            raise _Stopped(message.reason)
        return ("info", message)

    # -- transitions --------------------------------------------------------

    def _callback(self, state: object) -> Callable[..., Any]:
        method = self._methods.get(state)
        if method is None:
            if not isinstance(state, str) or state in _RESERVED:
                raise TypeError(
                    f"state {state!r} cannot name a state function "
                    f"of {type(self.statem).__qualname__}"
                )
            found = getattr(self.statem, state, None)
            if found is None or not callable(found):
                raise TypeError(
                    f"{type(self.statem).__qualname__} has no state function "
                    f"for state {state!r}"
                )
            method = self._methods[state] = found
        return method

    async def _call(self, event_type: object, content: object) -> object:
        if self.by_state:
            return await self._callback(self.state)(event_type, content, self.data)
        return await self.statem.handle_event(
            event_type, content, self.state, self.data
        )

    async def _handle(self, event_type: object, content: object) -> None:
        result = await self._call(event_type, content)
        old = self.state
        repeat = False
        match result:
            case NextState(state=state, data=data, actions=actions):
                self.state, self.data = state, data
            case KeepState(data=data, actions=actions):
                self.data = data
            case KeepStateAndData(actions=actions):
                pass
            case RepeatState(data=data, actions=actions):
                self.data = data
                repeat = True
            case RepeatStateAndData(actions=actions):
                repeat = True
            case Stop(reason=reason, state=data):
                if data is not KEEP:
                    self.data = data
                raise _Stopped(reason)
            case _:
                raise TypeError(
                    f"{type(self.statem).__qualname__} returned {result!r}: "
                    "want a transition (NextState, KeepState, ...) or Stop"
                )
        changed = self.state != old
        if changed:
            self.state_timer = None
        inserted = self._apply_actions(actions, (event_type, content), enter=False)
        if changed and self.postponed:
            # OTP's order: this transition's inserted events, then the
            # postponed ones (oldest first), then what was queued before.
            self.inserted.extendleft(reversed(self.postponed))
            self.postponed.clear()
        self.inserted.extendleft(reversed(inserted))
        if self.statem.state_enter and (changed or repeat):
            await self._enter(old)

    async def _enter(self, old: object) -> None:
        result = await self._call(_ENTER, old)
        match result:
            case (
                KeepState(data=data, actions=actions)
                | RepeatState(data=data, actions=actions)
            ):
                self.data = data
            case (
                KeepStateAndData(actions=actions) | RepeatStateAndData(actions=actions)
            ):
                pass
            case NextState(state=state, data=data, actions=actions) if (
                state == self.state
            ):
                self.data = data
            case Stop(reason=reason, state=data):
                if data is not KEEP:
                    self.data = data
                raise _Stopped(reason)
            case _:
                raise TypeError(
                    f"{type(self.statem).__qualname__} returned {result!r} from an "
                    "enter call: it may not change the state"
                )
        self._apply_actions(actions, None, enter=True)

    def _apply_actions(
        self,
        actions: tuple[Action, ...],
        event: tuple[object, object] | None,
        *,
        enter: bool,
    ) -> list[tuple[object, object]]:
        """Carry out a transition's actions; returns the events it inserts."""
        now = trio.current_time()
        inserted: list[tuple[object, object]] = []
        # A transition without an EventTimeout has none; its enter call's
        # actions add to the transition's rather than replace them.
        event_timeout = self.event_timeout if enter else None
        for action in actions:
            match action:
                case Postpone():
                    if enter or event is None:
                        raise TypeError("an enter call (or init) may not postpone")
                    self.postponed.append(event)
                case NextEvent(event_type=event_type, content=content):
                    if enter:
                        raise TypeError("an enter call may not insert events")
                    inserted.append((event_type, content))
                case EventTimeout(time=time, content=content):
                    event_timeout = None if time is None else (time, content)
                case StateTimeout(time=time, content=content):
                    self.state_timer = None if time is None else (now + time, content)
                case GenericTimeout(name=name, time=time, content=content):
                    if time is None:
                        self.timers.pop(name, None)
                    else:
                        self.timers[name] = (now + time, content)
                case ReplyTo(from_=from_, value=value):
                    reply(from_, value)  # type: ignore[arg-type]
                case _:
                    raise TypeError(f"not a gen_statem action: {action!r}")
        self.event_timeout = event_timeout
        return inserted


_RESERVED: Final = frozenset(
    {"init", "terminate", "handle_event", "callback_mode", "state_enter"}
)


class _Stopped(Exception):
    def __init__(self, reason: object) -> None:
        super().__init__(reason)
        self.reason = reason
