"""Named timers for the drivers of protocol cores: one task, earliest first.

Cores name their timers with any hashable value and ask for them at an
absolute time on trio's clock (``SetTimer(name, at)``; setting a pending
timer moves it). A driver holds one :class:`Timers`, runs :meth:`Timers.run`
in its nursery, and gets ``fire(name, now)`` calls in deadline order. A core
has a handful of timers, so finding the earliest is a scan; no heap to keep
consistent with moves and cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import final

import trio

from runtime.shell.parking import ParkingSpot

__all__ = ["Timers"]


@final
class Timers:
    """Pending timers of one driver, fired by :meth:`run`."""

    def __init__(self, fire: Callable[[Hashable, float], None]) -> None:
        self._fire = fire
        self._deadlines: dict[Hashable, float] = {}
        self._spot = ParkingSpot()

    def __len__(self) -> int:
        return len(self._deadlines)

    def set(self, name: Hashable, at: float) -> None:
        """Fire *name* at *at* (moving it if already pending)."""
        self._deadlines[name] = at
        self._spot.wake()

    def cancel(self, name: Hashable) -> None:
        self._deadlines.pop(name, None)

    def pending(self, name: Hashable) -> bool:
        return name in self._deadlines

    async def run(self) -> None:
        """Fire timers as they fall due, forever (cancel the scope to stop)."""
        deadlines = self._deadlines
        while True:
            if not deadlines:
                await self._spot.park()
                continue
            name, at = min(deadlines.items(), key=lambda item: item[1])
            now = trio.current_time()
            if at > now:
                with trio.move_on_at(at):
                    await self._spot.park()
                continue
            del deadlines[name]
            self._fire(name, now)
            await trio.lowlevel.checkpoint()
