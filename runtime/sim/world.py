"""The deterministic simulator: many nodes, one process, the real protocol cores.

DESIGN.md rule 3. A :class:`Simulation` runs one membership core per node (any
:class:`~runtime.core.membership.MembershipCore`: HyParView, full mesh, ...), and
optionally one broadcast core per node (Plumtree, or the flooding baseline of
:mod:`runtime.sim.broadcast`), and carries out every effect they return over a
modelled network (:mod:`runtime.sim.network`). Nothing here reads a clock,
starts a thread or imports trio: the event queue *is* the clock.

Theory of operation
-------------------
**Clock and queue.** Time is an ``int`` of nanoseconds. The queue is a binary
heap of plain tuples ``(time_ns, seq, kind, node, a, b, c)``: ``seq`` is a
counter given at scheduling time, so ties run in the order they were scheduled
and the remaining fields are never compared. ``run_until`` pops events in order,
sets the clock to each, and feeds the event to the core it is for, as
``now = time_ns / 1e9`` float seconds. A core's effects are carried out at once,
in order, by one ``match`` over the effect union that ends in ``assert_never``.

**Links and connections** follow the contract the trio shell gives the cores
(``runtime/shell/membership.py`` over the transport's dial loops):

* ``Connect(B)`` at A means "A wants a link to B until ``Disconnect(B)``". If
  no connection joins A and B, A dials. A dial to a live node that no partition
  separates succeeds after a round trip (messages sent meanwhile wait for it).
  A dial to a crashed, departed, unknown or partitioned node fails after
  ``dial_timeout``: A is told ``on_connect_failed(B)`` once per ``Connect``,
  anything sent on it is dropped, and A redials with exponential backoff for
  as long as it wants B (the transport's reconnect loop).
* A connection joins a pair of nodes and serves both directions, as TCP does:
  a connection B dialled carries A's messages too, once A wants B. It stays
  while either end wants it.
* ``Send(B, m)`` at A needs A to want B and a connection to B (else the
  message is dropped and counted as unconnected). It arrives after a latency
  sample, never before an earlier message from A to B (FIFO per ordered pair,
  across successive connections too), unless a fault reorders it.
* ``Disconnect(B)`` at A drops A's want, gracefully: what was sent is still
  delivered. The connection closes once neither end wants it. B's core hears
  nothing of it, as in the shell, where B's own link to A is its business;
  the protocols say goodbye in messages (HyParView's ``DisconnectNotice``).
* A connection **breaks** when an end crashes (peers learn it after
  ``crash_detection_delay``), or when a partition separates its ends or a fault
  loses one of its messages (after ``break_detection_delay``, a failure
  detector's timeout). Messages in flight on it are dropped. Each end that
  still wants the other once the delay has passed (and has not restarted) gets
  ``on_connection_lost``, then redials while it still wants the link.

**Nodes.** A node has a name, a spec, a core and an *incarnation*. ``crash``
kills it (its timers, wants, connections and recorded view go); ``restart``
builds a fresh core with a new incarnation and a new rng, starts it and joins
it through a contact; ``leave`` runs the core's graceful ``leave``, then takes
the node away: its goodbyes are delivered, then its connections close and the
peers that still want it are told at once.

**Views.** ``NeighbourUp`` / ``NeighbourDown`` are recorded per node: that record
*is* the node's view of its neighbours, checked against the core by
:mod:`runtime.sim.checkers` and flooded over by the experiments. They also feed
the node's broadcast core (``on_neighbour_up`` / ``on_neighbour_down``). Messages
a broadcast core sends reach the receiver's broadcast core (and membership
messages its membership core), over the same connections; a broadcast core
sends only to neighbours, whose links membership keeps.

Determinism
-----------
One root seed. The network draws from ``Random(f"{seed}/network")``, the
simulator's own choices (random contacts, redial jitter) from
``Random(f"{seed}/workload")``, and each node's core from
``Random(f"{seed}/{name}/{incarnation}/<layer>")``: string seeds are hashed with
SHA-512 by ``random``, independent of ``PYTHONHASHSEED``. Nodes are numbered in
creation order and kept in lists and dicts (insertion-ordered); no set is ever
iterated. With ``trace=True`` every event the cores see is folded into a
BLAKE2b digest (time, kind, sender, receiver and the ``repr`` of the message
or timer name): two runs from one seed and one schedule give one digest.

Invariants: a connection is in ``_links[a][name_b]`` and ``_links[b][name_a]``
(the same object) while it is neither broken nor closed, and in neither
afterwards. A dead node has no timers, no wants, no recorded view and no
connection of its own (dials towards it may sit in its table until they fail).
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import random
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, Protocol, TypeAlias, assert_never, final

import attrs

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
from runtime.core.membership import MembershipCore
from runtime.core.plumtree import Deliver, MessageId, PlumtreeEffect
from runtime.core.spec import NodeSpec
from runtime.sim.clock import NS_PER_SECOND, seconds_to_ns
from runtime.sim.network import LATENCY_TABLE_BITS, LinkFaults, Network, NetworkConfig

__all__ = [
    "BroadcastCore",
    "BroadcastFactory",
    "DeliverObserver",
    "MembershipFactory",
    "Simulation",
    "SimulationStatistics",
    "node_spec",
]


class BroadcastCore(Protocol):
    """A sans-IO broadcast core the simulator can drive (Plumtree's interface)."""

    def broadcast(
        self, message_id: MessageId, payload: object, now: float
    ) -> list[PlumtreeEffect]:
        """Originate a message."""
        ...

    def on_message(
        self, sender: str, message: object, now: float
    ) -> list[PlumtreeEffect]:
        """A message of this broadcast layer from node *sender*."""
        ...

    def on_neighbour_up(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """Membership says *peer* became a neighbour."""
        ...

    def on_neighbour_down(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """Membership says *peer* is no longer a neighbour."""
        ...

    def on_timer(self, name: Hashable, now: float) -> list[PlumtreeEffect]:
        """A timer this core set has fired."""
        ...


MembershipFactory: TypeAlias = Callable[
    [NodeSpec, random.Random, int, float], MembershipCore
]
"""Builds a node's membership core from ``(spec, rng, incarnation, now)``."""

BroadcastFactory: TypeAlias = Callable[[str, random.Random], BroadcastCore]
"""Builds a node's broadcast core from ``(name, rng)``."""

DeliverObserver: TypeAlias = Callable[[str, Deliver, float], None]
"""Called with ``(node, deliver, now)`` for every ``Deliver`` a broadcast core emits."""


def node_spec(index: int) -> NodeSpec:
    """The spec the simulator gives its *index*-th node: ``n<index>@sim``."""
    address = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    return NodeSpec(name=f"n{index}@sim", addresses=[(address, 9000)])


@final
@attrs.frozen(kw_only=True)
class SimulationStatistics:
    """Counters of one simulation since it was built (a snapshot).

    Attributes:
        now: virtual time, seconds.
        node_count, live_node_count: nodes ever added; of those, alive now.
        event_count: events taken from the queue (including stale ones).
        core_input_count: inputs fed to cores (messages, timers, connection
            events, commands): the simulated node-events.
        message_count: messages delivered to a core.
        dropped_unconnected_count: messages a core sent with no connection.
        dropped_in_flight_count: messages whose connection broke, or whose
            receiver died, before they arrived.
        lost_count, duplicated_count, reordered_count: messages touched by
            link faults.
        dial_count, dial_failed_count: dials started; of those, failed.
        redial_count: of the dials, those the driver made again on its own
            (after a failure or a loss, for a node still wanting the link).
        connection_break_count: connections broken (crash, partition, loss).
        connection_count: connections currently up or dialling.
        view_change_count: ``NeighbourUp`` plus ``NeighbourDown`` effects.
        delivered_count: ``Deliver`` effects of broadcast cores.
        queue_length: events waiting (including stale ones).
    """

    now: float
    node_count: int
    live_node_count: int
    event_count: int
    core_input_count: int
    message_count: int
    dropped_unconnected_count: int
    dropped_in_flight_count: int
    lost_count: int
    duplicated_count: int
    reordered_count: int
    dial_count: int
    dial_failed_count: int
    redial_count: int
    connection_break_count: int
    connection_count: int
    view_change_count: int
    delivered_count: int
    queue_length: int


# Event kinds: the third field of a queue tuple.
_K_MESSAGE: Final = 0  # node=receiver, a=connection, b=sender name, c=message
_K_BMESSAGE: Final = 1  # the same, for the broadcast layer
_K_TIMER: Final = 2  # node, b=timer name; valid while the node's table holds seq
_K_BTIMER: Final = 3  # the same, for the broadcast layer
_K_LOST: Final = 4  # node, a=incarnation, b=peer name; valid while pending
_K_DIAL_FAILED: Final = 5  # a=connection: tell the ends that want it
_K_UNKNOWN_FAILED: Final = 6  # node, a=incarnation, b=a name nobody has
_K_REDIAL: Final = 7  # node, a=incarnation, b=peer name
_K_CLOSE: Final = 8  # a=connection of a departed node: break it now
_K_CALL: Final = 9  # a=callable of no arguments

_Event: TypeAlias = tuple[int, int, int, int, Any, Any, Any]

# Message reprs remembered for the trace (see Simulation._repr).
_REPR_CACHE_SIZE: Final = 4096

# random_live_node draws this many times before it lists the candidates.
_DRAWS_BEFORE_LISTING: Final = 8

# Past this many remembered FIFO horizons per node, stale ones are purged.
_RESIDUAL_PER_NODE: Final = 4


@final
class _Connection:
    """One connection between nodes ``a < b`` (see the module docstring)."""

    __slots__ = ("a", "b", "broken", "failing", "last_ab", "last_ba", "ready_ns")

    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b
        self.broken = False
        # The dial will fail: nothing is delivered, and the ends that want it
        # are told at its _K_DIAL_FAILED event.
        self.failing = False
        # When the dial completes; messages leave no earlier.
        self.ready_ns = 0
        # Arrival time of the last message each way: later ones never arrive
        # earlier (FIFO per ordered pair).
        self.last_ab = 0
        self.last_ba = 0


@final
class _Want:
    """A node's wish for a link to a peer, from ``Connect`` to ``Disconnect``."""

    __slots__ = ("backoff_ns", "reported")

    def __init__(self, backoff_ns: int) -> None:
        # A failed dial was reported since the last Connect (once per Connect,
        # as the shell does).
        self.reported = False
        # The wait before the next redial (doubles on each failure).
        self.backoff_ns = backoff_ns


@final
class Simulation:
    """A cluster of protocol cores on a simulated network, driven by one seed.

    Args:
        membership: builds each node's membership core.
        seed: the root seed of every random choice in the run.
        network: latency, faults and detection delays (defaults if omitted).
        broadcast: builds each node's broadcast core, if the run has one.
        trace: keep the running BLAKE2b digest of every event (costs a
            ``repr`` per message; switch off for the largest runs).

    Nodes are named by the simulator (``n<index>@sim``, see :func:`node_spec`)
    unless a name is given. Every method that feeds a core carries out its
    effects before it returns; none of them runs the queue except ``run_*``.

    Error handling:
        Caller mistakes (an unknown or dead node where a live one is needed,
        a duplicate name) raise ``ValueError``. A core that breaks its
        contract (a ``NeighbourUp`` twice, a ``Connect`` to itself) fails an
        ``assert``.
    """

    def __init__(
        self,
        membership: MembershipFactory,
        *,
        seed: int,
        network: NetworkConfig | None = None,
        broadcast: BroadcastFactory | None = None,
        trace: bool = True,
    ) -> None:
        self._seed = seed
        self._membership_factory = membership
        self._broadcast_factory = broadcast
        config = network if network is not None else NetworkConfig()
        self._network = Network(config, random.Random(f"{seed}/network"))
        self._workload = random.Random(f"{seed}/workload")
        self._dial_timeout_ns = seconds_to_ns(config.dial_timeout)
        self._crash_delay_ns = seconds_to_ns(config.crash_detection_delay)
        self._break_delay_ns = seconds_to_ns(config.break_detection_delay)
        self._backoff_min_ns = seconds_to_ns(config.redial_backoff_min)
        self._backoff_max_ns = seconds_to_ns(config.redial_backoff_max)
        self._trace = trace
        self._digest = hashlib.blake2b(digest_size=32)
        self._digest.update(f"seed {seed}\n".encode())
        self._repr_cache: dict[int, tuple[object, str]] = {}
        self._now_ns = 0
        self._seq = 0
        self._queue: list[_Event] = []
        # Per node, indexed by creation order.
        self._names: list[str] = []
        self._specs: list[NodeSpec] = []
        self._index: dict[str, int] = {}
        self._cores: list[MembershipCore] = []
        self._bcores: list[BroadcastCore] = []
        self._alive: list[bool] = []
        self._incarnation: list[int] = []
        # Timer name -> seq of the queue event that fires it.
        self._timers: list[dict[Hashable, int]] = []
        self._btimers: list[dict[Hashable, int]] = []
        # Peer name -> connection (see the invariants above).
        self._links: list[dict[str, _Connection]] = []
        # Peer name -> the node's want of a link (Connect, until Disconnect).
        self._wants: list[dict[str, _Want]] = []
        # (node, peer name) -> (seq, incarnation) of the _K_LOST event that
        # will tell that incarnation of the node its link to the peer broke:
        # at most one per pair.
        self._pending_lost: dict[tuple[int, str], tuple[int, int]] = {}
        # The node's recorded view: neighbours in NeighbourUp order.
        self._views: list[dict[str, None]] = []
        # (src, dst) -> arrival time of the last message of a closed
        # connection still in flight; a new connection starts behind it.
        self._residual: dict[tuple[int, int], int] = {}
        self.on_deliver: DeliverObserver | None = None
        """Called for every ``Deliver`` a broadcast core emits (a workload's hook)."""
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "event_count",
                "core_input_count",
                "message_count",
                "dropped_unconnected_count",
                "dropped_in_flight_count",
                "lost_count",
                "duplicated_count",
                "reordered_count",
                "dial_count",
                "dial_failed_count",
                "redial_count",
                "connection_break_count",
                "view_change_count",
                "delivered_count",
            ),
            0,
        )

    # -- queries --------------------------------------------------------------

    @property
    def seed(self) -> int:
        """The root seed."""
        return self._seed

    @property
    def now(self) -> float:
        """Virtual time, float seconds since the start."""
        return self._now_ns / NS_PER_SECOND

    @property
    def now_ns(self) -> int:
        """Virtual time, integer nanoseconds since the start."""
        return self._now_ns

    @property
    def network(self) -> Network:
        """The network model (partitions and faults; prefer the methods here)."""
        return self._network

    @property
    def rng(self) -> random.Random:
        """The workload's random source (seeded from the root seed)."""
        return self._workload

    @property
    def view_change_count(self) -> int:
        """``NeighbourUp`` plus ``NeighbourDown`` effects so far (cheap to poll)."""
        return self._counts["view_change_count"]

    def nodes(self) -> list[str]:
        """Every node ever added, in creation order."""
        return list(self._names)

    def live_nodes(self) -> list[str]:
        """The nodes alive now, in creation order."""
        alive = self._alive
        return [name for i, name in enumerate(self._names) if alive[i]]

    def dead_nodes(self) -> list[str]:
        """The crashed or departed nodes, in creation order."""
        alive = self._alive
        return [name for i, name in enumerate(self._names) if not alive[i]]

    def is_alive(self, name: str) -> bool:
        """Whether *name* is alive (crashed and departed nodes are not)."""
        return self._alive[self._node(name)]

    def spec(self, name: str) -> NodeSpec:
        """The spec of node *name*."""
        return self._specs[self._node(name)]

    def incarnation(self, name: str) -> int:
        """How many times *name* was (re)started: 1 for a node never restarted."""
        return self._incarnation[self._node(name)]

    def core(self, name: str) -> MembershipCore:
        """The membership core of *name* (its last one, if it is dead)."""
        return self._cores[self._node(name)]

    def broadcast_core(self, name: str) -> BroadcastCore:
        """The broadcast core of *name*.

        Raises:
            ValueError: the simulation has no broadcast layer.
        """
        if self._broadcast_factory is None:
            raise ValueError("this simulation has no broadcast layer")
        return self._bcores[self._node(name)]

    def view(self, name: str) -> list[str]:
        """The neighbours of *name* as its ``NeighbourUp``/``Down`` effects say."""
        return list(self._views[self._node(name)])

    def views(self) -> dict[str, list[str]]:
        """Recorded views of every live node, in creation order."""
        alive = self._alive
        return {
            name: list(self._views[i]) for i, name in enumerate(self._names) if alive[i]
        }

    def trace_digest(self) -> str:
        """Hex BLAKE2b digest of the ordered trace so far (see Determinism)."""
        return self._digest.hexdigest()

    def statistics(self) -> SimulationStatistics:
        """A snapshot of the counters."""
        live = sum(self._alive)
        connections = sum(len(links) for links in self._links) // 2
        return SimulationStatistics(
            now=self.now,
            node_count=len(self._names),
            live_node_count=live,
            connection_count=connections,
            queue_length=len(self._queue),
            **self._counts,
        )

    # -- nodes ----------------------------------------------------------------

    def add_node(self, contact: str | None = None, *, name: str | None = None) -> str:
        """Add a node, start its core and, given a *contact*, join through it.

        Args:
            contact: a live node to join through; ``None`` starts the node
                alone (the first node of a cluster).
            name: the node's name, ``n<index>@sim`` if omitted.

        Returns:
            The new node's name.

        Raises:
            ValueError: the name is taken, or *contact* is not a live node.
        """
        index = len(self._names)
        spec = node_spec(index)
        if name is not None:
            spec = attrs.evolve(spec, name=name)
        if spec.name in self._index:
            raise ValueError(f"a node named {spec.name!r} exists")
        if contact is not None:
            self._live(contact)
        self._names.append(spec.name)
        self._specs.append(spec)
        self._index[spec.name] = index
        self._alive.append(True)
        self._incarnation.append(0)
        self._timers.append({})
        self._btimers.append({})
        self._links.append({})
        self._wants.append({})
        self._views.append({})
        self._cores.append(self._new_core(index))
        if self._broadcast_factory is not None:
            self._bcores.append(self._new_bcore(index))
        self._record(f"add {spec.name}")
        self._start(index, contact)
        return spec.name

    def join(self, name: str, contact: str) -> None:
        """Make live node *name* (re)join the cluster through live *contact*."""
        i = self._live(name)
        self._live(contact)
        self._record(f"join {name} {contact}")
        self._counts["core_input_count"] += 1
        self._apply(i, self._cores[i].join(self._specs[self._index[contact]], self.now))

    def random_live_node(self, *, exclude: Iterable[str] = ()) -> str | None:
        """A live node drawn by the workload rng, or ``None`` if there is none."""
        excluded = frozenset(exclude)
        alive = self._alive
        names = self._names
        rng = self._workload
        # Draw among all nodes and retry on a dead or excluded one: O(1) per
        # draw while most nodes are candidates (a 10,000-node build draws a
        # contact per join). Past a few misses, list the candidates.
        for _ in range(_DRAWS_BEFORE_LISTING):
            if not names:
                return None
            i = rng.randrange(len(names))
            if alive[i] and names[i] not in excluded:
                return names[i]
        candidates = [
            name for i, name in enumerate(names) if alive[i] and name not in excluded
        ]
        return rng.choice(candidates) if candidates else None

    def crash(self, name: str) -> None:
        """Kill *name* at once: no goodbye; its peers notice by connection loss."""
        i = self._live(name)
        self._record(f"crash {name}")
        self._alive[i] = False
        self._timers[i] = {}
        self._btimers[i] = {}
        self._wants[i] = {}
        self._views[i] = {}
        links = self._links[i]
        self._links[i] = {}
        for conn in links.values():
            if conn.failing:
                self._unlink(conn)
            else:
                self._break(conn, self._crash_delay_ns)

    def restart(self, name: str, contact: str | None = None) -> None:
        """Bring crashed or departed *name* back with a fresh core.

        The new core has a new incarnation and a new rng. It is started and,
        given a live *contact*, joins through it.

        Raises:
            ValueError: *name* is alive, or *contact* is not a live node.
        """
        i = self._node(name)
        if self._alive[i]:
            raise ValueError(f"{name} is alive")
        if contact is not None:
            self._live(contact)
        self._record(f"restart {name}")
        # Dials made towards the dead node may sit here; they fail on their
        # own, and the new incarnation starts with no connection.
        self._links[i] = {}
        self._alive[i] = True
        self._cores[i] = self._new_core(i)
        if self._broadcast_factory is not None:
            self._bcores[i] = self._new_bcore(i)
        self._start(i, contact)

    def leave(self, name: str) -> None:
        """*name* leaves gracefully: its core says goodbye, then the node goes.

        What the core sent (its goodbyes) is still delivered; then its
        connections close, and peers that still want it are told at once.
        """
        i = self._live(name)
        self._record(f"leave {name}")
        self._counts["core_input_count"] += 1
        self._apply(i, self._cores[i].leave(self.now))
        self._alive[i] = False
        self._timers[i] = {}
        self._btimers[i] = {}
        self._wants[i] = {}
        for peer in list(self._views[i]):
            self._neighbour_down(i, peer)
        links = self._links[i]
        self._links[i] = {}
        now = self._now_ns
        for conn in links.values():
            self._unlink(conn)
            if conn.failing:
                continue
            last = conn.last_ab if i == conn.a else conn.last_ba
            self._push(max(now, last), _K_CLOSE, -1, conn, None, None)

    # -- the network ------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> int:
        """Cut every pair of nodes in different *groups*; return the partition id.

        Connections across break now: messages in flight on them are lost and
        their ends hear of it after the break detection delay. Dials across
        fail while the partition stands. Nodes in no group are unaffected.
        """
        indexes = [[self._node(name) for name in group] for group in groups]
        partition_id = self._network.partition(indexes)
        self._record(f"partition {partition_id} {[sorted(g) for g in indexes]}")
        for group in indexes:
            for i in group:
                for conn in list(self._links[i].values()):
                    if not conn.failing and self._network.blocked(conn.a, conn.b):
                        self._break(conn, self._break_delay_ns)
        # A dial under way across the cut breaks like an established
        # connection; new dials across fail while the partition stands.
        return partition_id

    def heal(self, partition_id: int | None = None) -> None:
        """Lift one partition, or all. Nodes find each other again on their own."""
        self._record(f"heal {partition_id}")
        self._network.heal(partition_id)

    def set_faults(
        self, faults: LinkFaults, *, src: str | None = None, dst: str | None = None
    ) -> None:
        """Set the faults of every link (no *src*/*dst*) or of *src* -> *dst*."""
        self._record(f"faults {src} {dst} {faults!r}")
        self._network.set_faults(
            faults,
            src=None if src is None else self._node(src),
            dst=None if dst is None else self._node(dst),
        )

    def clear_faults(self) -> None:
        """Remove every link fault."""
        self._record("faults cleared")
        self._network.clear_faults()

    # -- broadcast --------------------------------------------------------------

    def broadcast(self, name: str, message_id: MessageId, payload: object) -> None:
        """Have live node *name*'s broadcast core originate a message."""
        i = self._live(name)
        if self._broadcast_factory is None:
            raise ValueError("this simulation has no broadcast layer")
        self._record(f"broadcast {name} {message_id!r}")
        self._counts["core_input_count"] += 1
        self._apply_broadcast(
            i, self._bcores[i].broadcast(message_id, payload, self.now)
        )

    def apply_effects(self, name: str, effects: Iterable[Effect]) -> None:
        """Carry out *effects* as if live node *name*'s core had returned them.

        A test hook: it lets a test drive the connection model and the timers
        directly, or a workload inject what a core would have done.
        """
        i = self._live(name)
        self._record(f"inject {name}")
        self._apply(i, list(effects))

    # -- running ----------------------------------------------------------------

    def call_at(self, at: float, callback: Callable[[], object]) -> None:
        """Run *callback* (a workload step) at virtual time *at* (not in the past)."""
        self._push(
            max(seconds_to_ns(at), self._now_ns), _K_CALL, -1, callback, None, None
        )

    def run_for(self, seconds: float) -> None:
        """Run every event of the next *seconds* of virtual time."""
        self._run(self._now_ns + seconds_to_ns(seconds))

    def run_until(self, at: float) -> None:
        """Run every event up to virtual time *at*; the clock then reads *at*."""
        self._run(seconds_to_ns(at))

    def fork(self) -> Simulation:
        """An independent deep copy: same state, same future, same digest so far.

        Cores, queue, network and rngs are copied. Functions are not:
        ``on_deliver`` and callbacks given to ``call_at`` are shared with the
        original, so a callback that names the original simulation still acts
        on it; schedule workload steps after forking.
        """
        memo: dict[int, object] = {id(self._digest): self._digest.copy()}
        clone = copy.deepcopy(self, memo)
        return clone

    # -- the event loop -----------------------------------------------------------

    def _run(self, end_ns: int) -> None:
        # The hot loop: locals for everything touched per event (a global or
        # attribute lookup costs as much as the comparison it feeds).
        queue = self._queue
        pop = heapq.heappop
        alive = self._alive
        cores = self._cores
        all_timers = self._timers
        apply = self._apply
        counts = self._counts
        trace = self._trace
        second = float(NS_PER_SECOND)
        message_kind, timer_kind = _K_MESSAGE, _K_TIMER
        processed = 0
        inputs = 0
        messages = 0
        try:
            while queue and queue[0][0] <= end_ns:
                t, seq, kind, node, a, b, c = pop(queue)
                self._now_ns = t
                processed += 1
                if kind == message_kind:
                    if a.broken or not alive[node]:
                        counts["dropped_in_flight_count"] += 1
                        continue
                    if trace:
                        self._record(f"m {b} {self._names[node]} {self._repr(c)}")
                    inputs += 1
                    messages += 1
                    apply(node, cores[node].on_message(b, c, t / second))
                elif kind == timer_kind:
                    timers = all_timers[node]
                    if timers.get(b) != seq:
                        continue
                    del timers[b]
                    if trace:
                        self._record(f"t {self._names[node]} {b!r}")
                    inputs += 1
                    apply(node, cores[node].on_timer(b, t / second))
                elif kind == _K_BMESSAGE:
                    if a.broken or not alive[node]:
                        counts["dropped_in_flight_count"] += 1
                        continue
                    if trace:
                        self._record(f"b {b} {self._names[node]} {self._repr(c)}")
                    inputs += 1
                    messages += 1
                    self._apply_broadcast(
                        node, self._bcores[node].on_message(b, c, t / second)
                    )
                elif kind == _K_BTIMER:
                    timers = self._btimers[node]
                    if timers.get(b) != seq:
                        continue
                    del timers[b]
                    if trace:
                        self._record(f"bt {self._names[node]} {b!r}")
                    inputs += 1
                    self._apply_broadcast(
                        node, self._bcores[node].on_timer(b, t / second)
                    )
                elif kind == _K_LOST:
                    if self._pending_lost.get((node, b)) == (seq, a):
                        del self._pending_lost[(node, b)]
                        inputs += self._lost(node, a, b)
                elif kind == _K_DIAL_FAILED:
                    inputs += self._dial_failed(a)
                elif kind == _K_REDIAL:
                    self._redial(node, a, b)
                elif kind == _K_UNKNOWN_FAILED:
                    inputs += self._unknown_failed(node, a, b)
                elif kind == _K_CLOSE:
                    self._break(a, 0)
                elif kind == _K_CALL:
                    a()
                else:  # pragma: no cover - every kind is handled above
                    raise AssertionError(f"unknown event kind {kind}")
        finally:
            counts["event_count"] += processed
            counts["core_input_count"] += inputs
            counts["message_count"] += messages
        if end_ns > self._now_ns:
            self._now_ns = end_ns

    def _lost(self, i: int, incarnation: int, peer: str) -> int:
        """Tell node *i* its link to *peer* died, if it still wants it; redial."""
        if not self._alive[i] or self._incarnation[i] != incarnation:
            return 0
        if peer not in self._wants[i]:
            return 0
        self._record(f"lost {self._names[i]} {peer}")
        self._apply(i, self._cores[i].on_connection_lost(peer, self.now))
        want = self._wants[i].get(peer)
        if want is not None and peer not in self._links[i]:
            want.backoff_ns = self._backoff_min_ns
            self._schedule_redial(i, peer, want)
        return 1

    def _redial(self, i: int, incarnation: int, peer: str) -> None:
        """Dial again if node *i* still wants *peer* and has no connection."""
        if not self._alive[i] or self._incarnation[i] != incarnation:
            return
        if peer in self._wants[i] and peer not in self._links[i]:
            self._counts["redial_count"] += 1
            self._dial(i, peer)

    def _dial_failed(self, conn: _Connection) -> int:
        """A failing dial's time is up: drop it, tell the ends that want it."""
        self._unlink(conn)
        inputs = 0
        for node, peer in ((conn.a, conn.b), (conn.b, conn.a)):
            if self._alive[node]:
                inputs += self._connect_failed(node, self._names[peer])
        return inputs

    def _unknown_failed(self, i: int, incarnation: int, peer: str) -> int:
        """A dial to a name no node has failed."""
        if not self._alive[i] or self._incarnation[i] != incarnation:
            return 0
        return self._connect_failed(i, peer)

    def _connect_failed(self, i: int, peer: str) -> int:
        """Node *i*'s dial to *peer* failed: report it once per Connect; redial."""
        want = self._wants[i].get(peer)
        if want is None or peer in self._links[i]:
            # Not wanted any more, or a connection from the peer came up
            # meanwhile: nothing to tell, nothing to redial.
            return 0
        inputs = 0
        self._counts["dial_failed_count"] += 1
        if not want.reported:
            want.reported = True
            self._record(f"failed {self._names[i]} {peer}")
            inputs = 1
            self._apply(i, self._cores[i].on_connect_failed(peer, self.now))
        want = self._wants[i].get(peer)
        if want is not None and peer not in self._links[i]:
            self._schedule_redial(i, peer, want)
            want.backoff_ns = min(2 * want.backoff_ns, self._backoff_max_ns)
        return inputs

    def _schedule_redial(self, i: int, peer: str, want: _Want) -> None:
        # The transport's jitter: backoff * uniform(0.5, 1.5).
        delay = want.backoff_ns // 2 + self._workload.randrange(want.backoff_ns + 1)
        self._push(self._now_ns + delay, _K_REDIAL, i, self._incarnation[i], peer, None)

    # -- carrying out effects --------------------------------------------------------

    def _apply(self, i: int, effects: list[Effect]) -> None:
        """Carry out membership core *i*'s effects, in order.

        Cases are bare class patterns, most frequent first: keyword
        sub-patterns cost a ``getattr`` each and made this 2.5x slower.
        """
        for effect in effects:
            match effect:
                case Send():
                    self._send(i, effect.to, effect.message, _K_MESSAGE)
                case SetTimer():
                    self._set_timer(
                        i, self._timers[i], effect.name, effect.at, _K_TIMER
                    )
                case Connect():
                    self._connect(i, effect.spec.name)
                case Disconnect():
                    self._disconnect(i, effect.peer)
                case CancelTimer():
                    self._timers[i].pop(effect.name, None)
                case NeighbourUp():
                    self._neighbour_up(i, effect.spec.name)
                case NeighbourDown():
                    self._neighbour_down(i, effect.peer)
                case _:
                    assert_never(effect)

    def _apply_broadcast(self, i: int, effects: list[PlumtreeEffect]) -> None:
        """Carry out broadcast core *i*'s effects, in order."""
        for effect in effects:
            match effect:
                case Send():
                    self._send(i, effect.to, effect.message, _K_BMESSAGE)
                case SetTimer():
                    self._set_timer(
                        i, self._btimers[i], effect.name, effect.at, _K_BTIMER
                    )
                case CancelTimer():
                    self._btimers[i].pop(effect.name, None)
                case Deliver():
                    self._counts["delivered_count"] += 1
                    if self._trace:
                        self._record(f"d {self._names[i]} {effect.message_id!r}")
                    if self.on_deliver is not None:
                        self.on_deliver(self._names[i], effect, self.now)
                case _:
                    assert_never(effect)

    def _send(self, i: int, to: str, message: object, kind: int) -> None:
        conn = self._links[i].get(to)
        if conn is None or conn.failing or to not in self._wants[i]:
            self._counts["dropped_unconnected_count"] += 1
            return
        now = self._now_ns
        network = self._network
        t = (conn.ready_ns if conn.ready_ns > now else now) + network.latency_table[
            network.rng.getrandbits(LATENCY_TABLE_BITS)
        ]
        forward = i == conn.a
        j = conn.b if forward else conn.a
        if network.faulty and self._send_faulty(i, j, conn, t, kind, message):
            return
        if forward:
            if t < conn.last_ab:
                t = conn.last_ab
            else:
                conn.last_ab = t
        elif t < conn.last_ba:
            t = conn.last_ba
        else:
            conn.last_ba = t
        self._seq += 1
        heapq.heappush(
            self._queue, (t, self._seq, kind, j, conn, self._names[i], message)
        )

    def _send_faulty(
        self, i: int, j: int, conn: _Connection, t: int, kind: int, message: object
    ) -> bool:
        """Apply link faults to a message; whether they consumed it."""
        network = self._network
        faults = network.faults(i, j)
        if faults.benign:
            return False
        rng = network.rng
        if faults.loss and rng.random() < faults.loss:
            self._counts["lost_count"] += 1
            if faults.loss_breaks_connection:
                self._break(conn, self._break_delay_ns)
            return True
        extra = seconds_to_ns(faults.reorder_delay)
        sender = self._names[i]
        if faults.duplicate and rng.random() < faults.duplicate:
            self._counts["duplicated_count"] += 1
            self._push(t + rng.randint(0, extra), kind, j, conn, sender, message)
        if faults.reorder and rng.random() < faults.reorder:
            self._counts["reordered_count"] += 1
            self._push(t + rng.randint(0, extra), kind, j, conn, sender, message)
            return True
        return False

    def _set_timer(
        self, i: int, timers: dict[Hashable, int], name: Hashable, at: float, kind: int
    ) -> None:
        at_ns = round(at * NS_PER_SECOND)
        if at_ns < self._now_ns:
            at_ns = self._now_ns
        self._seq += 1
        timers[name] = self._seq
        heapq.heappush(self._queue, (at_ns, self._seq, kind, i, None, name, None))

    def _connect(self, i: int, peer: str) -> None:
        want = self._wants[i].get(peer)
        if want is None:
            assert peer != self._names[i], f"{peer} asked to connect to itself"
            self._wants[i][peer] = _Want(self._backoff_min_ns)
        else:
            want.reported = False
        if peer not in self._links[i]:
            self._dial(i, peer)

    def _dial(self, i: int, peer: str) -> None:
        """Node *i* dials *peer* (no connection joins them yet)."""
        self._counts["dial_count"] += 1
        j = self._index.get(peer)
        if j is None:
            self._push(
                self._now_ns + self._dial_timeout_ns,
                _K_UNKNOWN_FAILED,
                i,
                self._incarnation[i],
                peer,
                None,
            )
            return
        if self._pending_lost:
            self._detect_now(i, j)
        conn = _Connection(min(i, j), max(i, j))
        if self._residual:
            conn.last_ab = self._residual.pop((conn.a, conn.b), 0)
            conn.last_ba = self._residual.pop((conn.b, conn.a), 0)
        self._links[i][peer] = conn
        self._links[j][self._names[i]] = conn
        network = self._network
        if self._alive[j] and not (network.partitioned and network.blocked(i, j)):
            conn.ready_ns = self._now_ns + network.latency_ns() + network.latency_ns()
            want = self._wants[i].get(peer)
            if want is not None:
                want.backoff_ns = self._backoff_min_ns
        else:
            conn.failing = True
            self._push(
                self._now_ns + self._dial_timeout_ns,
                _K_DIAL_FAILED,
                -1,
                conn,
                None,
                None,
            )

    def _disconnect(self, i: int, peer: str) -> None:
        if self._wants[i].pop(peer, None) is None:
            return
        conn = self._links[i].get(peer)
        if conn is None:
            return
        j = conn.b if i == conn.a else conn.a
        if self._names[i] in self._wants[j]:
            # The peer still wants the link: the connection stays, for it.
            return
        self._close(i, j, conn)

    def _close(self, i: int, j: int, conn: _Connection) -> None:
        """Close *conn* gracefully: what is in flight still arrives."""
        self._unlink(conn)
        if conn.failing:
            return
        now = self._now_ns
        forward = i == conn.a
        out_last = conn.last_ab if forward else conn.last_ba
        in_last = conn.last_ba if forward else conn.last_ab
        residual = self._residual
        if out_last > now:
            residual[(i, j)] = out_last
        if in_last > now:
            residual[(j, i)] = in_last
        if len(residual) > _RESIDUAL_PER_NODE * len(self._names) + 64:
            self._residual = {k: v for k, v in residual.items() if v > now}

    def _break(self, conn: _Connection, delay_ns: int) -> None:
        """*conn* breaks: drop it; tell the ends that want it after *delay_ns*."""
        if conn.broken:
            return
        conn.broken = True
        self._counts["connection_break_count"] += 1
        self._unlink(conn)
        at = self._now_ns + delay_ns
        for node, peer in ((conn.a, conn.b), (conn.b, conn.a)):
            peer_name = self._names[peer]
            key = (node, peer_name)
            if (
                self._alive[node]
                and peer_name in self._wants[node]
                and key not in self._pending_lost
            ):
                incarnation = self._incarnation[node]
                self._push(at, _K_LOST, node, incarnation, peer_name, None)
                self._pending_lost[key] = (self._seq, incarnation)

    def _detect_now(self, i: int, j: int) -> None:
        """Nodes *i* and *j* are dialling: a break between them is known now.

        A new connection (its handshake) shows the old one is dead, and a
        restarted peer's new incarnation shows the old one is gone, so a loss
        still waiting for its detection delay is reported at once: before
        anything the new connection carries, which arrives a round trip later.
        """
        pending = self._pending_lost
        for node, peer in ((i, j), (j, i)):
            key = (node, self._names[peer])
            entry = pending.get(key)
            if entry is None:
                continue
            incarnation = entry[1]
            if incarnation != self._incarnation[node] or not self._alive[node]:
                # For an incarnation that is gone: nobody left to tell.
                del pending[key]
                continue
            self._push(self._now_ns, _K_LOST, node, incarnation, key[1], None)
            pending[key] = (self._seq, incarnation)

    def _unlink(self, conn: _Connection) -> None:
        """Take *conn* out of both ends' tables (where it is still there)."""
        a, b = conn.a, conn.b
        links_a, links_b = self._links[a], self._links[b]
        name_a, name_b = self._names[a], self._names[b]
        if links_a.get(name_b) is conn:
            del links_a[name_b]
        if links_b.get(name_a) is conn:
            del links_b[name_a]

    def _neighbour_up(self, i: int, peer: str) -> None:
        view = self._views[i]
        assert peer not in view, f"{self._names[i]}: NeighbourUp {peer} twice"
        assert peer != self._names[i], f"{peer}: NeighbourUp for itself"
        view[peer] = None
        self._counts["view_change_count"] += 1
        if self._broadcast_factory is not None:
            self._apply_broadcast(i, self._bcores[i].on_neighbour_up(peer, self.now))

    def _neighbour_down(self, i: int, peer: str) -> None:
        view = self._views[i]
        assert peer in view, f"{self._names[i]}: NeighbourDown {peer} never up"
        del view[peer]
        self._counts["view_change_count"] += 1
        if self._broadcast_factory is not None:
            self._apply_broadcast(i, self._bcores[i].on_neighbour_down(peer, self.now))

    # -- helpers ---------------------------------------------------------------------

    def _push(
        self, at: int, kind: int, node: int, a: object, b: object, c: object
    ) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, node, a, b, c))

    def _repr(self, message: object) -> str:
        """``repr(message)``, computed once per message object (a core often
        sends one object to many peers, and a membership map's repr is long)."""
        cache = self._repr_cache
        key = id(message)
        hit = cache.get(key)
        if hit is not None and hit[0] is message:
            return hit[1]
        if len(cache) >= _REPR_CACHE_SIZE:
            cache.clear()
        text = repr(message)
        # The cache holds the message, so its id is not reused meanwhile.
        cache[key] = (message, text)
        return text

    def _record(self, line: str) -> None:
        if self._trace:
            self._digest.update(f"{self._now_ns} {line}\n".encode())

    def _node(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            raise ValueError(f"no node named {name!r}")
        return index

    def _live(self, name: str) -> int:
        index = self._node(name)
        if not self._alive[index]:
            raise ValueError(f"{name} is not alive")
        return index

    def _new_core(self, i: int) -> MembershipCore:
        self._incarnation[i] += 1
        name = self._names[i]
        rng = random.Random(f"{self._seed}/{name}/{self._incarnation[i]}/membership")
        return self._membership_factory(
            self._specs[i], rng, self._incarnation[i], self.now
        )

    def _new_bcore(self, i: int) -> BroadcastCore:
        assert self._broadcast_factory is not None
        name = self._names[i]
        rng = random.Random(f"{self._seed}/{name}/{self._incarnation[i]}/broadcast")
        return self._broadcast_factory(name, rng)

    def _start(self, i: int, contact: str | None) -> None:
        self._counts["core_input_count"] += 1
        self._apply(i, self._cores[i].start(self.now))
        if contact is not None:
            self.join(self._names[i], contact)
