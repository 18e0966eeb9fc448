"""Goal: HyParView keeps its safety invariants under any schedule, and converges.

Method: a hypothesis ``RuleBasedStateMachine`` drives a cluster of up to 12 cores.
Messages travel on per-link FIFO queues (a TCP connection keeps order; links do
not order against each other), and hypothesis picks which link delivers next, which
timer fires next, when a node joins (through a random live contact), crashes (every
node with a connection to it sees it lost; dials to it fail) or leaves. Two
configurations are drawn: a *tight* one (active view 3, passive view 4) that keeps
overflow, eviction and HIGH-priority repair busy, and a *roomy* one (views larger
than the cluster) where no node is ever full.

Checked after every step, for every live core: no node lists itself; no node is in
both views; view sizes within bounds; the ``NeighbourUp`` / ``NeighbourDown``
effects pair up and the nodes "up" equal the active view; every active neighbour
has a connection the core asked for.

Checked at the end (liveness): with faults stopped, deliver everything and run a
few shuffle rounds. Active views must then be symmetric among live nodes; no live
node that knows another live node is isolated; and in the roomy configuration the
active-view graph must have the same components as the graph of everything the
nodes know (active and passive), hence be connected when no node crashed or left.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Hashable, Iterable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from runtime.core.effects import (
    CancelTimer,
    Connect,
    Disconnect,
    Effect,
    NeighbourDown,
    NeighbourUp,
    Send,
    SetTimer,
)
from runtime.core.hyparview import HyParView, HyParViewConfig
from runtime.core.spec import NodeSpec

NODES_MAX = 12
TIGHT = HyParViewConfig(
    active_view_size_max=3,
    passive_view_size_max=4,
    active_random_walk_length=3,
    passive_random_walk_length=2,
    shuffle_active_count=2,
    shuffle_passive_count=2,
    shuffle_walk_length=3,
)
ROOMY = HyParViewConfig(active_view_size_max=NODES_MAX - 1)
QUIESCE_ROUNDS_MAX = 6
# Generous: one step (a join, a shuffle round) costs tens of messages.
DELIVERIES_MAX = 200_000


def _spec(index: int) -> NodeSpec:
    return NodeSpec(name=f"n{index}@sim", addresses=[("10.0.0.1", 9000 + index)])


def _components(
    nodes: Iterable[str], edges: dict[str, set[str]]
) -> set[frozenset[str]]:
    left = set(nodes)
    found: set[frozenset[str]] = set()
    while left:
        start = min(left)
        seen, stack = {start}, [start]
        while stack:
            for peer in sorted(edges.get(stack.pop(), ())):
                if peer in left and peer not in seen:
                    seen.add(peer)
                    stack.append(peer)
        left -= seen
        found.add(frozenset(seen))
    return found


class HyParViewMachine(RuleBasedStateMachine):
    """A cluster of HyParView cores under a schedule hypothesis chooses."""

    def __init__(self) -> None:
        super().__init__()
        self.config = TIGHT
        self.now = 0.0
        self.cores: dict[str, HyParView] = {}
        self.dead: set[str] = set()
        self.links: dict[tuple[str, str], deque[object]] = {}
        # Connection events the driver reports: (kind, at, peer), kind is
        # "failed" (a dial) or "lost" (an open connection).
        self.events: deque[tuple[str, str, str]] = deque()
        self.timers: dict[tuple[str, Hashable], float] = {}
        self.up: dict[str, set[str]] = {}
        self.connected: dict[str, set[str]] = {}
        self.faulted = False

    # -- harness ------------------------------------------------------------------

    def live(self) -> list[str]:
        return sorted(n for n in self.cores if n not in self.dead)

    def apply(self, at: str, effects: Iterable[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    assert to != at
                    assert to in self.connected[at], f"{at} sends to unconnected {to}"
                    if to not in self.dead:
                        self.links.setdefault((at, to), deque()).append(message)
                case Connect(spec=target):
                    self.connected[at].add(target.name)
                    if target.name in self.dead or target.name not in self.cores:
                        self.events.append(("failed", at, target.name))
                case Disconnect(peer=peer):
                    self.connected[at].discard(peer)
                case SetTimer(name=name, at=when):
                    assert when >= self.now
                    self.timers[(at, name)] = when
                case CancelTimer(name=name):
                    self.timers.pop((at, name), None)
                case NeighbourUp(spec=peer):
                    assert peer.name not in self.up[at], f"{at}: {peer.name} up twice"
                    self.up[at].add(peer.name)
                case NeighbourDown(peer=peer):
                    assert peer in self.up[at], f"{at}: {peer} down but never up"
                    self.up[at].discard(peer)

    def pending_items(self) -> list[tuple[str, str, str]]:
        items = [
            ("link", src, dst) for (src, dst), q in sorted(self.links.items()) if q
        ]
        return items + [("event", str(i), "") for i in range(len(self.events))]

    def deliver(self, item: tuple[str, str, str]) -> None:
        kind, first, second = item
        if kind == "link":
            message = self.links[(first, second)].popleft()
            if second not in self.dead:
                core = self.cores[second]
                self.apply(second, core.on_message(first, message, self.now))
            return
        event = self.events[int(first)]
        del self.events[int(first)]
        what, at, peer = event
        if at in self.dead:
            return
        self.connected[at].discard(peer)
        core = self.cores[at]
        if what == "failed":
            self.apply(at, core.on_connect_failed(peer, self.now))
        else:
            self.apply(at, core.on_connection_lost(peer, self.now))

    def deliver_all(self) -> None:
        for _ in range(DELIVERIES_MAX):
            items = self.pending_items()
            if not items:
                return
            self.deliver(items[0])
        raise AssertionError("messages kept flowing with no timer firing")

    def due_timers(self) -> list[tuple[float, str, str, Hashable]]:
        return sorted(
            (when, at, repr(name), name)
            for (at, name), when in self.timers.items()
            if at not in self.dead
        )

    def fire(self, timer: tuple[float, str, str, Hashable]) -> None:
        when, at, _, name = timer
        del self.timers[(at, name)]
        self.now = max(self.now, when)
        self.apply(at, self.cores[at].on_timer(name, self.now))

    def add_core(self) -> str:
        index = len(self.cores)
        me = _spec(index)
        core = HyParView(me, self.config, random.Random(index))
        self.cores[me.name] = core
        self.up[me.name] = set()
        self.connected[me.name] = set()
        self.apply(me.name, core.start(self.now))
        return me.name

    def stop(self, name: str) -> None:
        """*name* is gone: links to it drop, and its open connections are lost."""
        self.dead.add(name)
        self.faulted = True
        for other in self.live():
            if name in self.connected[other]:
                self.events.append(("lost", other, name))

    # -- rules ----------------------------------------------------------------------

    @initialize(roomy=st.booleans())
    def first_node(self, roomy: bool) -> None:
        self.config = ROOMY if roomy else TIGHT
        self.add_core()

    @precondition(lambda self: len(self.cores) < NODES_MAX)
    @rule(contact=st.integers(min_value=0, max_value=NODES_MAX))
    def join_node(self, contact: int) -> None:
        live = self.live()
        if not live:
            return
        target = self.cores[live[contact % len(live)]].me
        name = self.add_core()
        self.apply(name, self.cores[name].join(target, self.now))

    @precondition(lambda self: len(self.cores) - len(self.dead) >= 2)
    @rule(victim=st.integers(min_value=0, max_value=NODES_MAX))
    def crash_node(self, victim: int) -> None:
        live = self.live()
        name = live[victim % len(live)]
        for key in [k for k in self.links if name in k]:
            del self.links[key]
        self.stop(name)

    @precondition(lambda self: len(self.cores) - len(self.dead) >= 2)
    @rule(victim=st.integers(min_value=0, max_value=NODES_MAX))
    def leave_node(self, victim: int) -> None:
        live = self.live()
        name = live[victim % len(live)]
        # A graceful leave: what the node queued is still delivered.
        self.apply(name, self.cores[name].leave(self.now))
        self.stop(name)

    @precondition(lambda self: bool(self.pending_items()))
    @rule(choice=st.integers(min_value=0, max_value=1_000))
    def deliver_one(self, choice: int) -> None:
        items = self.pending_items()
        self.deliver(items[choice % len(items)])

    @rule(count=st.integers(min_value=1, max_value=20))
    def deliver_in_order(self, count: int) -> None:
        for _ in range(count):
            items = self.pending_items()
            if not items:
                return
            self.deliver(items[0])

    @precondition(lambda self: bool(self.due_timers()))
    @rule(choice=st.integers(min_value=0, max_value=1_000))
    def fire_timer(self, choice: int) -> None:
        timers = self.due_timers()
        # Mostly the earliest; sometimes a later one, so timers race messages.
        self.fire(timers[0] if choice % 3 else timers[choice % len(timers)])

    # -- invariants -------------------------------------------------------------

    @invariant()
    def views_are_well_formed(self) -> None:
        for name in self.live():
            core = self.cores[name]
            active, passive = core.active_view(), core.passive_view()
            assert name not in active
            assert name not in passive
            assert not set(active) & set(passive)
            assert len(active) <= self.config.active_view_size_max
            assert len(passive) <= self.config.passive_view_size_max
            assert sorted(self.up[name]) == active
            assert set(active) <= self.connected[name]
            stats = core.statistics()
            assert stats.active_view_size == len(active)
            assert stats.neighbour_up_count - stats.neighbour_down_count == len(active)

    def teardown(self) -> None:
        if not self.cores:
            return
        self.deliver_all()
        for _ in range(QUIESCE_ROUNDS_MAX):
            end = self.now + self.config.shuffle_interval
            while (timers := self.due_timers()) and timers[0][0] <= end:
                self.fire(timers[0])
                self.deliver_all()
            self.now = end
            if self.converged():
                break
        self.check_converged()

    def knowledge(self) -> dict[str, set[str]]:
        edges: dict[str, set[str]] = {n: set() for n in self.live()}
        for name in self.live():
            core = self.cores[name]
            for peer in core.active_view() + core.passive_view():
                if peer in edges:
                    edges[name].add(peer)
                    edges[peer].add(name)
        return edges

    def active_edges(self) -> dict[str, set[str]]:
        return {n: set(self.cores[n].active_view()) for n in self.live()}

    def converged(self) -> bool:
        if self.config is not ROOMY:
            return True
        live = self.live()
        return _components(live, self.active_edges()) == _components(
            live, self.knowledge()
        )

    def check_converged(self) -> None:
        live = self.live()
        knowledge = self.knowledge()
        for name in live:
            for peer in self.cores[name].active_view():
                assert peer not in self.dead, f"{name} keeps dead {peer} active"
                assert name in self.cores[peer].active_view(), f"{name} -> {peer} only"
            if knowledge[name]:
                assert self.cores[name].active_view(), f"{name} isolated"
        if self.config is ROOMY:
            components = _components(live, self.active_edges())
            assert components == _components(live, knowledge)
            if not self.faulted:
                assert len(components) == 1


HyParViewMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None
)
TestCase = HyParViewMachine.TestCase
