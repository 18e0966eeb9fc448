"""The deterministic simulator: many nodes in one process, the real protocol cores.

DESIGN.md rule 3. A :class:`Simulation` drives one membership core per node (any
:class:`~runtime.core.membership.MembershipCore`) and optionally one broadcast
core per node, over a modelled network (latency, loss, duplication,
reordering, partitions, crashes and restarts), with a seeded event queue as the
clock: the same seed gives the same run, byte for byte. No trio, no threads, no
clock reads. See ``docs/simulator.md``.

* :mod:`runtime.sim.world`: :class:`Simulation`, the event loop and the
  connection model.
* :mod:`runtime.sim.network`: :class:`NetworkConfig`, :class:`Latency`,
  :class:`LinkFaults`.
* :mod:`runtime.sim.checkers`: safety and convergence checks, flood reliability.
* :mod:`runtime.sim.experiment`: the HyParView failure experiment.
* :mod:`runtime.sim.broadcast`: Plumtree against flooding.
* :mod:`runtime.sim.cli`: the ``partisan sim`` commands.
"""

from runtime.sim.broadcast import (
    BroadcastExperiment,
    BroadcastReport,
    BroadcastResult,
    run_broadcast_experiment,
)
from runtime.sim.clock import ns_to_seconds, seconds_to_ns
from runtime.sim.experiment import (
    PAPER_CONFIG,
    FailureExperiment,
    FailureReport,
    FailureResult,
    hyparview_factory,
    run_failure_experiment,
)
from runtime.sim.network import Latency, LinkFaults, NetworkConfig
from runtime.sim.world import (
    BroadcastCore,
    BroadcastFactory,
    MembershipFactory,
    Simulation,
    SimulationStatistics,
)

__all__ = [
    "PAPER_CONFIG",
    "BroadcastCore",
    "BroadcastExperiment",
    "BroadcastFactory",
    "BroadcastReport",
    "BroadcastResult",
    "FailureExperiment",
    "FailureReport",
    "FailureResult",
    "Latency",
    "LinkFaults",
    "MembershipFactory",
    "NetworkConfig",
    "Simulation",
    "SimulationStatistics",
    "hyparview_factory",
    "ns_to_seconds",
    "run_broadcast_experiment",
    "run_failure_experiment",
    "seconds_to_ns",
]
