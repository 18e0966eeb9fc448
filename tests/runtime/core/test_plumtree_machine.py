"""Goal: Plumtree never delivers twice, keeps its peer sets disjoint, and, once
faults stop, delivers every broadcast to every node (reliability 100%).

Method: a hypothesis ``RuleBasedStateMachine`` over 4-10 nodes on a random
connected graph (a random spanning tree plus extra links, drawn from
``st.randoms`` so failures shrink). Rules: broadcast a new id from any node;
deliver any in-flight message (hypothesis picks which, so messages are
reordered, even on one link); fire the earliest timer (advancing the virtual
clock); lose a message; restore a lost link.

Loss model: in our runtime a message is lost only with its connection (TCP;
DESIGN.md, "What loses nothing means"), which membership reports as the
neighbour going down. So a loss drops the chosen message and every other message
in flight on that link, and both ends get ``on_neighbour_down``; restoring the
link gives both ends ``on_neighbour_up``. Losses are bounded (3 per run).

Safety, checked after every step: no node delivers an id twice (the driver
applies each ``Deliver`` to a dict-backed handler); no peer is both eager and
lazy; a node is never its own peer; no ``Send`` goes to a node that is not a
live neighbour. Liveness, in teardown: restore every link, then deliver in FIFO
order and fire timers until quiet (bounded); every node must hold every id.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from runtime.core.effects import CancelTimer, Send, SetTimer
from runtime.core.plumtree import (
    Deliver,
    Plumtree,
    PlumtreeConfig,
    PlumtreeEffect,
)

LOSS_COUNT_MAX = 3
QUIET_STEPS_MAX = 50_000


class Store:
    """A handler that holds every applied message in a dict."""

    def __init__(self) -> None:
        self.data: dict[Hashable, object] = {}

    def is_stale(self, message_id: Hashable) -> bool:
        return message_id in self.data

    def graft(self, message_id: Hashable) -> object | None:
        return self.data.get(message_id)

    def merge(self, message_id: Hashable, payload: object) -> bool:
        new = message_id not in self.data
        self.data[message_id] = payload
        return new


def link(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


class PlumtreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Small bounds so that queues fill and flush early; big enough caches
        # that nothing a run broadcasts is forgotten.
        self.config = PlumtreeConfig(ihave_batch_size_max=3, optimization_threshold=2)
        self.now = 0.0
        self.nodes: dict[str, Plumtree] = {}
        self.stores: dict[str, Store] = {}
        self.links: list[tuple[str, str]] = []
        self.down: list[tuple[str, str]] = []
        self.inflight: list[tuple[str, str, object]] = []
        self.timers: dict[tuple[str, Hashable], tuple[float, int]] = {}
        self.seq = 0
        self.delivered: dict[str, list[Hashable]] = {}
        self.broadcasts: list[Hashable] = []
        self.losses = 0

    @initialize(count=st.integers(min_value=4, max_value=10), rnd=st.randoms())
    def build(self, count: int, rnd: random.Random) -> None:
        names = [f"n{i}" for i in range(count)]
        for name in names:
            self.stores[name] = Store()
            self.nodes[name] = Plumtree(
                name, self.config, random.Random(rnd.random()), self.stores[name]
            )
            self.delivered[name] = []
        chosen: set[tuple[str, str]] = set()
        for i in range(1, count):
            chosen.add(link(names[i], names[rnd.randrange(i)]))
        for _ in range(rnd.randrange(count * 2)):
            a, b = rnd.sample(names, 2)
            chosen.add(link(a, b))
        self.links = sorted(chosen)
        for a, b in self.links:
            self.connect(a, b)

    # Driver.

    def apply(self, name: str, effects: list[PlumtreeEffect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    pair = link(name, to)
                    assert pair in self.links, f"{name} sent to non-neighbour {to}"
                    assert pair not in self.down, f"{name} sent on down link {pair}"
                    self.inflight.append((name, to, message))
                case SetTimer(name=timer, at=at):
                    assert at >= self.now
                    self.seq += 1
                    self.timers[(name, timer)] = (at, self.seq)
                case CancelTimer(name=timer):
                    self.timers.pop((name, timer), None)
                case Deliver(message_id=message_id, payload=payload):
                    assert message_id not in self.delivered[name], (
                        f"{name} delivered {message_id!r} twice"
                    )
                    self.delivered[name].append(message_id)
                    self.stores[name].merge(message_id, payload)

    def connect(self, a: str, b: str) -> None:
        self.apply(a, self.nodes[a].on_neighbour_up(b, self.now))
        self.apply(b, self.nodes[b].on_neighbour_up(a, self.now))

    def deliver(self, index: int) -> None:
        src, dst, message = self.inflight.pop(index)
        self.apply(dst, self.nodes[dst].on_message(src, message, self.now))

    def fire_earliest(self) -> None:
        (name, timer), (at, _) = min(self.timers.items(), key=lambda kv: kv[1])
        del self.timers[(name, timer)]
        self.now = at
        self.apply(name, self.nodes[name].on_timer(timer, self.now))

    # Rules.

    @rule(data=st.data())
    def broadcast(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)), label="origin")
        message_id = f"m{len(self.broadcasts)}"
        self.broadcasts.append(message_id)
        payload = f"payload of {message_id}"
        self.stores[name].merge(message_id, payload)  # the application's own write
        self.apply(name, self.nodes[name].broadcast(message_id, payload, self.now))

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def deliver_any(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.inflight) - 1), label="message")
        self.deliver(index)

    @precondition(lambda self: self.timers)
    @rule()
    def fire_timer(self) -> None:
        self.fire_earliest()

    @precondition(lambda self: self.inflight and self.losses < LOSS_COUNT_MAX)
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.inflight) - 1), label="lost")
        src, dst, _ = self.inflight[index]
        pair = link(src, dst)
        self.losses += 1
        self.inflight = [m for m in self.inflight if link(m[0], m[1]) != pair]
        self.down.append(pair)
        self.apply(src, self.nodes[src].on_neighbour_down(dst, self.now))
        self.apply(dst, self.nodes[dst].on_neighbour_down(src, self.now))

    @precondition(lambda self: self.down)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        pair = data.draw(st.sampled_from(self.down), label="restored")
        self.down.remove(pair)
        self.connect(*pair)

    # Checks.

    @invariant()
    def peer_sets_are_disjoint(self) -> None:
        for name, node in self.nodes.items():
            eager, lazy = set(node.eager_peers()), set(node.lazy_peers())
            assert not eager & lazy
            assert name not in eager | lazy
            for peer in eager | lazy:
                assert link(name, peer) not in self.down

    @invariant()
    def nothing_delivered_twice(self) -> None:
        for delivered in self.delivered.values():
            assert len(delivered) == len(set(delivered))

    def teardown(self) -> None:
        if not self.nodes:
            return
        while self.down:
            self.connect(*self.down.pop())
        for _ in range(QUIET_STEPS_MAX):
            if self.inflight:
                self.deliver(0)
            elif self.timers:
                self.fire_earliest()
            else:
                break
        else:
            raise AssertionError("the cluster did not go quiet")
        for name, store in self.stores.items():
            missing = [m for m in self.broadcasts if m not in store.data]
            assert not missing, f"{name} never got {missing}"
            stats = self.nodes[name].statistics()
            assert stats.missing_count == 0
            assert stats.outstanding_count == 0


PlumtreeMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None
)
TestCase = PlumtreeMachine.TestCase
