"""Goal: GenStatem keeps OTP gen_statem's promises: state callbacks per state
and a handle_event mode, state enter calls, event / state / generic timeouts,
postpone, inserted events, calls and casts (locally and from another node),
stop and terminate.

Method: machines on in-memory nodes under MockClock (autojump). A scripted
machine in handle_event mode takes its transitions from the casts themselves
(a local cast may carry a function of ``(state, data)``), and records every
event it sees, so each test states exactly which transitions happen and checks
the order of the events that follow. The vehicle trip example is run end to
end on virtual time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

import runtime
from runtime import behaviours
from runtime.behaviours import (
    EventTimeout,
    GenericTimeout,
    GenStatem,
    KeepState,
    KeepStateAndData,
    NextEvent,
    NextState,
    Postpone,
    RepeatStateAndData,
    ReplyTo,
    ServerExited,
    StateTimeout,
    Stop,
    call,
    cast,
    reply,
)

Step = Callable[[Any, Any], Any]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def trip(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``examples.vehicle_trip`` (``examples`` is not an installed package)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("examples.vehicle_trip")


async def until(predicate: Any, seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


class Scripted(GenStatem[list[object]]):
    """handle_event mode; a cast of a function runs it as the transition."""

    callback_mode = "handle_event_function"

    def __init__(self) -> None:
        self.seen: list[tuple[object, object, object]] = []
        self.terminated: list[tuple[object, object]] = []

    async def init(self, arg: Any) -> Any:
        return NextState(arg, [], ())

    async def handle_event(
        self, event_type: Any, content: Any, state: Any, data: list[object]
    ) -> Any:
        kind = (
            "call"
            if isinstance(event_type, tuple) and event_type[0] == "call"
            else event_type
        )
        self.seen.append((state, kind, content if not callable(content) else "fn"))
        if callable(content):
            return content(state, data)
        if kind == "call":
            if content == "state":
                return KeepStateAndData(ReplyTo(event_type[1], state))
            if content == "postpone-me":
                return KeepStateAndData(Postpone())
            reply(event_type[1], ["got", content, state])
        return KeepStateAndData()

    async def terminate(self, reason: object, state: Any, data: list[object]) -> None:
        self.terminated.append((reason, state))


class ScriptedEnter(Scripted):
    state_enter = True


def events(machine: Scripted) -> list[tuple[object, object, object]]:
    return [e for e in machine.seen if e[2] != "fn"]


async def test_state_functions_and_enter_calls_run_the_vehicle_example(
    autojump_clock: Any, cluster: Any, trip: ModuleType
) -> None:
    async with cluster(1):
        machine = trip.VehicleTrip(trip.Timeouts(signal=30, idle=300, trip_max=3600))
        truck = await behaviours.start(machine, "truck-1")
        assert await call(truck, "summary") == {
            "vehicle": "truck-1",
            "distance_m": 0.0,
            "reports": 0,
        }
        assert await call(truck, "start_trip") == "started"
        for step in range(3):
            cast(truck, ["position", 52.0 + step * 0.001, 4.9, 50.0])
        await trio.sleep(10)
        assert machine.transitions == [("parked", "parked"), ("parked", "driving")]
        # 30 s without a report: event timeout, the signal is lost.
        await trio.sleep(25)
        assert machine.transitions[-1] == ("driving", "signal_lost")
        # end_trip is postponed until the vehicle is heard again.
        ended: list[object] = []

        async def end_trip() -> None:
            ended.append(await call(truck, "end_trip", timeout=None))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_trip)
            await trio.sleep(100)
            assert ended == []
            cast(truck, ["position", 52.003, 4.9, 0.0])
        assert ended[0]["reports"] == 4  # type: ignore[index]
        assert 300 < ended[0]["distance_m"] < 350  # type: ignore[index]
        assert machine.transitions[-2:] == [
            ("signal_lost", "stopped"),
            ("stopped", "parked"),
        ]
        # The inserted close event wrote the trip before anything queued.
        trips = await call(truck, "trips")
        assert len(trips) == 1  # type: ignore[arg-type]


async def test_state_timeout_ends_a_stop_and_a_state_change_cancels_it(
    autojump_clock: Any, cluster: Any, trip: ModuleType
) -> None:
    async with cluster(1):
        machine = trip.VehicleTrip(
            trip.Timeouts(signal=1000, idle=300, trip_max=10_000)
        )
        truck = await behaviours.start(machine, "truck-2")
        await call(truck, "start_trip")
        cast(truck, ["position", 52.0, 4.9, 0.0])  # stopped: idle timer starts
        await trio.sleep(200)
        cast(truck, ["position", 52.001, 4.9, 30.0])  # driving: cancelled
        await trio.sleep(200)
        assert machine.transitions[-1] == ("stopped", "driving")
        cast(truck, ["position", 52.002, 4.9, 0.0])
        await trio.sleep(299)
        assert machine.transitions[-1] == ("driving", "stopped")
        await trio.sleep(2)
        assert machine.transitions[-1] == ("stopped", "parked")


async def test_generic_timeout_runs_across_states(
    autojump_clock: Any, cluster: Any, trip: ModuleType
) -> None:
    async with cluster(1):
        machine = trip.VehicleTrip(
            trip.Timeouts(signal=10_000, idle=10_000, trip_max=50)
        )
        truck = await behaviours.start(machine, "truck-3")
        await call(truck, "start_trip")
        for step in range(4):
            cast(truck, ["position", 52.0, 4.9, 0.0 if step % 2 else 10.0])
            await trio.sleep(10)
        assert machine.transitions[-1][1] in ("driving", "stopped")
        await trio.sleep(15)
        assert machine.transitions[-1][1] == "parked"
        assert len(await call(truck, "trips")) == 1  # type: ignore[arg-type]


async def test_postponed_events_are_retried_in_order_after_a_state_change(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "closed")

        def note(name: str) -> Step:
            def step(state: Any, data: Any) -> Any:
                if state == "closed":
                    return KeepStateAndData(Postpone())
                data.append((name, state))
                return KeepState(data)

            return step

        cast(pid, note("first"))
        cast(pid, note("second"))
        cast(pid, lambda s, d: KeepStateAndData())  # no state change: no retry
        cast(pid, lambda s, d: NextState("open", d, NextEvent("internal", "inserted")))
        cast(pid, "queued")
        got = await call(pid, "state")
        assert got == "open"
        data_events = [e for e in machine.seen if e[1] != "call"]
        # Inserted first, then the postponed in their order, then the queue.
        assert [e[2] for e in data_events][-4:] == ["inserted", "fn", "fn", "queued"]
        snapshot: list[object] = []
        cast(pid, lambda s, d: snapshot.extend(d) or KeepStateAndData())
        await call(pid, "sync")
        assert snapshot == [("first", "open"), ("second", "open")]


async def test_inserted_events_keep_their_order_before_queued_messages(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "s")
        cast(
            pid,
            lambda s, d: KeepState(
                d,
                [NextEvent("internal", 1), NextEvent("cast", 2), NextEvent("info", 3)],
            ),
        )
        runtime.send(pid, "mail")
        await call(pid, "sync")
        assert events(machine)[:4] == [
            ("s", "internal", 1),
            ("s", "cast", 2),
            ("s", "info", 3),
            ("s", "info", "mail"),
        ]


async def test_event_timeout_fires_when_idle_and_any_event_cancels_it(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "s")
        started = trio.current_time()
        cast(pid, lambda s, d: KeepStateAndData(EventTimeout(10, "idle")))
        await trio.sleep(5)
        runtime.send(pid, "poke")  # cancels it
        await trio.sleep(20)
        assert ("s", "timeout", "idle") not in machine.seen
        cast(pid, lambda s, d: KeepStateAndData(EventTimeout(10, "idle")))
        await until(lambda: ("s", "timeout", "idle") in machine.seen)
        assert trio.current_time() - started == pytest.approx(35, abs=0.5)
        # Zero: fires at once if nothing is queued, is cancelled otherwise.
        cast(pid, lambda s, d: KeepStateAndData(EventTimeout(0, "zero")))
        await trio.sleep(1)
        assert machine.seen[-1] == ("s", "timeout", "zero")
        cast(pid, lambda s, d: KeepStateAndData(EventTimeout(0, "cancelled")))
        runtime.send(pid, "queued")
        await trio.sleep(1)
        assert machine.seen[-1] == ("s", "info", "queued")


async def test_state_timeout_is_replaced_cancelled_and_dropped_on_state_change(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "a")
        cast(pid, lambda s, d: KeepStateAndData(StateTimeout(10, "first")))
        cast(pid, lambda s, d: KeepStateAndData(StateTimeout(20, "second")))
        await trio.sleep(15)
        cast(pid, lambda s, d: KeepStateAndData())  # other events do not cancel
        await trio.sleep(10)
        assert [e for e in machine.seen if e[1] == "state_timeout"] == [
            ("a", "state_timeout", "second")
        ]
        cast(pid, lambda s, d: KeepStateAndData(StateTimeout(10, "third")))
        cast(pid, lambda s, d: KeepStateAndData(StateTimeout(None)))
        cast(pid, lambda s, d: KeepStateAndData(StateTimeout(10, "fourth")))
        cast(pid, lambda s, d: NextState("b", d))
        await trio.sleep(30)
        assert [e[2] for e in machine.seen if e[1] == "state_timeout"] == ["second"]
        # One set in the transition that changes state applies to the new state.
        cast(pid, lambda s, d: NextState("c", d, StateTimeout(5, "fifth")))
        await trio.sleep(6)
        assert machine.seen[-1] == ("c", "state_timeout", "fifth")


async def test_generic_timeouts_are_named_and_survive_state_changes(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "a")
        cast(
            pid,
            lambda s, d: KeepStateAndData(
                [GenericTimeout("x", 10, "x1"), GenericTimeout("y", 20, "y1")]
            ),
        )
        cast(pid, lambda s, d: NextState("b", d, GenericTimeout("x", 15, "x2")))
        cast(pid, lambda s, d: KeepStateAndData(GenericTimeout("y", None)))
        await trio.sleep(30)
        assert [e for e in machine.seen if isinstance(e[1], tuple)] == [
            ("b", ("timeout", "x"), "x2")
        ]


async def test_enter_calls_and_repeat_state(autojump_clock: Any, cluster: Any) -> None:
    async with cluster(1):
        machine = ScriptedEnter()
        pid = await behaviours.start(machine, "a")
        cast(pid, lambda s, d: NextState("b", d))
        cast(pid, lambda s, d: KeepStateAndData())
        cast(pid, lambda s, d: RepeatStateAndData())
        await call(pid, "sync")
        entries = [e for e in machine.seen if e[1] == "enter"]
        # Initial state (old = itself), a state change, a repeat.
        assert entries == [
            ("a", "enter", "a"),
            ("b", "enter", "a"),
            ("b", "enter", "b"),
        ]


async def test_an_enter_call_may_not_change_the_state(
    autojump_clock: Any, cluster: Any
) -> None:
    class BadEnter(GenStatem[None]):
        callback_mode = "handle_event_function"
        state_enter = True

        async def init(self, _: object) -> Any:
            return NextState("a", None)

        async def handle_event(
            self, event_type: Any, content: Any, state: Any, data: None
        ) -> Any:
            if event_type == "enter" and state == "b":
                return NextState("c", None)
            if event_type == "cast":
                return NextState("b", None)
            return KeepStateAndData()

    async with cluster(1) as [a]:
        pid = await behaviours.start(BadEnter())
        assert pid is not None
        ref_reason: list[object] = []

        async def watcher() -> None:
            ref = runtime.monitor(pid)
            cast(pid, "go")
            down = await runtime.receive(lambda m: getattr(m, "ref", None) == ref)
            ref_reason.append(down.reason)  # type: ignore[attr-defined]

        a.spawn(watcher)
        await until(lambda: ref_reason)
        assert isinstance(ref_reason[0], TypeError)


async def test_calls_casts_stop_and_terminate(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        machine = Scripted()
        with at(b):
            pid = await behaviours.start(machine, "idle", name="machine")
        with at(a):
            assert await call(("machine", b.name), "hello") == ["got", "hello", "idle"]
            assert await call(pid, "state") == "idle"
            cast(("machine", b.name), "remote cast")
            assert await call(pid, "state") == "idle"
            assert ("idle", "cast", "remote cast") in machine.seen
            await behaviours.stop(pid, "shutdown")
        assert machine.terminated == [("shutdown", "idle")]


async def test_stop_from_a_callback_and_held_calls_fail(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "s")
        failures: list[object] = []

        async def postponed_caller() -> None:
            with pytest.raises(ServerExited) as info:
                await call(pid, "postpone-me", timeout=60)
            failures.append(info.value.reason)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(postponed_caller)
            await trio.sleep(1)
            cast(pid, lambda s, d: Stop("done", ["final"]))
        assert failures == ["done"]
        assert machine.terminated == [("done", "s")]
        started = trio.current_time()
        with pytest.raises(behaviours.NoProcessError):
            await call(pid, "x", timeout=60)
        assert trio.current_time() == started


async def test_a_crash_fails_the_call_and_runs_terminate(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        machine = Scripted()
        pid = await behaviours.start(machine, "s")

        def crash(state: Any, data: Any) -> Any:
            raise LookupError("statem crash")

        with pytest.raises(ServerExited) as info:
            await call(pid, crash, timeout=60)
        assert isinstance(info.value.reason, LookupError)
        assert isinstance(machine.terminated[0][0], LookupError)
