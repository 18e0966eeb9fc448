"""Fault injection on a live node: partitions and message interposition.

Partisan lets a test cut a node off from others (``inject_partition``) and put
predicates on the send and receive paths that drop, delay or duplicate chosen
messages (interposition). Both work here on real clusters (TCP, TLS) and on the
in-memory network, because they act in the node, not in the network:

* **A partition** of this node from a set of nodes refuses every send to them
  (``send_checked`` returns ``partitioned``), drops every frame received from
  them, refuses their connections during the handshake and does not dial them.
  Our existing connections to them are closed at once, so this node sees them
  down at once; they see us go silent and declare us down after their heartbeat
  timeout. It ends at its *ttl* or by :meth:`Faults.resolve_partition`, after
  which connections are redialled at once.
* **An interposition** is ``(direction, predicate, action)``: for each user
  message sent to (or received from) another node for which
  ``predicate(node, message)`` is true, the action drops it, delays it by
  ``delay`` seconds, or delivers it twice. Control traffic (membership,
  heartbeats, monitors) is not interposed: partition a node to cut that.

When no fault is active the node's hot paths pay one ``is None`` test.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from runtime.ref import Ref

if TYPE_CHECKING:
    from runtime.shell.transport import Route

__all__ = ["FaultAction", "Faults", "Interposition", "Partition"]

log = logging.getLogger("runtime.faults")


class FaultAction(enum.Enum):
    """What an interposition does to a matching message."""

    DROP = "drop"
    DELAY = "delay"
    DUPLICATE = "duplicate"


class Direction(enum.Enum):
    SEND = "send"
    RECEIVE = "receive"


Predicate = Callable[[str, object], bool]


@final
@attrs.frozen(kw_only=True)
class Partition:
    """An injected partition: this node is cut from *nodes* until *until*."""

    ref: Ref
    nodes: frozenset[str]
    until: float | None


@final
@attrs.frozen(kw_only=True)
class Interposition:
    """A predicate on one direction of user traffic and what to do on a match."""

    ref: Ref
    direction: Direction
    predicate: Predicate
    action: FaultAction
    delay: float = 0.0


@final
class Faults:
    """The faults injected on one node.

    Args:
        make_ref: mints the refs naming faults.
        nursery: where TTL timers and delayed deliveries run.
        reset_peer: closes and redials the connections to a node.
        on_change: called when the first fault is added and when the last
            is removed (the node installs or removes the filter).
    """

    def __init__(
        self,
        *,
        make_ref: Callable[[], Ref],
        nursery: trio.Nursery,
        reset_peer: Callable[[str], None],
        on_change: Callable[[], None],
    ) -> None:
        self._make_ref = make_ref
        self._nursery = nursery
        self._reset_peer = reset_peer
        self._on_change = on_change
        self._partitions: dict[Ref, Partition] = {}
        self._cut: dict[str, int] = {}
        self._interpositions: dict[Ref, Interposition] = {}
        self.dropped_count = 0
        self.delayed_count = 0
        self.duplicated_count = 0

    # -- partitions -----------------------------------------------------------

    def inject_partition(self, nodes: list[str], ttl: float | None = None) -> Ref:
        """Cut this node from *nodes* (for *ttl* seconds, or until resolved)."""
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be positive seconds, not {ttl!r}")
        was_active = self.active
        ref = self._make_ref()
        until = None if ttl is None else trio.current_time() + ttl
        partition = Partition(ref=ref, nodes=frozenset(nodes), until=until)
        self._partitions[ref] = partition
        for node in partition.nodes:
            self._cut[node] = self._cut.get(node, 0) + 1
        if not was_active:
            self._on_change()
        for node in sorted(partition.nodes):
            self._reset_peer(node)
        if ttl is not None:
            self._nursery.start_soon(self._expire, ref, ttl)
        log.warning("partition %s injected: cut from %s", ref, sorted(partition.nodes))
        return ref

    def resolve_partition(self, ref: Ref) -> bool:
        """End partition *ref*; False if it is not active (expired or unknown)."""
        partition = self._partitions.pop(ref, None)
        if partition is None:
            return False
        healed = []
        for node in partition.nodes:
            self._cut[node] -= 1
            if not self._cut[node]:
                del self._cut[node]
                healed.append(node)
        if not self.active:
            self._on_change()
        for node in sorted(healed):
            self._reset_peer(node)
        log.warning("partition %s resolved", ref)
        return True

    def partitions(self) -> list[Partition]:
        """The active partitions, oldest first."""
        return list(self._partitions.values())

    async def _expire(self, ref: Ref, ttl: float) -> None:
        await trio.sleep(ttl)
        self.resolve_partition(ref)

    def partitioned(self, node: str) -> bool:
        return node in self._cut

    # -- interposition ----------------------------------------------------------

    def interpose(
        self,
        direction: str,
        predicate: Predicate,
        action: FaultAction | str,
        *,
        delay: float = 0.0,
    ) -> Ref:
        """Apply *action* to user messages in *direction* matching *predicate*.

        Raises:
            ValueError: unknown direction or action, or a negative delay.
        """
        if delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        was_active = self.active
        ref = self._make_ref()
        self._interpositions[ref] = Interposition(
            ref=ref,
            direction=Direction(direction),
            predicate=predicate,
            action=FaultAction(action),
            delay=delay,
        )
        if not was_active:
            self._on_change()
        return ref

    def remove_interposition(self, ref: Ref) -> bool:
        """Remove interposition *ref*; False if unknown."""
        if self._interpositions.pop(ref, None) is None:
            return False
        if not self.active:
            self._on_change()
        return True

    def interpositions(self) -> list[Interposition]:
        return list(self._interpositions.values())

    @property
    def active(self) -> bool:
        return bool(self._partitions or self._interpositions)

    def on_send(self, node: str, message: object) -> tuple[int, float]:
        """How many copies of a user message to *node* to send, and after what
        delay: ``(0, 0)`` drops it."""
        if node in self._cut:
            self.dropped_count += 1
            return 0, 0.0
        return self._decide(Direction.SEND, node, message)

    def filter_received(self, node: str, route: Route, envelope: list[Any]) -> None:
        """Route *envelope* (a user message or control) from *node*, or not."""
        if node in self._cut:
            self.dropped_count += 1
            return
        kind = envelope[0]
        if kind > 2:  # control traffic is not interposed
            route(*envelope)
            return
        copies, delay = self._decide(Direction.RECEIVE, node, envelope[4])
        if delay:
            self._nursery.start_soon(self._route_later, route, envelope, copies, delay)
            return
        for _ in range(copies):
            route(*envelope)

    async def _route_later(
        self, route: Route, envelope: list[Any], copies: int, delay: float
    ) -> None:
        await trio.sleep(delay)
        for _ in range(copies):
            route(*envelope)

    def _decide(
        self, direction: Direction, node: str, message: object
    ) -> tuple[int, float]:
        copies, delay = 1, 0.0
        for interposition in self._interpositions.values():
            if interposition.direction is not direction:
                continue
            try:
                matched = interposition.predicate(node, message)
            except Exception:
                log.exception("interposition predicate %s raised", interposition.ref)
                continue
            if not matched:
                continue
            match interposition.action:
                case FaultAction.DROP:
                    self.dropped_count += 1
                    return 0, 0.0
                case FaultAction.DELAY:
                    self.delayed_count += 1
                    delay = max(delay, interposition.delay)
                case FaultAction.DUPLICATE:
                    self.duplicated_count += 1
                    copies = 2
        return copies, delay
