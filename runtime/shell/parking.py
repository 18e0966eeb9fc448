"""A parking spot for one task: the wake-up shared by mailboxes and writers.

Both a process mailbox and a connection's writer have exactly one task that
waits for work, and a producer that must never block. The producer calls
:meth:`ParkingSpot.wake` (synchronous, a no-op when nobody waits); the consumer
calls :meth:`ParkingSpot.park` only when it found nothing to do. That is the
"wake once per batch" measured in DESIGN.md (The hot path): trio's low-level
reschedule, no Event or channel per message.
"""

from __future__ import annotations

from typing import final

import trio

__all__ = ["ParkingSpot"]


@final
class ParkingSpot:
    """Where one consumer task waits until a producer has work for it."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        # The parked task. Invariant: not None only while it waits in park().
        self.task: trio.lowlevel.Task | None = None

    def wake(self) -> None:
        """Reschedule the parked task, if any. Never blocks, never raises."""
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    async def park(self) -> None:
        """Wait until :meth:`wake` (a checkpoint; honours cancellation)."""
        assert self.task is None, "two tasks park in one spot"
        self.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
