"""Goal: full-mesh membership stays well formed under any fault schedule, and agrees.

Method: a hypothesis ``RuleBasedStateMachine`` drives a simulated cluster of 5 to
12 ``FullMesh`` cores (runtime/core/full_mesh.py) through the same faults as the
HyParView machine (test_sim_hyparview_machine.py): crash, restart (a fresh core,
a new incarnation and start time, joined through a random live node), join,
partition in two, heal, loss bursts that break connections, and time passing.
The simulator keeps redialling the links a core wants, as the trio transport
does, so a partition heals into a cluster again. The seed is drawn too.

Checked after every step (safety), for every live node: no node lists itself or
anyone twice in its view, its recorded view equals ``neighbours()``, and
``members()`` holds each name once, itself included (``checkers.check_views``).

Checked at teardown (liveness): faults stop, the cluster runs quiet, and then
every live node lists the same members as every live node it knows of: those
that learned of each other agree. Crashed members stay listed (full mesh
forgets a node only when told to), so the lists are compared whole. And it is
one cluster, but for groups cut off from birth: nodes that joined through a
contact that crashed before answering, and nodes that joined through those.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from runtime.core.full_mesh import FullMesh, FullMeshConfig
from runtime.core.membership import MembershipCore
from runtime.core.spec import NodeSpec
from runtime.sim import LinkFaults, NetworkConfig, Simulation
from runtime.sim.checkers import check_views

NODES_MIN = 5
NODES_MAX = 12
NETWORK = NetworkConfig()
# Gossip runs every second; redials back off to 5 s, dials time out in 2 s.
QUIET_SECONDS = 30.0
# The injected wall clock: virtual time after a plausible epoch.
EPOCH_NS = 1_700_000_000 * 10**9


def full_mesh(
    spec: NodeSpec, rng: random.Random, incarnation: int, now: float
) -> MembershipCore:
    return FullMesh(
        spec,
        FullMeshConfig(),
        rng,
        incarnation=incarnation,
        started_at=EPOCH_NS + round(now * 1e9),
    )


class FullMeshSimMachine(RuleBasedStateMachine):
    """A simulated full-mesh cluster under a fault schedule hypothesis chooses."""

    def __init__(self) -> None:
        super().__init__()
        self.sim: Simulation | None = None
        # Node -> the contact of its latest join (or restart).
        self.contacts: dict[str, str] = {}

    @property
    def cluster(self) -> Simulation:
        assert self.sim is not None
        return self.sim

    def live(self) -> list[str]:
        return self.cluster.live_nodes()

    @initialize(
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        size=st.integers(min_value=NODES_MIN, max_value=NODES_MAX),
    )
    def build(self, seed: int, size: int) -> None:
        self.sim = Simulation(full_mesh, seed=seed, network=NETWORK, trace=False)
        self.sim.add_node()
        for _ in range(size - 1):
            self.sim.run_for(0.05)
            contact = self.sim.random_live_node()
            assert contact is not None
            self.contacts[self.sim.add_node(contact)] = contact
        self.sim.run_for(5.0)

    def run(self, seconds: float) -> None:
        self.cluster.run_for(seconds)

    @precondition(lambda self: len(self.cluster.nodes()) < NODES_MAX)
    @rule()
    def join_node(self) -> None:
        contact = self.cluster.random_live_node()
        assert contact is not None
        name = self.cluster.add_node(contact)
        self.contacts[name] = contact

    @precondition(lambda self: len(self.live()) >= 2)
    @rule(victim=st.integers(min_value=0, max_value=NODES_MAX))
    def crash_node(self, victim: int) -> None:
        live = self.live()
        self.cluster.crash(live[victim % len(live)])

    @precondition(lambda self: bool(self.cluster.dead_nodes()))
    @rule(which=st.integers(min_value=0, max_value=NODES_MAX))
    def restart_node(self, which: int) -> None:
        dead = self.cluster.dead_nodes()
        name = dead[which % len(dead)]
        contact = self.cluster.random_live_node(exclude=[name])
        assert contact is not None
        self.contacts[name] = contact
        self.cluster.restart(name, contact)

    @precondition(lambda self: len(self.live()) >= 2)
    @rule(sides=st.lists(st.booleans(), min_size=NODES_MAX, max_size=NODES_MAX))
    def partition(self, sides: list[bool]) -> None:
        live = self.live()
        left = [name for name, side in zip(live, sides, strict=False) if side]
        right = [name for name in live if name not in left]
        if left and right:
            self.cluster.partition(left, right)

    @precondition(lambda self: self.cluster.network.partitioned)
    @rule()
    def heal(self) -> None:
        self.cluster.heal()

    @rule(
        loss=st.sampled_from([0.01, 0.1, 0.5]),
        seconds=st.floats(min_value=0.1, max_value=5.0),
    )
    def loss_burst(self, loss: float, seconds: float) -> None:
        self.cluster.set_faults(LinkFaults(loss=loss))
        self.run(seconds)
        self.cluster.clear_faults()

    @rule(seconds=st.floats(min_value=0.01, max_value=10.0))
    def advance(self, seconds: float) -> None:
        self.run(seconds)

    @invariant()
    def views_are_well_formed(self) -> None:
        if self.sim is not None:
            check_views(self.sim)

    def teardown(self) -> None:
        if self.sim is None:
            return
        sim = self.sim
        sim.heal()
        sim.clear_faults()
        sim.run_for(QUIET_SECONDS)
        check_views(sim)
        live = sim.live_nodes()
        listed = {name: [s.name for s in sim.core(name).members()] for name in live}
        for name in live:
            for peer in listed[name]:
                if peer in listed:
                    assert listed[peer] == listed[name], (
                        f"{name} lists {listed[name]}, {peer} lists {listed[peer]}"
                    )
        # One cluster, but for groups cut off from birth. Every node but the
        # first joined through a contact; a node whose contact is alive but
        # in another group should have got in (full mesh keeps retrying), so
        # a group other than the first node's holds only nodes that joined
        # through a contact that crashed first, or through each other.
        groups: dict[tuple[str, ...], list[str]] = {}
        for name in live:
            groups.setdefault(tuple(listed[name]), []).append(name)
        for group in groups.values():
            inside = set(group)
            for name in group:
                contact = self.contacts.get(name)
                assert (
                    contact is None or contact in inside or not sim.is_alive(contact)
                ), f"{name} joined through live {contact} but lists {listed[name]}"


FullMeshSimMachine.TestCase.settings = settings(stateful_step_count=15, deadline=None)
TestCase = FullMeshSimMachine.TestCase
