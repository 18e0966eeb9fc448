"""Experiments on simulated clusters: build, fail, heal, measure.

Reproduces the shape of the HyParView paper's failure experiment (Leitão,
Pereira and Rodrigues, DSN 2007, section 5.3, "reliability after massive
failures" and the healing that follows): build a large cluster, crash a share
of its nodes at one instant, and measure broadcast reliability (the share of
*live* nodes a flood over the active views reaches from a random live node)
right after the failure and after each healing round.

Method
------
1. **Build.** Node 0 starts alone; node *k* starts at ``k * join_interval`` and
   joins through a random earlier node that is alive (the paper's joins through
   a random contact).
2. **Settle.** Run in windows of ``settle_window`` virtual seconds until a
   window holds at most one ``NeighbourUp``/``NeighbourDown`` per hundred
   nodes, then until the passive views are filled by shuffles (their mean at
   ``passive_fill`` of the maximum), as the paper lets its overlay run for
   many cycles before a failure: a node that joined late and has not yet
   shuffled knows only a few passive nodes, and when its neighbours crash it
   has nobody to turn to. (``settle_limit`` bounds the whole; the report says
   whether it settled.)
3. **Fail.** Crash ``round(fail * n)`` nodes drawn at random, all at the same
   instant. With several failure shares, each starts from a fork of the same
   settled cluster (:meth:`Simulation.fork`), as the paper starts each point
   from the same stable overlay.
4. **Measure.** Reliability at once (round 0: dead nodes still sit in views,
   nobody has noticed yet) and after each round of ``round_interval`` virtual
   seconds (by default the shuffle interval, the paper's membership round):
   crashed peers are detected (``crash_detection_delay``) and replaced from the
   passive views, so reliability climbs back.

The flood is a graph search over the recorded views (what a flooding broadcast
reaches with no loss and no repair during the flood): a lower bound on what the
paper's broadcast, which also repairs as it goes, achieves.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Final, final

import attrs

from runtime.core.hyparview import HyParView, HyParViewConfig
from runtime.core.membership import MembershipCore
from runtime.core.spec import NodeSpec
from runtime.sim.checkers import mean_flood_reliability
from runtime.sim.network import NetworkConfig
from runtime.sim.world import MembershipFactory, Simulation, SimulationStatistics

__all__ = [
    "PAPER_CONFIG",
    "FailureExperiment",
    "FailureReport",
    "FailureResult",
    "build_cluster",
    "fill_passive_views",
    "hyparview_factory",
    "measure_failure",
    "run_failure_experiment",
    "settle",
]

PAPER_CONFIG: Final = HyParViewConfig(
    active_view_size_max=5,
    passive_view_size_max=30,
    active_random_walk_length=6,
    passive_random_walk_length=3,
)
"""The HyParView paper's parameters (section 5): views 5 and 30, ARWL 6, PRWL 3."""


def hyparview_factory(config: HyParViewConfig) -> MembershipFactory:
    """A :data:`MembershipFactory` building ``HyParView`` cores with *config*."""

    def build(
        spec: NodeSpec, rng: random.Random, _incarnation: int, _now: float
    ) -> MembershipCore:
        return HyParView(spec, config, rng)

    return build


def settle(
    sim: Simulation, *, window: float, limit: float, changes_max: int = 0
) -> bool:
    """Run until a *window* of virtual time passes with few view changes.

    Args:
        sim: the simulation to run.
        window: virtual seconds per window.
        limit: give up after this many virtual seconds.
        changes_max: ``NeighbourUp``/``Down`` effects a window may hold and
            still count as settled. A large HyParView cluster has a long tail
            of nodes with a free active slot pairing up as shuffles introduce
            them, so a tolerance stops waiting for that tail.

    Returns:
        Whether it settled before *limit* virtual seconds had passed.
    """
    deadline = sim.now + limit
    while sim.now < deadline:
        before = sim.view_change_count
        sim.run_for(min(window, deadline - sim.now))
        if sim.view_change_count - before <= changes_max:
            return True
    return False


def fill_passive_views(
    sim: Simulation,
    config: HyParViewConfig,
    *,
    window: float,
    share: float,
    limit: float,
) -> bool:
    """Run until the mean passive view of the live nodes is *share* full.

    Returns:
        Whether it got there before *limit* virtual seconds had passed.
    """
    deadline = sim.now + limit
    target = share * config.passive_view_size_max
    while True:
        live = sim.live_nodes()
        sizes = [len(_hyparview(sim, name).passive_view()) for name in live]
        if not sizes or sum(sizes) >= target * len(sizes):
            return True
        if sim.now >= deadline:
            return False
        sim.run_for(min(window, deadline - sim.now))


def _hyparview(sim: Simulation, name: str) -> HyParView:
    core = sim.core(name)
    assert isinstance(core, HyParView)
    return core


def build_cluster(sim: Simulation, nodes: int, *, join_interval: float) -> None:
    """Add *nodes* nodes, one every *join_interval*, each through a random live one."""
    start = sim.now
    if nodes < 1:
        return
    sim.add_node(None if not sim.live_nodes() else sim.random_live_node())
    for k in range(1, nodes):
        sim.run_until(start + k * join_interval)
        sim.add_node(sim.random_live_node())


@final
@attrs.frozen(kw_only=True)
class FailureResult:
    """Reliability of one failure share over the rounds after the failure.

    Attributes:
        fail: the share of nodes crashed.
        crashed_count, live_count: nodes crashed; nodes left alive.
        reliability: mean flood reliability, ``[0]`` right after the failure
            and ``[r]`` after healing round *r*.
        statistics: the simulation's counters at the end of the last round.
        digest: the trace digest at that point (empty without ``trace``).
    """

    fail: float
    crashed_count: int
    live_count: int
    reliability: tuple[float, ...]
    statistics: SimulationStatistics
    digest: str


def measure_failure(
    sim: Simulation,
    fail: float,
    *,
    rounds: int,
    round_interval: float,
    floods: int,
    rng: random.Random,
) -> FailureResult:
    """Crash a *fail* share of *sim*'s live nodes at once and follow the healing.

    Args:
        sim: a settled simulation (it is advanced by ``rounds * round_interval``).
        fail: share of live nodes to crash, in [0, 1).
        rounds: healing rounds to measure after the failure.
        round_interval: virtual seconds per round.
        floods: floods averaged per measurement.
        rng: draws the victims and the flood sources.
    """
    if not 0.0 <= fail < 1.0:
        raise ValueError(f"fail must be in [0, 1), not {fail}")
    live = sim.live_nodes()
    victims = rng.sample(live, round(fail * len(live)))
    for name in victims:
        sim.crash(name)
    reliability = [mean_flood_reliability(sim, rng, floods)]
    for _ in range(rounds):
        sim.run_for(round_interval)
        reliability.append(mean_flood_reliability(sim, rng, floods))
    return FailureResult(
        fail=fail,
        crashed_count=len(victims),
        live_count=len(live) - len(victims),
        reliability=tuple(reliability),
        statistics=sim.statistics(),
        digest=sim.trace_digest(),
    )


@final
@attrs.frozen(kw_only=True)
class FailureExperiment:
    """The knobs of :func:`run_failure_experiment`.

    Attributes:
        nodes: cluster size. 10,000 is the paper's.
        fails: failure shares to measure, each from the same settled cluster.
        seed: the root seed.
        rounds: healing rounds measured after the failure.
        round_interval: virtual seconds per round; ``None`` for the shuffle
            interval (the paper's membership round).
        floods: floods averaged per measurement, each from a random live
            node. 20: a flood that starts in one of a few stray nodes (a
            node whose whole neighbourhood crashed) reaches almost nobody, so
            a mean of a handful jumps by a fifth when it happens to draw one.
        join_interval: virtual seconds between two joins while building.
        settle_window, settle_limit: see :func:`settle`.
        settle_changes_share: view changes per node a settle window may
            hold (``changes_max`` of :func:`settle` is this times ``nodes``).
            0.01: one node in a hundred still pairing up is settled enough.
        passive_fill: the share of ``passive_view_size_max`` the mean passive
            view must reach before the failure. 0.95: about two shuffle
            rounds after the joins at 10,000 nodes.
        config: the HyParView configuration (the paper's by default).
        network: the network model.
        trace: keep the trace digest (slower).
    """

    nodes: int = 10_000
    fails: tuple[float, ...] = (0.5,)
    seed: int = 0
    rounds: int = 5
    round_interval: float | None = None
    floods: int = 20
    join_interval: float = 0.001
    settle_window: float = 2.0
    settle_limit: float = 120.0
    settle_changes_share: float = 0.01
    passive_fill: float = 0.95
    config: HyParViewConfig = PAPER_CONFIG
    network: NetworkConfig = attrs.field(factory=NetworkConfig)
    trace: bool = False


@final
@attrs.frozen(kw_only=True)
class FailureReport:
    """What :func:`run_failure_experiment` measured.

    Attributes:
        experiment: the knobs it ran with.
        results: one per failure share, in the order given.
        settled: whether the cluster settled before the failures.
        build_seconds: virtual seconds spent building and settling.
        build_statistics: the counters once the cluster had settled.
        core_input_count: simulated node-events of the whole experiment
            (build, settle and every failure run).
        event_count: queue events of the whole experiment.
        wall_seconds: wall time of the whole experiment (0 with no clock).
        build_wall_seconds: of which building and settling.
    """

    experiment: FailureExperiment
    results: tuple[FailureResult, ...]
    settled: bool
    build_seconds: float
    build_statistics: SimulationStatistics
    core_input_count: int
    event_count: int
    wall_seconds: float
    build_wall_seconds: float


def run_failure_experiment(
    experiment: FailureExperiment,
    *,
    wall_clock: Callable[[], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FailureReport:
    """Build, settle, then fail and heal once per failure share.

    Args:
        experiment: the knobs.
        wall_clock: a monotonic clock (``time.perf_counter``) to time the
            phases with; the simulation itself never reads one.
        progress: called with a line of text as each phase ends.
    """
    clock = wall_clock if wall_clock is not None else _zero
    say = progress if progress is not None else _silent
    started = clock()
    sim = Simulation(
        hyparview_factory(experiment.config),
        seed=experiment.seed,
        network=experiment.network,
        trace=experiment.trace,
    )
    build_cluster(sim, experiment.nodes, join_interval=experiment.join_interval)
    settled = settle(
        sim,
        window=experiment.settle_window,
        limit=experiment.settle_limit,
        changes_max=int(experiment.settle_changes_share * experiment.nodes),
    ) and fill_passive_views(
        sim,
        experiment.config,
        window=experiment.settle_window,
        share=experiment.passive_fill,
        limit=experiment.settle_limit,
    )
    build = sim.statistics()
    build_wall = clock() - started
    say(
        f"built {experiment.nodes} nodes in {build.now:.1f} virtual s "
        f"({'settled' if settled else 'not settled'}), "
        f"{build.core_input_count} node-events, {build_wall:.1f} s wall"
    )
    interval = (
        experiment.round_interval
        if experiment.round_interval is not None
        else experiment.config.shuffle_interval
    )
    results: list[FailureResult] = []
    inputs, events = build.core_input_count, build.event_count
    fails: Sequence[float] = experiment.fails
    for number, fail in enumerate(fails):
        run = sim if number == len(fails) - 1 else sim.fork()
        result = measure_failure(
            run,
            fail,
            rounds=experiment.rounds,
            round_interval=interval,
            floods=experiment.floods,
            rng=random.Random(f"{experiment.seed}/failure/{fail!r}"),
        )
        results.append(result)
        inputs += result.statistics.core_input_count - build.core_input_count
        events += result.statistics.event_count - build.event_count
        say(
            f"fail {fail:.0%}: "
            + " ".join(f"{value:.1%}" for value in result.reliability)
        )
    return FailureReport(
        experiment=experiment,
        results=tuple(results),
        settled=settled,
        build_seconds=build.now,
        build_statistics=build,
        core_input_count=inputs,
        event_count=events,
        wall_seconds=clock() - started,
        build_wall_seconds=build_wall,
    )


def _zero() -> float:
    return 0.0


def _silent(_line: str) -> None:
    return None
