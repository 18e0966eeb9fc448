"""A vehicle trip as a GenStatem: the example of ``docs/behaviours.md``.

A fleet tracker keeps one state machine per vehicle. Position reports arrive
as casts; the dispatcher asks with calls. The machine shows every GenStatem
feature in a setting where each one earns its keep::

              start_trip (call)              speed > 0 (cast)
    parked ----------------------> driving <------------------- stopped
      ^                            |  ^  |   speed == 0 (cast)    ^  |
      |          no position for   |  |  +------------------------+  |
      |          signal_timeout    |  |  position (cast)             |
      |          (event timeout)   v  |                              |
      |                         signal_lost                          |
      |   end_trip (call; postponed while the signal is lost),       |
      +-- idle_timeout in stopped (state timeout), or trip_max ------+
          (generic timeout: runs whatever the state)

* **State callbacks per state** (``callback_mode = "state_functions"``):
  ``parked``, ``driving``, ``stopped``, ``signal_lost``.
* **State enter calls** (``state_enter = True``) log each transition and set
  the timers that belong to the state.
* **Event timeout**: in ``driving``, any event restarts it; silence for
  ``signal_timeout`` seconds means the signal is lost.
* **State timeout**: ``stopped`` for ``idle_timeout`` ends the trip; leaving
  the state cancels it.
* **Generic timeout**: ``trip_max`` bounds a trip across every state.
* **Postpone**: ``end_trip`` while the signal is lost waits until the vehicle
  is heard again (the trip's end point must be known).
* **Inserted events**: ending a trip inserts an ``("internal", "close")``
  event, handled before anything queued, that writes the summary.

Run it: ``python -m examples.vehicle_trip`` (about two seconds).
"""

from __future__ import annotations

import math
from typing import Any, Final

import attrs
import trio

from runtime import NodeConfig, open_node
from runtime.behaviours import (
    EventTimeout,
    GenericTimeout,
    GenStatem,
    KeepState,
    KeepStateAndData,
    NextEvent,
    NextState,
    Postpone,
    ReplyTo,
    StateTimeout,
    call,
    cast,
    start,
)

__all__ = ["Timeouts", "Trip", "VehicleTrip", "main"]

_EARTH_RADIUS_M: Final = 6_371_000.0


@attrs.frozen
class Timeouts:
    """Seconds; the demo uses short ones."""

    signal: float = 30.0
    idle: float = 300.0
    trip_max: float = 12 * 3600.0


@attrs.frozen
class Trip:
    """The machine's data: the current trip (immutable; transitions replace it)."""

    vehicle: str
    started_at: float | None = None
    position: tuple[float, float] | None = None
    distance_m: float = 0.0
    reports: int = 0
    completed: tuple[dict[str, object], ...] = ()


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular approximation: fine for the few metres between reports."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    x = (lon2 - lon1) * math.cos((lat1 + lat2) / 2)
    return _EARTH_RADIUS_M * math.hypot(x, lat2 - lat1)


class VehicleTrip(GenStatem[Trip]):
    """One vehicle's trip state machine (see the module doc)."""

    callback_mode = "state_functions"
    state_enter = True

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts if timeouts is not None else Timeouts()
        self.transitions: list[tuple[object, object]] = []

    async def init(self, vehicle: str) -> NextState:
        return NextState("parked", Trip(vehicle=vehicle))

    # -- states -------------------------------------------------------------

    async def parked(self, event_type: Any, content: Any, data: Trip) -> Any:
        match event_type, content:
            case "enter", old:
                self.transitions.append((old, "parked"))
                return KeepStateAndData()
            case ("call", from_), "start_trip":
                trip = attrs.evolve(
                    data, started_at=trio.current_time(), distance_m=0.0, reports=0
                )
                return NextState(
                    "driving",
                    trip,
                    [
                        ReplyTo(from_, "started"),
                        GenericTimeout("trip_max", self.timeouts.trip_max, "too_long"),
                    ],
                )
            case "cast", ["position", lat, lon, _]:
                # Parked vehicles still report where they are.
                return KeepState(attrs.evolve(data, position=(lat, lon)))
        return await self._common(event_type, content, data)

    async def driving(self, event_type: Any, content: Any, data: Trip) -> Any:
        match event_type, content:
            case "enter", old:
                self.transitions.append((old, "driving"))
                return KeepStateAndData(EventTimeout(self.timeouts.signal, "silence"))
            case "cast", ["position", lat, lon, speed]:
                trip = self._moved(data, lat, lon)
                if speed == 0:
                    return NextState("stopped", trip)
                return KeepState(trip, EventTimeout(self.timeouts.signal, "silence"))
            case "timeout", "silence":
                return NextState("signal_lost", data)
            case ("call", from_), "end_trip":
                return self._end(data, from_)
        return await self._common(event_type, content, data)

    async def stopped(self, event_type: Any, content: Any, data: Trip) -> Any:
        match event_type, content:
            case "enter", old:
                self.transitions.append((old, "stopped"))
                return KeepStateAndData(StateTimeout(self.timeouts.idle, "idle"))
            case "cast", ["position", lat, lon, speed]:
                trip = self._moved(data, lat, lon)
                if speed > 0:
                    return NextState("driving", trip)
                return KeepState(trip)
            case "state_timeout", "idle":
                return self._end(data, None)
            case ("call", from_), "end_trip":
                return self._end(data, from_)
        return await self._common(event_type, content, data)

    async def signal_lost(self, event_type: Any, content: Any, data: Trip) -> Any:
        match event_type, content:
            case "enter", old:
                self.transitions.append((old, "signal_lost"))
                return KeepStateAndData()
            case "cast", ["position", lat, lon, speed]:
                trip = self._moved(data, lat, lon)
                return NextState("driving" if speed > 0 else "stopped", trip)
            case ("call", _), "end_trip":
                # Where did the trip end? Wait until the vehicle is heard.
                return KeepStateAndData(Postpone())
        return await self._common(event_type, content, data)

    # -- what every state does ---------------------------------------------

    async def _common(self, event_type: Any, content: Any, data: Trip) -> Any:
        match event_type, content:
            case ("call", from_), "summary":
                return KeepStateAndData(ReplyTo(from_, _summary(data)))
            case ("call", from_), "trips":
                return KeepStateAndData(ReplyTo(from_, list(data.completed)))
            case ("timeout", "trip_max"), _:
                return self._end(data, None)
            case "internal", "close":
                done = {**_summary(data), "ended_at": trio.current_time()}
                return KeepState(
                    attrs.evolve(
                        data, started_at=None, completed=(*data.completed, done)
                    )
                )
            case ("call", from_), _:
                return KeepStateAndData(ReplyTo(from_, ["error", "not now"]))
        return KeepStateAndData()

    def _end(self, data: Trip, from_: object) -> NextState:
        actions: list[Any] = [
            NextEvent("internal", "close"),
            GenericTimeout("trip_max", None),
        ]
        if from_ is not None:
            actions.insert(0, ReplyTo(from_, _summary(data)))
        return NextState("parked", data, actions)

    @staticmethod
    def _moved(data: Trip, lat: float, lon: float) -> Trip:
        step = _distance_m(data.position, (lat, lon)) if data.position else 0.0
        return attrs.evolve(
            data,
            position=(lat, lon),
            distance_m=data.distance_m + step,
            reports=data.reports + 1,
        )


def _summary(data: Trip) -> dict[str, object]:
    return {
        "vehicle": data.vehicle,
        "distance_m": round(data.distance_m, 1),
        "reports": data.reports,
    }


async def main() -> None:
    """Drive one vehicle through a trip with short timeouts, and print it."""
    config = NodeConfig(
        name="fleet@127.0.0.1",
        secret="example-secret-0123456789",
        listen=("127.0.0.1", 0),
    )
    async with open_node(config):
        machine = VehicleTrip(Timeouts(signal=0.3, idle=0.5, trip_max=60.0))
        truck = await start(machine, "truck-42", name="truck-42")
        print(await call(truck, "start_trip"))
        lat, lon = 52.3702, 4.8952
        for _ in range(5):
            lat += 0.0005
            cast(truck, ["position", lat, lon, 40.0])
            await trio.sleep(0.05)
        await trio.sleep(0.5)  # silence: the signal is lost
        async with trio.open_nursery() as nursery:
            # end_trip is postponed until the vehicle is heard again.
            nursery.start_soon(_end_trip, truck)
            await trio.sleep(0.1)
            cast(truck, ["position", lat + 0.0005, lon, 0.0])
        print(await call(truck, "summary"))
        print("transitions:", machine.transitions)
        print("trips:", await call(truck, "trips"))


async def _end_trip(truck: object) -> None:
    print("ended:", await call(truck, "end_trip"))


if __name__ == "__main__":
    trio.run(main)
