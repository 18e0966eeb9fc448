"""Broadcast groups: the trio driver of the Plumtree core.

Theory of operation
-------------------
A *broadcast group* (DESIGN.md, Decisions) is one Plumtree core with its tree,
its outstanding tables and its handler, bound to one channel and run by one
:class:`BroadcastGroup` on a node. Groups are independent: PlumDB has its own,
an application may add others, each on the channel it chooses (the
``broadcast`` channel by default), and repair traffic stays on the group's
channel.

The group's neighbours are the nodes the membership service reports up (linked
and connected), under every strategy: the active view for HyParView, every
linked member for full mesh. A node coming up is ``on_neighbour_up`` (eager at
first, pruned to lazy by the first duplicate, announced the recent ids so a
reconnect repairs what a dead connection lost); a node going down is
``on_neighbour_down``.

Effects: ``Send`` becomes a control envelope (protocol ``broadcast:<group>``)
on the group's channel to that neighbour; ``SetTimer`` / ``CancelTimer`` go to
the group's timers; ``Deliver`` is queued and applied by the group's *apply*
task, which calls ``handler.merge`` in batches: the heavy apply (a durable
write) runs off the tree path, which keeps forwarding and pruning while it
works (Partisan v6's handler split). The core decided novelty already (its own
cache and the handler's fast ``is_stale``).
"""

from __future__ import annotations

import logging
import random
import secrets
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Final, assert_never, final

import attrs
import trio

from runtime.core.codec import MessageCodec
from runtime.core.effects import CancelTimer, Send, SetTimer
from runtime.core.plumtree import (
    MESSAGE_TYPES,
    Deliver,
    MessageId,
    Plumtree,
    PlumtreeConfig,
    PlumtreeEffect,
    PlumtreeHandler,
    PlumtreeStatistics,
)
from runtime.errors import MessageRefused
from runtime.shell.parking import ParkingSpot
from runtime.shell.timers import Timers

if TYPE_CHECKING:
    from runtime.shell.node import Node

__all__ = ["BroadcastGroup", "BroadcastStatistics", "open_broadcast_group"]

log = logging.getLogger("runtime.broadcast")

PROTOCOL_PREFIX: Final = "broadcast:"
# Delivers applied per turn of the apply task before it yields.
APPLY_BATCH_MAX: Final = 256
# Messages held per sender that is not (yet) our neighbour. Each side sees the
# other come up on its own schedule (each dials the other), so a neighbour's
# first messages (its catch-up announcements) may arrive a moment before we
# see it up; the core ignores non-neighbours, so they wait here until then.
EARLY_MESSAGES_MAX: Final = 1024


@final
@attrs.frozen
class BroadcastStatistics:
    """The core's counters plus the driver's."""

    core: PlumtreeStatistics
    neighbours: tuple[str, ...]
    applied_count: int
    applied_new_count: int
    apply_errors_count: int
    apply_queue_length: int
    refused_messages_count: int


@final
class BroadcastGroup:
    """One broadcast group on one node. Make one with :func:`open_broadcast_group`."""

    def __init__(
        self,
        node: Node,
        name: str,
        handler: PlumtreeHandler,
        config: PlumtreeConfig,
        rng: random.Random,
    ) -> None:
        self.node = node
        self.name = name
        self.protocol = PROTOCOL_PREFIX + name
        self.handler = handler
        self.config = config
        self.core = Plumtree(node.name, config, rng, handler)
        self._codec = MessageCodec(MESSAGE_TYPES)
        self._timers = Timers(self._fire)
        self._deliveries: deque[Deliver] = deque()
        self._apply_spot = ParkingSpot()
        self._neighbours: dict[str, None] = {}
        self._early: dict[str, list[object]] = {}
        self.early_dropped_count = 0
        self.applied_count = 0
        self.applied_new_count = 0
        self.apply_errors_count = 0
        self.refused_messages_count = 0

    # ------------------------------------------------------------------ public

    def broadcast(self, message_id: MessageId, payload: object) -> None:
        """Send a message the caller already applied locally to every node.

        Raises:
            ValueError: a bad or already-broadcast id, or a ``None`` payload.
        """
        self._execute(self.core.broadcast(message_id, payload, trio.current_time()))

    def neighbours(self) -> list[str]:
        return sorted(self._neighbours)

    def statistics(self) -> BroadcastStatistics:
        return BroadcastStatistics(
            core=self.core.statistics(),
            neighbours=tuple(sorted(self._neighbours)),
            applied_count=self.applied_count,
            applied_new_count=self.applied_new_count,
            apply_errors_count=self.apply_errors_count,
            apply_queue_length=len(self._deliveries),
            refused_messages_count=self.refused_messages_count,
        )

    # ------------------------------------------------------------------ events

    def _start(self) -> None:
        node = self.node
        node.register_control(self.protocol, self._on_message)
        node.add_node_listener(self._node_changed)
        node.nursery.start_soon(self._timers.run, name=f"{self.protocol} timers")
        node.nursery.start_soon(self._apply_loop, name=f"{self.protocol} apply")
        for peer in node.membership.up_nodes():
            self._node_changed(peer, True)  # noqa: FBT003

    def _node_changed(self, peer: str, up: bool) -> None:  # noqa: FBT001
        now = trio.current_time()
        if up:
            if peer not in self._neighbours:
                self._neighbours[peer] = None
                self._execute(self.core.on_neighbour_up(peer, now))
                for message in self._early.pop(peer, ()):
                    self._execute(self.core.on_message(peer, message, now))
        else:
            self._early.pop(peer, None)
            if peer in self._neighbours:
                del self._neighbours[peer]
                self._execute(self.core.on_neighbour_down(peer, now))

    def _on_message(self, sender: str, payload: Any) -> None:
        try:
            message = self._codec.decode(payload)
        except MessageRefused as exc:
            self.refused_messages_count += 1
            log.warning(
                "group %s refused a message from %s: %s", self.name, sender, exc
            )
            return
        if sender not in self._neighbours:
            early = self._early.setdefault(sender, [])
            if len(early) < EARLY_MESSAGES_MAX:
                early.append(message)
            else:
                self.early_dropped_count += 1
            return
        self._execute(self.core.on_message(sender, message, trio.current_time()))

    def _fire(self, name: Hashable, now: float) -> None:
        self._execute(self.core.on_timer(name, now))

    # ----------------------------------------------------------------- effects

    def _execute(self, effects: list[PlumtreeEffect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message, channel=channel):
                    self._send(to, message, channel)
                case SetTimer(name=name, at=at):
                    self._timers.set(name, at)
                case CancelTimer(name=name):
                    self._timers.cancel(name)
                case Deliver():
                    self._deliveries.append(effect)
                    self._apply_spot.wake()
                case _:
                    assert_never(effect)

    def _send(self, to: str, message: object, channel: str) -> None:
        # Held while the neighbour's connection on the group's channel comes
        # up; lost if it never does (repaired by the catch-up on the next
        # neighbour up, and by the application's anti-entropy).
        self.node.membership.send_control(
            to, self.protocol, self._codec.encode(message), channel, self.protocol
        )

    async def _apply_loop(self) -> None:
        deliveries = self._deliveries
        while True:
            if not deliveries:
                await self._apply_spot.park()
                continue
            for _ in range(min(len(deliveries), APPLY_BATCH_MAX)):
                delivery = deliveries.popleft()
                self.applied_count += 1
                try:
                    if self.handler.merge(delivery.message_id, delivery.payload):
                        self.applied_new_count += 1
                except Exception:
                    self.apply_errors_count += 1
                    log.exception(
                        "group %s: merge of %r failed", self.name, delivery.message_id
                    )
            await trio.lowlevel.checkpoint()


def open_broadcast_group(
    node: Node,
    name: str,
    handler: PlumtreeHandler,
    config: PlumtreeConfig | None = None,
    *,
    rng: random.Random | None = None,
) -> BroadcastGroup:
    """Start broadcast group *name* on the running *node* (one per name).

    Every node of the cluster must open the group under the same name for its
    messages to reach them; a node that has not receives nothing and counts
    the control messages as dropped.

    Raises:
        ValueError: a group of that name is already open on this node.
    """
    group = BroadcastGroup(
        node,
        name,
        handler,
        config if config is not None else PlumtreeConfig(),
        rng if rng is not None else random.Random(secrets.randbits(64)),
    )
    group._start()
    return group
