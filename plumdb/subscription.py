"""Subscriptions of the PlumDB service: a bounded queue of changes per subscriber.

The store calls its subscribers synchronously, inside the write (or the merge
of a replica's object). The service must not let a subscriber's pace reach
that path (a merge is on the replication path; DESIGN.md's lesson from
Partisan's synchronous event bus), so each :class:`Subscription` is a queue:
the store's callback only appends to it, and the subscriber's task takes
changes out at its own pace with :meth:`Subscription.receive` or ``async
for``.

Bounded: past ``queue_length_max`` changes the *oldest* queued change is
dropped (the newest state of a key matters more than an old one), counted in
:attr:`Subscription.dropped_count` and logged once per overflow episode.
Nothing is dropped silently.

Resource handling: :meth:`Subscription.close` (or ``with``) ends it; a task
blocked in ``receive`` then gets ``trio.EndOfChannel`` once the queue is
drained, as does ``async for``, which simply ends.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import final

import trio

from plumdb.core.keys import FullPrefixPattern, KeyPattern, key_matches, prefix_matches
from plumdb.store import Change

__all__ = ["Subscription"]

_log = logging.getLogger("plumdb.subscription")


@final
class Subscription:
    """Changes to keys matching a full-prefix pattern and a key pattern.

    Make one with :meth:`plumdb.PlumDB.subscribe`. Each item is a
    :class:`~plumdb.Change`: ``origin`` ``"local"`` for this node's writes,
    ``"remote"`` for a replica's that changed something here;
    ``change.value`` / ``change.deleted`` give the last-write-wins reading.
    """

    def __init__(
        self,
        full_prefix: FullPrefixPattern,
        key: KeyPattern,
        *,
        queue_length_max: int,
        on_close: Callable[[Subscription], None],
    ) -> None:
        if type(queue_length_max) is not int or queue_length_max < 1:
            raise ValueError("queue_length_max must be an int >= 1")
        self.full_prefix = full_prefix
        self.key = key
        self.queue_length_max = queue_length_max
        self.dropped_count = 0
        self.delivered_count = 0
        self._queue: deque[Change] = deque()
        self._changed = trio.Event()
        self._closed = False
        self._overflowing = False
        self._on_close = on_close

    # The producer side (the service's store callback). Never blocks.

    def matches(self, change: Change) -> bool:
        """Whether *change* is one this subscription wants."""
        return prefix_matches(self.full_prefix, change.full_prefix) and key_matches(
            self.key, change.key
        )

    def offer(self, change: Change) -> None:
        """Queue *change* (dropping the oldest if full). Synchronous."""
        if self._closed:
            return
        if len(self._queue) >= self.queue_length_max:
            self._queue.popleft()
            self.dropped_count += 1
            if not self._overflowing:
                self._overflowing = True
                _log.warning(
                    "plumdb subscriber of %r %r is %d changes behind: dropping the"
                    " oldest (dropped_count counts them)",
                    self.full_prefix,
                    self.key,
                    self.queue_length_max,
                )
        self._queue.append(change)
        self._changed.set()

    # The consumer side.

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        """Changes queued, not yet received."""
        return len(self._queue)

    def receive_nowait(self) -> Change:
        """The oldest queued change.

        Raises:
            trio.WouldBlock: nothing is queued.
            trio.EndOfChannel: closed and drained.
        """
        if self._queue:
            self.delivered_count += 1
            if len(self._queue) <= self.queue_length_max // 2:
                self._overflowing = False
            return self._queue.popleft()
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Change:
        """Wait for the next change (a checkpoint).

        Raises:
            trio.EndOfChannel: closed and drained.
        """
        while True:
            try:
                change = self.receive_nowait()
            except trio.WouldBlock:
                if self._changed.is_set():
                    self._changed = trio.Event()
                await self._changed.wait()
                continue
            await trio.lowlevel.checkpoint()
            return change

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving changes (idempotent); queued ones can still be read."""
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        self._on_close(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
