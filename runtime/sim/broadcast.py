"""Broadcast over simulated membership: Plumtree against plain flooding.

Reproduces, in the spirit of Leitão, Pereira and Rodrigues, "Epidemic Broadcast
Trees" (SRDS 2007, section 4), the comparison of Plumtree with the eager
flooding it starts from, over the same HyParView active views.

Method
------
Every node runs HyParView (membership) and, as its broadcast layer, a
:class:`DualBroadcast`: a :class:`~runtime.core.plumtree.Plumtree` core and a
:class:`Flood` core side by side, both fed the same ``NeighbourUp`` /
``NeighbourDown`` effects, with messages routed to one or the other by type.
So both protocols run over exactly the same views, the same network and the
same failures. After the cluster settles (and, optionally, a share of it
crashes), a random live node broadcasts a message with Plumtree every
``message_interval`` seconds, and half an interval later another with
flooding; the run then goes on until every repair has had time to finish.

Per message, a :class:`Tally` counts, at the receivers:

* **reliability**: the share of the nodes alive at broadcast time that
  delivered it (the origin counts as delivered);
* **RMR**, relative message redundancy (the paper's section 4.1):
  ``payloads / (n - 1) - 1``, where ``payloads`` is the number of messages
  carrying the payload received and ``n`` the number of nodes that delivered it
  (origin included): 0 means each node got the payload exactly once;
* **last hop**: the largest hop count at which a node delivered it;
* **control**: Plumtree's ``IHave``, ``Graft`` and ``Prune`` messages received.

On a stable overlay the first Plumtree message floods (every link starts
eager) and prunes the redundant links; from the second on the eager links form
a tree: RMR near 0 at 100% reliability, against flooding's RMR near
``active view size - 2``.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Final, final

import attrs

from runtime.core.effects import Send
from runtime.core.hyparview import HyParViewConfig
from runtime.core.plumtree import (
    Deliver,
    Gossip,
    Graft,
    IHave,
    MessageId,
    Plumtree,
    PlumtreeConfig,
    PlumtreeEffect,
    Prune,
)
from runtime.sim.experiment import (
    PAPER_CONFIG,
    build_cluster,
    fill_passive_views,
    hyparview_factory,
    settle,
)
from runtime.sim.network import NetworkConfig
from runtime.sim.world import BroadcastCore, BroadcastFactory, Simulation

__all__ = [
    "FLOOD",
    "PLUMTREE",
    "BroadcastExperiment",
    "BroadcastReport",
    "BroadcastResult",
    "DualBroadcast",
    "Flood",
    "FloodGossip",
    "Tally",
    "run_broadcast_experiment",
]

PLUMTREE: Final = "plumtree"
"""The tag of message ids broadcast with Plumtree: ``(PLUMTREE, number)``."""
FLOOD: Final = "flood"
"""The tag of message ids broadcast by flooding: ``(FLOOD, number)``."""


@final
@attrs.frozen(kw_only=True)
class FloodGossip:
    """A flooded message: its id, payload and hops travelled (0 from the origin)."""

    message_id: MessageId
    payload: object
    hop: int


@final
class Flood:
    """Plain eager flooding over the membership's neighbours (the baseline).

    A node forwards a message it sees for the first time to every neighbour
    but the one it came from, and delivers it; later copies are dropped. It is
    Plumtree with every link eager forever: reliable, and as redundant as the
    overlay is dense.

    Args:
        me: this node's name.
    """

    def __init__(self, me: str) -> None:
        self._me = me
        # Neighbours in NeighbourUp order (an insertion-ordered set).
        self._neighbours: dict[str, None] = {}
        self._seen: set[MessageId] = set()

    def broadcast(
        self, message_id: MessageId, payload: object, now: float
    ) -> list[PlumtreeEffect]:
        """Originate a message: send it to every neighbour."""
        self._seen.add(message_id)
        return self._push(FloodGossip(message_id=message_id, payload=payload, hop=0))

    def on_message(
        self, sender: str, message: object, now: float
    ) -> list[PlumtreeEffect]:
        """Deliver and forward a first copy; drop anything else."""
        if not isinstance(message, FloodGossip) or message.message_id in self._seen:
            return []
        self._seen.add(message.message_id)
        effects: list[PlumtreeEffect] = [
            Deliver(
                message_id=message.message_id,
                payload=message.payload,
                sender=sender,
                round=message.hop,
            )
        ]
        onward = FloodGossip(
            message_id=message.message_id, payload=message.payload, hop=message.hop + 1
        )
        effects += self._push(onward, skip=sender)
        return effects

    def on_neighbour_up(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """*peer* is a neighbour now."""
        self._neighbours[peer] = None
        return []

    def on_neighbour_down(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """*peer* is no longer a neighbour."""
        self._neighbours.pop(peer, None)
        return []

    def on_timer(self, name: Hashable, now: float) -> list[PlumtreeEffect]:
        """Flooding sets no timer."""
        return []

    def _push(
        self, message: FloodGossip, skip: str | None = None
    ) -> list[PlumtreeEffect]:
        return [
            Send(to=peer, message=message, channel="broadcast")
            for peer in self._neighbours
            if peer != skip
        ]


@final
class _NoApplication:
    """The application behind Plumtree here: it holds nothing of its own."""

    def is_stale(self, message_id: MessageId) -> bool:
        return False

    def graft(self, message_id: MessageId) -> object | None:
        return None

    def merge(self, message_id: MessageId, payload: object) -> bool:
        return True


@final
@attrs.define
class Tally:
    """What the receivers saw, per message id (filled by :class:`DualBroadcast`).

    Attributes:
        payloads: messages carrying the payload received, per id.
        control: Plumtree ``IHave`` / ``Graft`` / ``Prune`` messages received.
    """

    payloads: dict[MessageId, int] = attrs.Factory(dict)
    control: int = 0


@final
class DualBroadcast:
    """A Plumtree core and a flooding core on one node, over the same neighbours.

    Messages go to the core that speaks them (``FloodGossip`` to flooding,
    the rest to Plumtree); ``broadcast`` goes by the id's tag
    (:data:`PLUMTREE` or :data:`FLOOD`). Every payload or control message
    received is counted in the shared *tally*.

    Args:
        me: this node's name.
        rng: Plumtree's randomness.
        tally: the experiment's counters.
        config: Plumtree's configuration.
    """

    def __init__(
        self, me: str, rng: random.Random, tally: Tally, config: PlumtreeConfig
    ) -> None:
        self.plumtree = Plumtree(me, config, rng, _NoApplication())
        self.flood = Flood(me)
        self._tally = tally

    def broadcast(
        self, message_id: MessageId, payload: object, now: float
    ) -> list[PlumtreeEffect]:
        """Originate *message_id* with the protocol its tag names."""
        core: BroadcastCore = self.flood if _tag(message_id) == FLOOD else self.plumtree
        return core.broadcast(message_id, payload, now)

    def on_message(
        self, sender: str, message: object, now: float
    ) -> list[PlumtreeEffect]:
        """Count *message*, then hand it to the core that speaks it."""
        tally = self._tally
        match message:
            case FloodGossip():
                tally.payloads[message.message_id] = (
                    tally.payloads.get(message.message_id, 0) + 1
                )
                return self.flood.on_message(sender, message, now)
            case Gossip():
                tally.payloads[message.message_id] = (
                    tally.payloads.get(message.message_id, 0) + 1
                )
            case IHave() | Graft() | Prune():
                tally.control += 1
            case _:
                pass
        return self.plumtree.on_message(sender, message, now)

    def on_neighbour_up(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """Both cores gain *peer*."""
        return self.plumtree.on_neighbour_up(peer, now) + self.flood.on_neighbour_up(
            peer, now
        )

    def on_neighbour_down(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """Both cores lose *peer*."""
        return self.plumtree.on_neighbour_down(
            peer, now
        ) + self.flood.on_neighbour_down(peer, now)

    def on_timer(self, name: Hashable, now: float) -> list[PlumtreeEffect]:
        """Only Plumtree sets timers."""
        return self.plumtree.on_timer(name, now)


def _tag(message_id: MessageId) -> object:
    return message_id[0] if isinstance(message_id, tuple) and message_id else None


@final
@attrs.frozen(kw_only=True)
class BroadcastResult:
    """One protocol's figures, means over its messages.

    Attributes:
        protocol: :data:`PLUMTREE` or :data:`FLOOD`.
        messages: how many messages the means are over.
        reliability: mean share of live nodes that delivered.
        rmr: mean relative message redundancy.
        last_hop: mean of the largest delivery hop.
        payload_count: payload messages received, in total.
        control_count: control messages received over the whole run
            (Plumtree's, in the all-messages result only; else ``None``).
    """

    protocol: str
    messages: int
    reliability: float
    rmr: float
    last_hop: float
    payload_count: int
    control_count: int | None


@final
@attrs.frozen(kw_only=True)
class BroadcastExperiment:
    """The knobs of :func:`run_broadcast_experiment`.

    Attributes:
        nodes: cluster size.
        fail: share of nodes crashed after settling, before the broadcasts.
        seed: the root seed.
        messages: messages broadcast with each protocol.
        message_interval: virtual seconds between two messages of a protocol.
        drain: virtual seconds run after the last message, for repairs.
        join_interval: virtual seconds between joins while building.
        settle_window, settle_limit, settle_changes_share, passive_fill: as
            :class:`~runtime.sim.experiment.FailureExperiment`.
        config: HyParView's configuration.
        plumtree: Plumtree's configuration.
        network: the network model.
        trace: keep the trace digest.
    """

    nodes: int = 1_000
    fail: float = 0.0
    seed: int = 0
    messages: int = 10
    message_interval: float = 1.0
    drain: float = 10.0
    join_interval: float = 0.001
    settle_window: float = 2.0
    settle_limit: float = 120.0
    settle_changes_share: float = 0.01
    passive_fill: float = 0.95
    config: HyParViewConfig = PAPER_CONFIG
    plumtree: PlumtreeConfig = attrs.field(factory=PlumtreeConfig)
    network: NetworkConfig = attrs.field(factory=NetworkConfig)
    trace: bool = False


@final
@attrs.frozen(kw_only=True)
class BroadcastReport:
    """What :func:`run_broadcast_experiment` measured.

    Attributes:
        experiment: the knobs.
        results: one per protocol, over all its messages.
        steady: one per protocol, over its messages after the first (the
            tree formed); empty with a single message.
        per_message: ``(protocol, number, reliability, rmr, last_hop)`` for
            every message, in broadcast order.
        core_input_count: simulated node-events of the whole run.
        digest: the trace digest (empty without ``trace``).
    """

    experiment: BroadcastExperiment
    results: tuple[BroadcastResult, ...]
    steady: tuple[BroadcastResult, ...]
    per_message: tuple[tuple[str, int, float, float, int], ...]
    core_input_count: int
    digest: str


def run_broadcast_experiment(experiment: BroadcastExperiment) -> BroadcastReport:
    """Build, settle, optionally fail, then broadcast with both protocols."""
    tally = Tally()
    plumtree_config = experiment.plumtree

    def broadcast_factory(name: str, rng: random.Random) -> BroadcastCore:
        return DualBroadcast(name, rng, tally, plumtree_config)

    factory: BroadcastFactory = broadcast_factory
    sim = Simulation(
        hyparview_factory(experiment.config),
        seed=experiment.seed,
        network=experiment.network,
        broadcast=factory,
        trace=experiment.trace,
    )
    build_cluster(sim, experiment.nodes, join_interval=experiment.join_interval)
    settle(
        sim,
        window=experiment.settle_window,
        limit=experiment.settle_limit,
        changes_max=int(experiment.settle_changes_share * experiment.nodes),
    )
    fill_passive_views(
        sim,
        experiment.config,
        window=experiment.settle_window,
        share=experiment.passive_fill,
        limit=experiment.settle_limit,
    )
    rng = random.Random(f"{experiment.seed}/broadcast")
    live = sim.live_nodes()
    for name in rng.sample(live, round(experiment.fail * len(live))):
        sim.crash(name)

    # Per message id: (origin, live count at broadcast), and the deliveries.
    sent: dict[MessageId, tuple[str, int]] = {}
    delivered: dict[MessageId, dict[str, int]] = {}

    def on_deliver(node: str, deliver: Deliver, _now: float) -> None:
        hops = delivered.setdefault(deliver.message_id, {})
        if node not in hops:
            hops[node] = deliver.round + 1

    sim.on_deliver = on_deliver
    start = sim.now + 0.1
    order: list[tuple[str, int]] = []
    for number in range(experiment.messages):
        for offset, protocol in ((0.0, PLUMTREE), (0.5, FLOOD)):
            at = start + (number + offset) * experiment.message_interval
            sim.run_until(at)
            origin = sim.random_live_node()
            if origin is None:
                break
            message_id = (protocol, number)
            sent[message_id] = (origin, len(sim.live_nodes()))
            order.append(message_id)
            sim.broadcast(origin, message_id, f"payload {number}")
    sim.run_for(experiment.messages * experiment.message_interval + experiment.drain)

    per_message: list[tuple[str, int, float, float, int]] = []
    for message_id in order:
        origin, live_count = sent[message_id]
        hops = delivered.get(message_id, {})
        hops.pop(origin, None)
        reached = len(hops) + 1
        payloads = tally.payloads.get(message_id, 0)
        rmr = payloads / (reached - 1) - 1 if reached > 1 else 0.0
        protocol, number = message_id
        per_message.append(
            (
                str(protocol),
                int(number),
                reached / live_count,
                rmr,
                max(hops.values(), default=0),
            )
        )

    def summary(protocol: str, first: int) -> BroadcastResult | None:
        rows = [row for row in per_message if row[0] == protocol and row[1] >= first]
        if not rows:
            return None
        ids = [(protocol, row[1]) for row in rows]
        return BroadcastResult(
            protocol=protocol,
            messages=len(rows),
            reliability=sum(row[2] for row in rows) / len(rows),
            rmr=sum(row[3] for row in rows) / len(rows),
            last_hop=sum(row[4] for row in rows) / len(rows),
            payload_count=sum(tally.payloads.get(i, 0) for i in ids),
            control_count=(
                tally.control if protocol == PLUMTREE and first == 0 else None
            ),
        )

    results = tuple(r for p in (PLUMTREE, FLOOD) if (r := summary(p, 0)) is not None)
    steady = tuple(r for p in (PLUMTREE, FLOOD) if (r := summary(p, 1)) is not None)
    return BroadcastReport(
        experiment=experiment,
        results=results,
        steady=steady,
        per_message=tuple(per_message),
        core_input_count=sim.statistics().core_input_count,
        digest=sim.trace_digest(),
    )
