"""The simulator's network model: latency, per-message faults and partitions.

Theory of operation
-------------------
The simulator (:mod:`runtime.sim.world`) asks this module three questions, all
answered from one seeded ``random.Random`` so that a run is a function of its
root seed:

* **How long does a message take?** A one-way latency of ``base`` plus a
  lognormal jitter (:class:`Latency`): most messages arrive near
  ``base + jitter_median``, a few much later, as on a real network.
* **What happens to this message?** The :class:`LinkFaults` in force on the
  link (a per-link setting, else the global one) say with which probability it
  is lost, duplicated or reordered. By default a lost message also *breaks its
  connection*, as TCP does when retransmission gives up: both ends then learn
  of the loss through their failure detector. Set
  ``loss_breaks_connection=False`` for datagram semantics (the message just
  vanishes), which the membership cores do not assume (their contract asks for
  ordered, reliable connections), but which a broadcast core must survive.
  Duplication and reordering break that contract too, and exist for the same
  kind of robustness tests.
* **Can A reach B?** Not while a partition separates them (:meth:`Network.partition`).
  A partition is a list of groups: nodes in different groups of one partition
  cannot reach each other, nodes in no group are unaffected, and several
  partitions may stand at once. :meth:`Network.heal` lifts one or all.

The simulator, not this module, decides what a partition does to existing
connections (they break, and both ends learn it after
``NetworkConfig.break_detection_delay``) and to dials (they fail after
``NetworkConfig.dial_timeout``).

Determinism: the only randomness is ``Network.rng``; node indexes (ints), never
sets or hashes, key the per-link tables.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Final, final

import attrs

from runtime.sim.clock import seconds_to_ns

__all__ = [
    "LATENCY_TABLE_BITS",
    "NO_FAULTS",
    "Latency",
    "LinkFaults",
    "Network",
    "NetworkConfig",
]


def _probability(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1]")


def _seconds(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if type(value) not in (int, float) or not 0.0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0")


@final
@attrs.frozen(kw_only=True)
class Latency:
    """One-way message delay: ``base`` plus a lognormal jitter.

    Attributes:
        base: the fixed part, seconds. 5 ms is a message within one region.
        jitter_median: median of the jitter, seconds (0 turns jitter off).
        jitter_sigma: shape of the lognormal jitter: 0 is no spread, 0.5 puts
            one message in a hundred above 3.2x the median, 1.0 makes a long
            tail.
    """

    base: float = attrs.field(default=0.005, validator=_seconds)
    jitter_median: float = attrs.field(default=0.002, validator=_seconds)
    jitter_sigma: float = attrs.field(default=0.5, validator=_seconds)


@final
@attrs.frozen(kw_only=True)
class LinkFaults:
    """What may happen to one message on a link (each drawn independently).

    Attributes:
        loss: probability the message is lost.
        loss_breaks_connection: a loss also breaks the connection it travelled
            on, and both ends are told after the break detection delay (TCP's
            behaviour). When false the message vanishes silently.
        duplicate: probability a second copy is delivered, a little later.
        reorder: probability the message ignores the order of its link and
            takes up to ``reorder_delay`` extra, so later ones may overtake it.
        reorder_delay: the extra delay of a reordered message or a duplicate.
    """

    loss: float = attrs.field(default=0.0, validator=_probability)
    loss_breaks_connection: bool = True
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    reorder: float = attrs.field(default=0.0, validator=_probability)
    reorder_delay: float = attrs.field(default=0.05, validator=_seconds)

    @property
    def benign(self) -> bool:
        """Whether these faults never touch a message."""
        return self.loss == 0.0 and self.duplicate == 0.0 and self.reorder == 0.0


NO_FAULTS: Final = LinkFaults()
"""Faults that touch no message."""

LATENCY_TABLE_BITS: Final = 12
"""log2 of the number of latency samples a network draws from."""


@final
@attrs.frozen(kw_only=True)
class NetworkConfig:
    """The network a simulation runs on.

    Attributes:
        latency: the one-way delay of every message (and of a dial's round
            trip, counted twice).
        faults: faults on every link that has no setting of its own.
        dial_timeout: seconds after which a dial to a crashed, departed or
            partitioned node is reported failed (``on_connect_failed``). 2 s is
            a typical application connect timeout; the kernel's default of
            minutes would stall every repair.
        crash_detection_delay: seconds between a node's crash and its
            connected peers' ``on_connection_lost``. 1 s is a heartbeat
            failure detector with a tight timeout; a process crash on a live
            host (a reset) would be noticed within a round trip.
        break_detection_delay: seconds between a connection breaking (a
            partition, a loss) and ``on_connection_lost`` at its ends: TCP's
            retransmission timeout or a heartbeat failure detector. 3 s.
        redial_backoff_min, redial_backoff_max: a node that still wants a
            connection redials after a failed dial or a detected loss, waiting
            ``backoff * uniform(0.5, 1.5)``; the backoff doubles on each
            failure up to the maximum. 0.05 s and 5 s are the trio transport's
            ``reconnect_backoff_min`` / ``reconnect_backoff_max``.
    """

    latency: Latency = Latency()
    faults: LinkFaults = NO_FAULTS
    dial_timeout: float = attrs.field(default=2.0, validator=_seconds)
    crash_detection_delay: float = attrs.field(default=1.0, validator=_seconds)
    break_detection_delay: float = attrs.field(default=3.0, validator=_seconds)
    redial_backoff_min: float = attrs.field(default=0.05, validator=_seconds)
    redial_backoff_max: float = attrs.field(default=5.0, validator=_seconds)


@final
class Network:
    """Latency sampling, fault settings and partitions of one simulation.

    Args:
        config: the latency model, default faults and detection delays.
        rng: the network's only source of randomness (derived by the
            simulator from its root seed).

    Nodes are named by their simulator index (an ``int``).
    """

    def __init__(self, config: NetworkConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        latency = config.latency
        # One-way delays are drawn from a table of samples filled once from
        # the lognormal: one getrandbits per message instead of a gauss (the
        # simulator sends millions). 4096 samples reach about 3.5 sigma of
        # the tail, and filling them costs a few milliseconds per simulation.
        base_ns = seconds_to_ns(latency.base)
        jitter_ns = latency.jitter_median * 1e9
        if jitter_ns and latency.jitter_sigma:
            mu = math.log(jitter_ns)
            self.latency_table = [
                base_ns + int(math.exp(rng.gauss(mu, latency.jitter_sigma)))
                for _ in range(1 << LATENCY_TABLE_BITS)
            ]
        else:
            self.latency_table = [base_ns + int(jitter_ns)] * (1 << LATENCY_TABLE_BITS)
        self._global = config.faults
        self._links: dict[tuple[int, int], LinkFaults] = {}
        # True when some message may be touched: the send path then looks
        # faults up; otherwise it skips them entirely.
        self.faulty = not self._global.benign
        # Partition id -> node index -> group number within that partition.
        self._partitions: dict[int, dict[int, int]] = {}
        self._next_partition = 1

    # -- latency ------------------------------------------------------------

    def latency_ns(self) -> int:
        """One sample of the one-way delay, in nanoseconds."""
        return self.latency_table[self.rng.getrandbits(LATENCY_TABLE_BITS)]

    # -- faults ---------------------------------------------------------------

    def faults(self, src: int, dst: int) -> LinkFaults:
        """The faults in force from node *src* to node *dst*."""
        if self._links:
            return self._links.get((src, dst), self._global)
        return self._global

    def set_faults(
        self, faults: LinkFaults, *, src: int | None = None, dst: int | None = None
    ) -> None:
        """Set *faults* globally (no *src*/*dst*) or on the link *src* -> *dst*."""
        if src is None and dst is None:
            self._global = faults
        elif src is not None and dst is not None:
            self._links[(src, dst)] = faults
        else:
            raise ValueError("give both src and dst for a link, or neither")
        self._refresh()

    def clear_faults(self) -> None:
        """Remove every fault setting, global and per link."""
        self._global = NO_FAULTS
        self._links.clear()
        self._refresh()

    def _refresh(self) -> None:
        self.faulty = not self._global.benign or any(
            not faults.benign for faults in self._links.values()
        )

    # -- partitions -------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> int:
        """Cut every pair of nodes in different *groups*; return the partition id.

        Raises:
            ValueError: fewer than two non-empty groups, or a node in two.
        """
        side: dict[int, int] = {}
        count = 0
        for number, group in enumerate(groups):
            members = list(group)
            if members:
                count += 1
            for node in members:
                if node in side:
                    raise ValueError(f"node {node} is in two groups")
                side[node] = number
        if count < 2:
            raise ValueError("a partition needs at least two non-empty groups")
        partition_id = self._next_partition
        self._next_partition += 1
        self._partitions[partition_id] = side
        return partition_id

    def heal(self, partition_id: int | None = None) -> None:
        """Lift one partition, or every one (no id).

        Raises:
            KeyError: no standing partition has that id.
        """
        if partition_id is None:
            self._partitions.clear()
        else:
            del self._partitions[partition_id]

    @property
    def partitioned(self) -> bool:
        """Whether any partition stands."""
        return bool(self._partitions)

    def partition_ids(self) -> list[int]:
        """Ids of the standing partitions, oldest first."""
        return list(self._partitions)

    def blocked(self, a: int, b: int) -> bool:
        """Whether a standing partition separates nodes *a* and *b*."""
        for side in self._partitions.values():
            side_a = side.get(a)
            if side_a is not None:
                side_b = side.get(b)
                if side_b is not None and side_a != side_b:
                    return True
        return False
