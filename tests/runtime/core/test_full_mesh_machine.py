"""Goal: full-mesh membership stays well formed under any schedule, and converges.

Method: a hypothesis ``RuleBasedStateMachine`` drives up to 8 node names. Messages
sit in one bag and hypothesis picks which one is delivered next (any order),
whether it is delivered and kept for a second delivery (duplication) or dropped
(loss), and which gossip timer fires. Nodes start and join through a random live
contact, crash, restart under the same name with a new address, incarnation and
start time, leave gracefully, remove other nodes, and rejoin after being
removed; operators call ``update_members`` with one member dropped and one node
added, sometimes at a wrong address (which that node, if running, overrules).
Two set-ups are drawn: a full mesh with a small gossip fanout (so pushes are
sampled), and ``client_server`` with node 0 a server that never fails (the
clients' only way to gossip is through servers).

Checked after every step, for every running core: no node lists itself or
anyone twice, and it lists itself as ``me``; the ``NeighbourUp`` /
``NeighbourDown`` effects pair up and the nodes "up" equal ``neighbours()``,
each with a ``Connect`` held; the statistics agree.

Checked at the end (liveness): with faults stopped, deliver everything and run
gossip rounds until quiet. Then every running core that lists another running
node has the same ``members()`` as that node; a running node is listed with its
current spec and a single entry (its own).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable

import attrs
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
from runtime.core.full_mesh import FullMesh, FullMeshConfig, client_server_link
from runtime.core.spec import NodeSpec

NODES_MAX = 8
QUIESCE_ROUNDS_MAX = 40
DELIVERIES_MAX = 100_000
SAMPLED = FullMeshConfig(gossip_fanout=3)
ROOMY = FullMeshConfig(gossip_fanout=NODES_MAX)


class FullMeshMachine(RuleBasedStateMachine):
    """Full-mesh cores under a schedule hypothesis chooses."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SAMPLED
        self.client_server = False
        self.now = 0.0
        self.cores: dict[str, FullMesh] = {}
        self.dead: set[str] = set()
        self.bag: list[tuple[str, str, object]] = []
        self.timers: dict[tuple[str, Hashable], float] = {}
        self.up: dict[str, set[str]] = {}
        self.connected: dict[str, set[str]] = {}
        self.incarnation = 0

    # -- harness ------------------------------------------------------------------

    def running(self) -> list[str]:
        return sorted(
            name
            for name, core in self.cores.items()
            if name not in self.dead and not core.left
        )

    def mortal(self) -> list[str]:
        """Running nodes that may crash, leave or be removed."""
        keep = "n0@sim" if self.client_server else None
        return [name for name in self.running() if name != keep]

    def start(self, index: int) -> str:
        self.incarnation += 1
        role = "peer"
        if self.client_server:
            role = "server" if index % 3 == 0 else "client"
        me = NodeSpec(
            name=f"n{index}@sim",
            addresses=[("10.0.0.1", 9000 + 100 * self.incarnation + index)],
            role=role,
        )
        core = FullMesh(
            me,
            self.config,
            random.Random(self.incarnation),
            incarnation=self.incarnation,
            started_at=self.incarnation,
            link=client_server_link if self.client_server else None,
        )
        self.cores[me.name] = core
        self.dead.discard(me.name)
        self.up[me.name] = set()
        self.connected[me.name] = set()
        self.timers = {k: v for k, v in self.timers.items() if k[0] != me.name}
        self.apply(me.name, core.start(self.now))
        return me.name

    def apply(self, at: str, effects: Iterable[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    assert to != at
                    assert to in self.connected[at], f"{at} sends to unconnected {to}"
                    self.bag.append((at, to, message))
                case Connect(spec=target):
                    assert target.name != at
                    self.connected[at].add(target.name)
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

    def deliver(self, index: int, *, keep: bool = False) -> None:
        src, dst, message = self.bag[index] if keep else self.bag.pop(index)
        if dst in self.dead:
            return
        self.apply(dst, self.cores[dst].on_message(src, message, self.now))

    def deliver_all(self) -> None:
        for _ in range(DELIVERIES_MAX):
            if not self.bag:
                return
            self.deliver(0)
        raise AssertionError("messages kept flowing with no timer firing")

    def due_timers(self) -> list[tuple[float, str, str, Hashable]]:
        return sorted(
            (when, at, repr(name), name)
            for (at, name), when in self.timers.items()
            if at in self.running()
        )

    def fire(self, timer: tuple[float, str, str, Hashable]) -> None:
        when, at, _, name = timer
        del self.timers[(at, name)]
        self.now = max(self.now, when)
        self.apply(at, self.cores[at].on_timer(name, self.now))

    def contact_for(self, name: str, choice: int) -> NodeSpec | None:
        others = [n for n in self.running() if n != name]
        return self.cores[others[choice % len(others)]].me if others else None

    # -- rules ----------------------------------------------------------------------

    @initialize(client_server=st.booleans(), sampled=st.booleans())
    def first_node(self, client_server: bool, sampled: bool) -> None:
        self.client_server = client_server
        self.config = SAMPLED if sampled else ROOMY
        self.start(0)

    @precondition(lambda self: len(self.cores) < NODES_MAX)
    @rule(contact=st.integers(0, NODES_MAX))
    def join_node(self, contact: int) -> None:
        name = self.start(len(self.cores))
        target = self.contact_for(name, contact)
        if target is not None:
            self.apply(name, self.cores[name].join(target, self.now))

    @precondition(lambda self: len(self.mortal()) >= 1)
    @rule(victim=st.integers(0, NODES_MAX))
    def crash_node(self, victim: int) -> None:
        mortal = self.mortal()
        name = mortal[victim % len(mortal)]
        self.dead.add(name)
        # What it had sent may still arrive; what was on the way to it is lost.
        self.bag = [m for m in self.bag if m[1] != name]

    @precondition(
        lambda self: any(
            n in self.dead or self.cores[n].left for n in self.cores if n != "n0@sim"
        )
    )
    @rule(which=st.integers(0, NODES_MAX), contact=st.integers(0, NODES_MAX))
    def restart_node(self, which: int, contact: int) -> None:
        stopped = sorted(n for n in self.cores if n in self.dead or self.cores[n].left)
        if self.client_server:
            stopped = [n for n in stopped if n != "n0@sim"]
        name = stopped[which % len(stopped)]
        self.start(int(name[1 : name.index("@")]))
        target = self.contact_for(name, contact)
        if target is not None:
            self.apply(name, self.cores[name].join(target, self.now))

    @precondition(lambda self: len(self.mortal()) >= 1)
    @rule(victim=st.integers(0, NODES_MAX))
    def leave_node(self, victim: int) -> None:
        mortal = self.mortal()
        name = mortal[victim % len(mortal)]
        # A graceful leave: what it queued is still delivered.
        self.apply(name, self.cores[name].leave(self.now))

    @precondition(lambda self: len(self.running()) >= 2)
    @rule(actor=st.integers(0, NODES_MAX), victim=st.integers(0, NODES_MAX))
    def remove_node(self, actor: int, victim: int) -> None:
        running = self.running()
        name = running[actor % len(running)]
        keep = "n0@sim" if self.client_server else name
        others = [
            s.name for s in self.cores[name].members() if s.name not in (name, keep)
        ]
        if others:
            target = others[victim % len(others)]
            self.apply(name, self.cores[name].remove(target, self.now))

    @precondition(lambda self: len(self.running()) >= 2)
    @rule(
        actor=st.integers(0, NODES_MAX),
        drop=st.integers(0, NODES_MAX),
        add=st.integers(0, NODES_MAX),
        stale=st.booleans(),
    )
    def update_members(self, actor: int, drop: int, add: int, stale: bool) -> None:
        """An operator's list: one member dropped, one node (maybe misspelt) added."""
        running = self.running()
        name = running[actor % len(running)]
        core = self.cores[name]
        specs = {s.name: s for s in core.members()}
        keep = "n0@sim" if self.client_server else name
        others = [n for n in sorted(specs) if n not in (name, keep)]
        if others and drop % 2:
            del specs[others[drop % len(others)]]
        known = sorted(n for n in self.cores if n != name)
        if known:
            target = self.cores[known[add % len(known)]].me
            if stale:
                target = attrs.evolve(target, addresses=[("10.0.0.9", 1)])
            specs[target.name] = target
        self.apply(name, core.update_members(list(specs.values()), self.now))

    @precondition(lambda self: len(self.running()) >= 2)
    @rule(which=st.integers(0, NODES_MAX), contact=st.integers(0, NODES_MAX))
    def rejoin_lonely_node(self, which: int, contact: int) -> None:
        lonely = [n for n in self.running() if len(self.cores[n].members()) == 1]
        if lonely:
            name = lonely[which % len(lonely)]
            target = self.contact_for(name, contact)
            assert target is not None
            self.apply(name, self.cores[name].join(target, self.now))

    @precondition(lambda self: bool(self.bag))
    @rule(choice=st.integers(0, 1_000), duplicate=st.booleans())
    def deliver_one(self, choice: int, duplicate: bool) -> None:
        self.deliver(choice % len(self.bag), keep=duplicate)

    @precondition(lambda self: bool(self.bag))
    @rule(choice=st.integers(0, 1_000))
    def lose_one(self, choice: int) -> None:
        del self.bag[choice % len(self.bag)]

    @rule(count=st.integers(1, 20))
    def deliver_in_order(self, count: int) -> None:
        for _ in range(count):
            if not self.bag:
                return
            self.deliver(0)

    @precondition(lambda self: bool(self.due_timers()))
    @rule(choice=st.integers(0, 1_000))
    def fire_timer(self, choice: int) -> None:
        timers = self.due_timers()
        self.fire(timers[0] if choice % 3 else timers[choice % len(timers)])

    # -- invariants -------------------------------------------------------------

    @invariant()
    def cores_are_well_formed(self) -> None:
        for name in self.running():
            core = self.cores[name]
            names = [s.name for s in core.members()]
            assert names == sorted(set(names)), f"{name} lists someone twice"
            assert core.member(name) == core.me
            neighbours = core.neighbours()
            assert name not in neighbours
            assert set(neighbours) <= set(names)
            assert sorted(self.up[name]) == neighbours
            assert set(neighbours) <= self.connected[name]
            stats = core.statistics()
            assert stats.member_count == len(names)
            assert stats.neighbour_up_count - stats.neighbour_down_count == len(
                neighbours
            )

    def teardown(self) -> None:
        if not self.cores:
            return
        self.deliver_all()
        for _ in range(QUIESCE_ROUNDS_MAX):
            end = self.now + self.config.gossip_interval
            while (timers := self.due_timers()) and timers[0][0] <= end:
                self.fire(timers[0])
                self.deliver_all()
            self.now = end
            if self.converged():
                break
        self.check_converged()

    def problems(self) -> list[str]:
        found = []
        running = self.running()
        for name in running:
            core = self.cores[name]
            listed = [s.name for s in core.members()]
            for other in listed:
                if other == name or other not in running:
                    continue
                if self.cores[other].members() != core.members():
                    found.append(f"{name} and {other} disagree")
                entries = core.state.entries_of(other)
                if [e.actor for e in entries] != [self.cores[other].actor]:
                    found.append(f"{name} holds stale entries of {other}")
        return found

    def converged(self) -> bool:
        return not self.problems()

    def check_converged(self) -> None:
        problems = self.problems()
        assert not problems, problems


FullMeshMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestCase = FullMeshMachine.TestCase
