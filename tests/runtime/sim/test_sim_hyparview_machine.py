"""Goal: HyParView stays safe under any fault schedule, and converges once quiet.

Method: a hypothesis ``RuleBasedStateMachine`` drives a simulated cluster of 5 to
12 HyParView nodes (the paper's configuration, or a tight one with views of 3
and 6 that keeps overflow and eviction busy). Rules draw the faults: crash a
node, restart one (a fresh core, a new incarnation, joined through a random
live node), join a new node, partition the live nodes in two, heal, a burst of
message loss (each loss breaks its connection, as TCP does), and let time pass.
The seed of the simulation is drawn too, so a failure shrinks to a short
schedule and replays exactly.

Checked after every step (safety), for every live node: no node lists itself
or anyone twice; the view its ``NeighbourUp``/``NeighbourDown`` effects
recorded equals its core's active view; the passive view is disjoint from the
active view (``checkers.check_views``, ``checkers.check_hyparview``).

Checked at teardown (liveness): faults stop (partitions healed, loss cleared),
then the cluster runs quiet for a while. Active views must then be symmetric
among live nodes (A holds B iff B holds A), no live node may hold a dead one,
and the live nodes must form one connected graph over the active views unless
HyParView's own rules let them stay apart:

* a partition that outlived failure detection: each side dropped the other's
  nodes and forgot the passive entries it tried; nothing in the protocol brings
  them back, so the sides may stay apart after the heal;
* components whose nodes are full, or know no one outside with room: a full
  node never asks anyone to connect, and a node with room asks with LOW
  priority, which a full node refuses (section 4.3). Two cliques of
  ``active_view_size_max + 1`` nodes never merge; the tight configuration
  reaches that with 4-node components.

So a split fails the test only if, with no such partition, some node is still
"reaching" after a few quiet spells: alone and knowing a live node (its HIGH
request must be accepted), or with room and knowing a node with room in
another component.

``HyParViewChaosMachine`` adds bursts of duplication, reordering and silent
loss, which break the ordered, reliable connections HyParView assumes: it
checks safety only (a quarter of the profile's examples).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from runtime.core.hyparview import HyParView, HyParViewConfig
from runtime.sim import (
    PAPER_CONFIG,
    LinkFaults,
    NetworkConfig,
    Simulation,
    hyparview_factory,
)
from runtime.sim.checkers import (
    asymmetric_links,
    check_hyparview,
    check_views,
    components,
    dead_links,
)

NODES_MIN = 5
NODES_MAX = 12
TIGHT = HyParViewConfig(
    active_view_size_max=3,
    passive_view_size_max=6,
    active_random_walk_length=3,
    passive_random_walk_length=2,
    shuffle_active_count=2,
    shuffle_passive_count=2,
    shuffle_walk_length=3,
)
NETWORK = NetworkConfig()
# Long enough for every detection (3 s), dial (2 s) and repair to finish, and
# for several shuffles (10 s) to spread knowledge.
QUIET_SECONDS = 60.0
# A node with room picks random passive candidates; give it a few spells.
QUIET_ROUNDS_MAX = 3


class HyParViewSimMachine(RuleBasedStateMachine):
    """A simulated HyParView cluster under a fault schedule hypothesis chooses."""

    def __init__(self) -> None:
        super().__init__()
        self.sim: Simulation | None = None
        self.config = PAPER_CONFIG
        # A partition long enough to be detected (see the module docstring).
        self.split = False

    @property
    def cluster(self) -> Simulation:
        assert self.sim is not None
        return self.sim

    def live(self) -> list[str]:
        return self.cluster.live_nodes()

    @initialize(
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        size=st.integers(min_value=NODES_MIN, max_value=NODES_MAX),
        tight=st.booleans(),
    )
    def build(self, seed: int, size: int, tight: bool) -> None:
        config = TIGHT if tight else PAPER_CONFIG
        self.config = config
        self.sim = Simulation(
            hyparview_factory(config), seed=seed, network=NETWORK, trace=False
        )
        self.sim.add_node()
        for _ in range(size - 1):
            self.sim.run_for(0.05)
            self.sim.add_node(self.sim.random_live_node())
        self.sim.run_for(5.0)

    # -- faults ----------------------------------------------------------------

    @precondition(lambda self: len(self.cluster.nodes()) < NODES_MAX)
    @rule()
    def join_node(self) -> None:
        self.cluster.add_node(self.cluster.random_live_node())

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
        self.cluster.restart(name, self.cluster.random_live_node(exclude=[name]))

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
        self.advance(seconds)
        self.cluster.clear_faults()

    @rule(seconds=st.floats(min_value=0.01, max_value=15.0))
    def advance(self, seconds: float) -> None:
        if (
            self.cluster.network.partitioned
            and seconds >= NETWORK.break_detection_delay
        ):
            self.split = True
        self.cluster.run_for(seconds)

    # -- checks ----------------------------------------------------------------

    @invariant()
    def views_are_well_formed(self) -> None:
        if self.sim is not None:
            check_views(self.sim)
            check_hyparview(self.sim)

    def teardown(self) -> None:
        if self.sim is None:
            return
        sim = self.sim
        sim.heal()
        sim.clear_faults()
        for _ in range(QUIET_ROUNDS_MAX):
            sim.run_for(QUIET_SECONDS)
            if not self.split and not _reachable_apart(sim, self.config):
                break
        check_views(sim)
        check_hyparview(sim)
        assert not asymmetric_links(sim), f"asymmetric: {asymmetric_links(sim)}"
        assert not dead_links(sim), f"dead neighbours: {dead_links(sim)}"
        if not self.split:
            apart = _reachable_apart(sim, self.config)
            assert not apart, f"split into {components(sim)}; could join: {apart}"


def _reachable_apart(sim: Simulation, config: HyParViewConfig) -> list[str]:
    """Nodes that could still join another component, by the protocol's rules.

    A node with no neighbour asks a passive node with HIGH priority, which must
    accept; a node with room asks with LOW priority, which a node with room
    accepts. So a node is still "reaching" if it is alone and knows any live
    node, or has room and knows a live node of another component that has
    room. A full node asks nobody, which is why full components may stay apart.
    """
    parts = components(sim)
    if len(parts) < 2:
        return []
    where = {name: index for index, part in enumerate(parts) for name in part}
    room = {name: len(sim.view(name)) < config.active_view_size_max for name in where}
    reaching = []
    for name, index in where.items():
        core = sim.core(name)
        assert isinstance(core, HyParView)
        known = [peer for peer in core.passive_view() if peer in where]
        alone = not sim.view(name) and bool(known)
        can_pair = room[name] and any(
            where[peer] != index and room[peer] for peer in known
        )
        if alone or can_pair:
            reaching.append(name)
    return reaching


HyParViewSimMachine.TestCase.settings = settings(stateful_step_count=25, deadline=None)
TestCase = HyParViewSimMachine.TestCase


class HyParViewChaosMachine(HyParViewSimMachine):
    """The same cluster, plus bursts of duplication, reordering and silent loss.

    Those break the ordered, reliable connections HyParView assumes, so only
    safety is checked (after every step and at the end), never convergence.
    """

    @rule(
        duplicate=st.sampled_from([0.0, 0.1, 0.5]),
        reorder=st.sampled_from([0.0, 0.1, 0.5]),
        silent_loss=st.sampled_from([0.0, 0.1]),
        seconds=st.floats(min_value=0.1, max_value=5.0),
    )
    def chaos_burst(
        self, duplicate: float, reorder: float, silent_loss: float, seconds: float
    ) -> None:
        self.cluster.set_faults(
            LinkFaults(
                duplicate=duplicate,
                reorder=reorder,
                loss=silent_loss,
                loss_breaks_connection=False,
            )
        )
        self.advance(seconds)
        self.cluster.clear_faults()

    def teardown(self) -> None:
        if self.sim is not None:
            self.sim.heal()
            self.sim.run_for(QUIET_SECONDS)
            check_views(self.sim)
            check_hyparview(self.sim)


HyParViewChaosMachine.TestCase.settings = settings(
    max_examples=max(10, settings.default.max_examples // 4),
    stateful_step_count=25,
    deadline=None,
)
ChaosTestCase = HyParViewChaosMachine.TestCase
