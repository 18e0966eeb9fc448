"""Process mailboxes: a deque the owner drains, woken once per batch.

Measured on this machine (DESIGN.md, The hot path): a mailbox on trio memory
channels ran at 86-245k msg/s, a deque plus a parked task woken only when the
deque was empty ran at 7-9M msg/s. So ``deliver`` is a synchronous append that
reschedules the owner only if it is parked, and a receiver that finds messages
waiting takes them without a trip through the scheduler.

Selective receive works as Erlang's: ``receive(match)`` returns the first queued
message the predicate accepts, leaving the others in order; while it waits it
only examines messages that arrived since its last scan.

Overload policy: unbounded by default, as in Erlang. With ``length_max`` a
delivery to a full mailbox is refused (``deliver`` returns False), counted and
logged (rate-limited); it never blocks the sender, which may be the node's
connection reader.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, final

import trio

from runtime.errors import ReceiveTimeout
from runtime.shell.parking import ParkingSpot

__all__ = ["Mailbox"]

# A receiver that always finds messages waiting would never yield; after this many
# receives without a real checkpoint it takes one, so others get to run.
_FAST_RECEIVES_MAX: Final = 64
# Overflow is logged on the first drop and then once per this many, so a flood
# of refusals cannot flood the log too; every drop is counted.
_OVERFLOW_LOG_EVERY: Final = 1000

log = logging.getLogger("runtime.node")


@final
class Mailbox:
    """The message queue of one process (or of any deliver-able target).

    Only one task may receive from a mailbox at a time (its owner).
    """

    __slots__ = (
        "_fast_receives",
        "_messages",
        "_spot",
        "closed",
        "dropped_count",
        "label",
        "length_max",
    )

    def __init__(self, length_max: int | None = None, *, label: str = "") -> None:
        self._messages: deque[object] = deque()
        # Where the owner waits while no queued message interests it.
        self._spot = ParkingSpot()
        self._fast_receives = 0
        self.length_max = length_max
        # Who owns the mailbox, for the overflow log (a pid URI).
        self.label = label
        self.dropped_count = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._messages)

    def deliver(self, message: object) -> bool:
        """Append a message; never blocks. Returns False if refused (closed/full)."""
        if self.closed:
            return False
        if self.length_max is not None and len(self._messages) >= self.length_max:
            self.dropped_count += 1
            if self.dropped_count % _OVERFLOW_LOG_EVERY == 1:
                log.warning(
                    "mailbox of %s is full (%d messages): %d dropped so far",
                    self.label or "a process",
                    self.length_max,
                    self.dropped_count,
                )
            return False
        self._messages.append(message)
        self._spot.wake()
        return True

    def discard(self, match: Callable[[object], bool]) -> int:
        """Remove every queued message *match* accepts (the owner's call, as
        ``demonitor(ref, flush=True)``); returns how many."""
        kept = [message for message in self._messages if not match(message)]
        removed = len(self._messages) - len(kept)
        if removed:
            self._messages.clear()
            self._messages.extend(kept)
        return removed

    def close(self) -> None:
        """Refuse further deliveries and drop what is queued (the owner died)."""
        self.closed = True
        self._messages.clear()

    async def _checkpoint(self) -> None:
        self._fast_receives += 1
        if self._fast_receives >= _FAST_RECEIVES_MAX:
            self._fast_receives = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def receive(
        self,
        match: Callable[[object], bool] | None = None,
        timeout: float | None = None,
    ) -> object:
        """The first queued message that *match* accepts (any, if None).

        This is a checkpoint (it may yield, and honours cancellation).

        Raises:
            ReceiveTimeout: nothing matched within *timeout* seconds.
        """
        messages = self._messages
        if messages and match is None:
            await self._checkpoint()
            return messages.popleft()
        if timeout is None:
            return await self._receive_matching(match)
        with trio.move_on_after(timeout):
            return await self._receive_matching(match)
        raise ReceiveTimeout(f"no message within {timeout} s")

    async def _receive_matching(self, match: Callable[[object], bool] | None) -> object:
        messages = self._messages
        scanned = 0
        while True:
            if match is None:
                if messages:
                    await self._checkpoint()
                    return messages.popleft()
            else:
                for index, message in enumerate(
                    itertools.islice(messages, scanned, None), scanned
                ):
                    if match(message):
                        del messages[index]
                        await self._checkpoint()
                        return message
                scanned = len(messages)
            await self._spot.park()

    async def receive_batch(
        self, limit: int | None = None, timeout: float | None = None
    ) -> list[object]:
        """Every queued message (up to *limit*), waiting for at least one.

        The fast way to drain a busy mailbox: one wake-up per batch.

        Raises:
            ReceiveTimeout: no message within *timeout* seconds.
        """
        messages = self._messages
        if messages:
            await self._checkpoint()
        elif timeout is None:
            while not messages:
                await self._spot.park()
        else:
            with trio.move_on_after(timeout):
                while not messages:
                    await self._spot.park()
            if not messages:
                raise ReceiveTimeout(f"no message within {timeout} s")
        if limit is None or limit >= len(messages):
            batch = list(messages)
            messages.clear()
        else:
            batch = [messages.popleft() for _ in range(limit)]
        return batch
