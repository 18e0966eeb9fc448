"""HyParView: the hybrid partial-view membership protocol, as a sans-IO core.

Implements Leitão, Pereira and Rodrigues, "HyParView: a membership protocol for
reliable gossip-based broadcast" (DSN 2007), cited below as "the paper" with its
section numbers.

Theory of operation
-------------------
Each node keeps two partial views of the cluster (section 4.1):

* the **active view**, small (``active_view_size_max``, the paper's fanout + 1) and
  *symmetric*: if A holds B, B holds A. Active neighbours keep a connection open;
  a broadcast layer (Plumtree) gossips over exactly these links, and a lost
  connection is the failure detector;
* the **passive view**, larger (``passive_view_size_max``): nodes we know of but
  are not connected to, kept fresh by periodic shuffles and used as the reserve
  from which the active view is repaired.

**Join** (section 4.2). A new node N connects to a contact C, adds C to its active
view and sends ``Join``. C adds N (dropping a random member if full) and sends
``ForwardJoin(N, ARWL)`` to every other active neighbour. Each ForwardJoin is a
random walk: at ``ttl == PRWL`` the node on the walk adds N to its passive view;
at ``ttl == 0``, or when the node has no one to forward to (its active view holds
only the sender), it adds N to its active view and tells N with a high-priority
``Neighbour``, which N always accepts. Otherwise it forwards with ``ttl - 1`` to a
random active neighbour other than the sender and N.

**Active view overflow** (section 4.3). Adding to a full active view first drops a
random member: we send it ``DisconnectNotice`` (the paper's DISCONNECT), close the
connection and move it to our passive view; the receiver does the same for us.

**Repair** (section 4.3). When a connection to an active neighbour is lost, the
neighbour leaves the active view (it is presumed failed, so it does not go to the
passive view) and we ask random passive nodes to become neighbours:
``Neighbour(priority=HIGH)`` if our active view is empty (the receiver must
accept, dropping someone if needed), ``LOW`` otherwise (the receiver accepts only
if it has room). A candidate we cannot reach is dropped from the passive view and
the next is tried; a candidate that refuses stays passive. The promotion timer
retries every ``promotion_interval`` while the active view has room, so a node
whose active view empties recovers from its passive view, and a node that was
dropped by ``DisconnectNotice`` refills at the next tick.

**Shuffle** (section 4.4). Every ``shuffle_interval`` a node sends ``Shuffle`` with
itself, ``shuffle_active_count`` active and ``shuffle_passive_count`` passive nodes
on a random walk of ``shuffle_walk_length`` hops. The node where the walk ends
answers the origin with ``ShuffleReply`` holding as many of its own passive nodes,
and both integrate what they received into their passive views, evicting first
the nodes they sent away, then random ones.

Connections
-----------
The core says which connections it needs; the driver owns them. It emits
``Connect(spec)`` when a node enters the active view or before it sends a
``Neighbour`` request, and ``Disconnect(peer)`` when a node leaves the active view
or a request ends. To answer a node it has no connection to (a refusal, a
``ShuffleReply``, a stale acceptance) it emits ``Connect``, ``Send``, ``Disconnect``
in that order. The driver must deliver what was queued before a ``Disconnect``
(a graceful close), must keep messages between two nodes in order (the
``membership`` channel with parallelism 1), and reports a dial that failed with
``on_connect_failed`` and an established connection that died with
``on_connection_lost``. Losses of connections the core does not track are
ignored.

Events accepted and effects emitted
-----------------------------------
Inputs: ``start``, ``join``, ``leave``, ``on_message``, ``on_timer``,
``on_connection_lost``, ``on_connect_failed``. Each returns ``list[Effect]``:
``Send`` (always on the ``membership`` channel), ``SetTimer`` / ``CancelTimer``
(names ``SHUFFLE_TIMER``, ``PROMOTION_TIMER`` and ``neighbour_timer(peer)``),
``Connect`` / ``Disconnect``, and ``NeighbourUp`` / ``NeighbourDown`` exactly when
a node enters or leaves the active view (so they pair up, and the set of nodes
"up" always equals the active view).

Transition table
----------------

========================= ======================= ================================
event                     condition               state change / effect
========================= ======================= ================================
``join(C)``               -                       C active; send Join to C
Join from N               -                       N active; ForwardJoin(N, ARWL)
                                                  to the other neighbours
ForwardJoin(N, ttl)       ttl 0, or no one to     N active; send Neighbour(HIGH)
                          forward to              to N
ForwardJoin(N, ttl)       otherwise               N passive if ttl == PRWL;
                                                  forward with ttl - 1
Neighbour(HIGH) from N    -                       N active; reply accepted
Neighbour(LOW) from N     room, or we asked N     N active; reply accepted
Neighbour(LOW) from N     active view full        reply refused
NeighbourReply from N     we asked N, accepted    N active
NeighbourReply from N     we asked N, refused     N stays passive; close
NeighbourReply from N     not asked, accepted,    send DisconnectNotice to N
                          N not active
DisconnectNotice from N   N active                N passive (forgotten if leaving)
connection to N lost      N active                N dropped; Neighbour requests
                                                  to passive nodes
connect to N failed       any                     N forgotten; next candidate
promotion timer           active view has room    Neighbour requests to random
                                                  passive nodes
neighbour timer for N     N has not answered      stop waiting; close
shuffle timer             active view not empty   Shuffle to a random neighbour
Shuffle(O, nodes, ttl)    ttl - 1 > 0 and someone forward with ttl - 1
                          to forward to
Shuffle(O, nodes, ttl)    otherwise               ShuffleReply to O; integrate
ShuffleReply(nodes)       a shuffle outstanding   integrate nodes
``leave()``               -                       DisconnectNotice(leaving) to
                                                  all; the core stops
anything else             -                       ignored and counted
========================= ======================= ================================

Invariants (asserted after every input)
---------------------------------------
* We are never in our own views, nor in the set of nodes we asked.
* No node is in both the active and the passive view; no node we asked is active.
* ``len(active) <= active_view_size_max``; ``len(passive) <= passive_view_size_max``.

Determinism: views are dicts, every random choice is made by the given
``random.Random`` over a sorted list, and no set is iterated, so the same seed and
the same inputs give the same effects.

Network input never raises: a message of an unknown type, a message whose carried
spec names a node other than its sender, or a reply nobody asked for is ignored and
counted in ``HyParViewStatistics.ignored_message_count``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Final, TypeAlias, final

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
from runtime.core.spec import NodeSpec

__all__ = [
    "ACTIVE_VIEW_SIZE_LIMIT",
    "PASSIVE_VIEW_SIZE_LIMIT",
    "PROMOTION_TIMER",
    "SHUFFLE_NODES_LIMIT",
    "SHUFFLE_TIMER",
    "MESSAGE_TYPES",
    "WALK_LENGTH_LIMIT",
    "DisconnectNotice",
    "ForwardJoin",
    "HyParView",
    "HyParViewConfig",
    "HyParViewMessage",
    "HyParViewStatistics",
    "Join",
    "Neighbour",
    "NeighbourReply",
    "Priority",
    "Shuffle",
    "ShuffleReply",
    "neighbour_timer",
]

# Hard ceilings on the knobs and on what a peer's message may carry. They are far
# above any sensible setting (the paper's largest active view is 5, its passive
# view 30), so they only stop a typo or a hostile peer from making a view, a walk
# or a shuffle unbounded.
ACTIVE_VIEW_SIZE_LIMIT: Final = 64
PASSIVE_VIEW_SIZE_LIMIT: Final = 1024
WALK_LENGTH_LIMIT: Final = 32
SHUFFLE_NODES_LIMIT: Final = 64

SHUFFLE_TIMER: Final = ("hyparview", "shuffle")
"""The periodic shuffle (section 4.4)."""
PROMOTION_TIMER: Final = ("hyparview", "promotion")
"""The periodic attempt to fill the active view from the passive view."""


def neighbour_timer(peer: str) -> tuple[str, str, str]:
    """The name of the timer bounding our wait for *peer*'s ``NeighbourReply``."""
    return ("hyparview", "neighbour", peer)


# ---------------------------------------------------------------------------
# Configuration


def _count_between(
    low: int, high: int
) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{attribute.name} must be an int in {low}..{high}")

    return check


def _seconds_positive(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if type(value) not in (int, float) or not 0 < value < float("inf"):
        raise ValueError(f"{attribute.name} must be a positive number of seconds")


@final
@attrs.frozen(kw_only=True)
class HyParViewConfig:
    """The knobs of one HyParView node; every one is bounded and validated.

    Attributes:
        active_view_size_max: neighbours we keep connections to. The paper uses
            fanout + 1 = 5 for 10,000 nodes (section 5); 6 is Partisan's default,
            one spare link for clusters that also run Plumtree over it.
        passive_view_size_max: reserve of known nodes. 30 is the paper's value
            (section 5): about ``log(n) * k`` for the sizes it studies, enough to
            survive the loss of most of the cluster.
        active_random_walk_length: ARWL, hops of a ForwardJoin walk. 6 is the
            paper's value; it sets how far from the contact a new node's
            neighbours are.
        passive_random_walk_length: PRWL, the ttl at which a ForwardJoin walk
            adds the new node to a passive view. 3 is the paper's value; it must
            not exceed ARWL or no walk would ever reach it.
        shuffle_interval: seconds between our shuffles. 10 s is Partisan's
            default: passive views stay fresh at a cost of one small message per
            node per interval.
        shuffle_active_count: ka, active nodes a shuffle carries (paper: 3).
        shuffle_passive_count: kp, passive nodes a shuffle carries (paper: 4).
        shuffle_walk_length: hops of a shuffle walk. 5 is a little shorter than
            ARWL, as in Partisan, so the exchange reaches beyond our
            neighbourhood without a long chain of forwarding.
        neighbour_request_timeout: seconds we wait for a ``NeighbourReply``
            before trying someone else. 5 s covers a dial, a TLS and cluster
            handshake (whose own timeout is 5 s) and a reply on a slow WAN, yet is
            short next to the shuffle interval, so a hung candidate does not hold
            a slot of the active view for long.
        promotion_interval: seconds between attempts to fill the active view
            from the passive view. 1 s repairs a node dropped by ``DisconnectNotice``
            within a second, while a cluster whose nodes are all full (every
            attempt refused) costs one small request per node per second.
    """

    active_view_size_max: int = attrs.field(
        default=6, validator=_count_between(1, ACTIVE_VIEW_SIZE_LIMIT)
    )
    passive_view_size_max: int = attrs.field(
        default=30, validator=_count_between(1, PASSIVE_VIEW_SIZE_LIMIT)
    )
    active_random_walk_length: int = attrs.field(
        default=6, validator=_count_between(0, WALK_LENGTH_LIMIT)
    )
    passive_random_walk_length: int = attrs.field(
        default=3, validator=_count_between(0, WALK_LENGTH_LIMIT)
    )
    shuffle_interval: float = attrs.field(default=10.0, validator=_seconds_positive)
    shuffle_active_count: int = attrs.field(
        default=3, validator=_count_between(0, SHUFFLE_NODES_LIMIT)
    )
    shuffle_passive_count: int = attrs.field(
        default=4, validator=_count_between(0, SHUFFLE_NODES_LIMIT)
    )
    shuffle_walk_length: int = attrs.field(
        default=5, validator=_count_between(1, WALK_LENGTH_LIMIT)
    )
    neighbour_request_timeout: float = attrs.field(
        default=5.0, validator=_seconds_positive
    )
    promotion_interval: float = attrs.field(default=1.0, validator=_seconds_positive)

    def __attrs_post_init__(self) -> None:
        if self.passive_random_walk_length > self.active_random_walk_length:
            raise ValueError(
                "passive_random_walk_length must not exceed active_random_walk_length"
            )
        # The origin travels in the shuffle as well as the sampled nodes.
        if self.shuffle_active_count + self.shuffle_passive_count > (
            SHUFFLE_NODES_LIMIT - 1
        ):
            raise ValueError(
                "shuffle_active_count + shuffle_passive_count must be below "
                f"{SHUFFLE_NODES_LIMIT}"
            )


# ---------------------------------------------------------------------------
# Messages (section 4; names from the paper)


class Priority(enum.Enum):
    """How hard a ``Neighbour`` request asks (section 4.3)."""

    HIGH = "high"
    """The requester has no active neighbour: the receiver must accept."""
    LOW = "low"
    """The receiver accepts only if its active view has room."""


def _ttl(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= WALK_LENGTH_LIMIT:
        raise ValueError(f"{attribute.name} must be an int in 0..{WALK_LENGTH_LIMIT}")


def _specs(value: Iterable[NodeSpec]) -> tuple[NodeSpec, ...]:
    return tuple(value)


def _check_specs(
    _instance: object,
    attribute: attrs.Attribute[tuple[NodeSpec, ...]],
    value: tuple[NodeSpec, ...],
) -> None:
    if len(value) > SHUFFLE_NODES_LIMIT:
        raise ValueError(f"{attribute.name} holds at most {SHUFFLE_NODES_LIMIT} nodes")
    for spec in value:
        if not isinstance(spec, NodeSpec):
            raise TypeError(f"{attribute.name} holds NodeSpec values only")


_spec_field = attrs.validators.instance_of(NodeSpec)
_bool_field = attrs.validators.instance_of(bool)


@final
@attrs.frozen(kw_only=True)
class Join:
    """A new node asks its contact to admit it (section 4.2)."""

    spec: NodeSpec = attrs.field(validator=_spec_field)


@final
@attrs.frozen(kw_only=True)
class ForwardJoin:
    """One step of the random walk announcing *new_node* (section 4.2)."""

    new_node: NodeSpec = attrs.field(validator=_spec_field)
    ttl: int = attrs.field(validator=_ttl)


@final
@attrs.frozen(kw_only=True)
class Neighbour:
    """*spec* asks to join the receiver's active view (section 4.3)."""

    spec: NodeSpec = attrs.field(validator=_spec_field)
    priority: Priority = attrs.field(validator=attrs.validators.instance_of(Priority))


@final
@attrs.frozen(kw_only=True)
class NeighbourReply:
    """*spec*'s answer to a ``Neighbour`` request: accepted or refused."""

    spec: NodeSpec = attrs.field(validator=_spec_field)
    accepted: bool = attrs.field(validator=_bool_field)


@final
@attrs.frozen(kw_only=True)
class DisconnectNotice:
    """The paper's DISCONNECT: the sender dropped us from its active view (4.3).

    Named apart from the ``Disconnect`` effect, which closes connections.

    With ``leaving`` the sender is leaving the cluster: forget it entirely rather
    than keep it in the passive view.
    """

    leaving: bool = attrs.field(default=False, validator=_bool_field)


@final
@attrs.frozen(kw_only=True)
class Shuffle:
    """A passive-view exchange walking from *origin* (section 4.4)."""

    origin: NodeSpec = attrs.field(validator=_spec_field)
    nodes: tuple[NodeSpec, ...] = attrs.field(converter=_specs, validator=_check_specs)
    ttl: int = attrs.field(validator=_ttl)


@final
@attrs.frozen(kw_only=True)
class ShuffleReply:
    """The end of a shuffle walk answers the origin with its passive nodes."""

    nodes: tuple[NodeSpec, ...] = attrs.field(converter=_specs, validator=_check_specs)


HyParViewMessage: TypeAlias = (
    Join
    | ForwardJoin
    | Neighbour
    | NeighbourReply
    | DisconnectNotice
    | Shuffle
    | ShuffleReply
)

MESSAGE_TYPES: Final[tuple[type, ...]] = (
    Join,
    ForwardJoin,
    Neighbour,
    NeighbourReply,
    DisconnectNotice,
    Shuffle,
    ShuffleReply,
)
"""The wire contract: a message's position is its number (append only)."""


@final
@attrs.frozen(kw_only=True)
class HyParViewStatistics:
    """Counters of one HyParView core (a snapshot; all counts since creation).

    Attributes:
        active_view_size, passive_view_size: current view sizes.
        neighbour_request_pending_count: our ``Neighbour`` requests awaiting a
            reply.
        join_count: ``Join`` messages we handled as a contact.
        forward_join_accepted_count: ForwardJoin walks that ended with us
            adding the new node to our active view.
        neighbour_up_count, neighbour_down_count: active view churn (each
            ``NeighbourUp`` / ``NeighbourDown`` emitted).
        active_view_overflow_count: members dropped to make room.
        neighbour_request_sent_count: ``Neighbour`` requests we sent to fill
            our active view.
        neighbour_request_refused_count: of those, refused by the receiver.
        neighbour_request_timeout_count: of those, unanswered in time.
        neighbour_request_declined_count: requests we refused (view full).
        connection_lost_count: active neighbours whose connection was lost.
        connect_failed_count: dials that failed.
        shuffle_sent_count: shuffles we started.
        shuffle_forwarded_count: shuffle walks we passed on.
        shuffle_accepted_count: shuffle walks that ended with us.
        shuffle_reply_count: ``ShuffleReply`` messages we integrated.
        ignored_message_count: messages ignored (unknown, mismatched, stale).
    """

    active_view_size: int
    passive_view_size: int
    neighbour_request_pending_count: int
    join_count: int
    forward_join_accepted_count: int
    neighbour_up_count: int
    neighbour_down_count: int
    active_view_overflow_count: int
    neighbour_request_sent_count: int
    neighbour_request_refused_count: int
    neighbour_request_timeout_count: int
    neighbour_request_declined_count: int
    connection_lost_count: int
    connect_failed_count: int
    shuffle_sent_count: int
    shuffle_forwarded_count: int
    shuffle_accepted_count: int
    shuffle_reply_count: int
    ignored_message_count: int


@attrs.define
class _Counters:
    """The mutable counters behind ``HyParViewStatistics`` (all start at 0)."""

    join_count: int = 0
    forward_join_accepted_count: int = 0
    neighbour_up_count: int = 0
    neighbour_down_count: int = 0
    active_view_overflow_count: int = 0
    neighbour_request_sent_count: int = 0
    neighbour_request_refused_count: int = 0
    neighbour_request_timeout_count: int = 0
    neighbour_request_declined_count: int = 0
    connection_lost_count: int = 0
    connect_failed_count: int = 0
    shuffle_sent_count: int = 0
    shuffle_forwarded_count: int = 0
    shuffle_accepted_count: int = 0
    shuffle_reply_count: int = 0
    ignored_message_count: int = 0


# ---------------------------------------------------------------------------
# The core


@final
class HyParView:
    """One node's HyParView state machine (no I/O, no clock, seeded randomness).

    Args:
        me: our own node spec; it travels in our messages so peers can dial us.
        config: the protocol's knobs.
        rng: the only source of randomness (the shell seeds it from the OS, the
            simulator from its root seed).

    Every input method returns the effects to carry out, in order, and never
    ``None``. After ``leave`` the core is finished: every input returns ``[]``.

    Error handling:
        Nothing a peer sends raises: unexpected input is ignored and counted.
        Caller mistakes (joining ourselves, joining after leaving) raise
        ``ValueError``. Internal invariants are ``assert``-ed.
    """

    def __init__(
        self, me: NodeSpec, config: HyParViewConfig, rng: random.Random
    ) -> None:
        self._me = me
        self._config = config
        self._rng = rng
        # Name -> spec of our neighbours. Invariant: never holds us; disjoint from
        # _passive and _pending; at most active_view_size_max entries.
        self._active: dict[str, NodeSpec] = {}
        # Name -> spec of known, unconnected nodes. Invariant: never holds us;
        # disjoint from _active; at most passive_view_size_max entries.
        self._passive: dict[str, NodeSpec] = {}
        # Nodes we sent a Neighbour request and wait for; a connection to each
        # is open. Invariant: never holds us; disjoint from _active. A pending
        # node usually stays in _passive until it accepts, but may be evicted.
        self._pending: dict[str, NodeSpec] = {}
        # Names we sent in our last shuffle: evicted first when its reply comes.
        self._shuffle_sent: tuple[str, ...] = ()
        self._shuffle_outstanding = False
        self._left = False
        self._counters = _Counters()

    # -- queries ----------------------------------------------------------

    @property
    def me(self) -> NodeSpec:
        """Our own node spec."""
        return self._me

    @property
    def left(self) -> bool:
        """Whether ``leave`` was called (the core then ignores every input)."""
        return self._left

    def active_view(self) -> list[str]:
        """Names of our active neighbours, sorted."""
        return sorted(self._active)

    def passive_view(self) -> list[str]:
        """Names in our passive view, sorted."""
        return sorted(self._passive)

    def members(self) -> list[NodeSpec]:
        """Ourselves and our active neighbours, sorted by name (as Partisan)."""
        specs = [self._me, *self._active.values()]
        return sorted(specs, key=lambda spec: spec.name)

    def neighbours(self) -> list[str]:
        """The active view: the nodes we keep a link to, sorted."""
        return sorted(self._active)

    def spec(self, name: str) -> NodeSpec | None:
        """The spec we hold for *name* (active, asked, or passive), if any."""
        for view in (self._active, self._pending, self._passive):
            if name in view:
                return view[name]
        return None

    def statistics(self) -> HyParViewStatistics:
        """A snapshot of the view sizes and counters."""
        return HyParViewStatistics(
            active_view_size=len(self._active),
            passive_view_size=len(self._passive),
            neighbour_request_pending_count=len(self._pending),
            **attrs.asdict(self._counters),
        )

    # -- commands ---------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Arm the shuffle and promotion timers; call once, before anything else."""
        if self._left:
            return []
        return [
            SetTimer(name=SHUFFLE_TIMER, at=now + self._config.shuffle_interval),
            SetTimer(name=PROMOTION_TIMER, at=now + self._config.promotion_interval),
        ]

    def join(self, contact: NodeSpec, now: float) -> list[Effect]:
        """Join the cluster through *contact* (section 4.2).

        The contact enters our active view at once (it always admits a joiner);
        if it cannot be reached the driver reports ``on_connect_failed``.

        Raises:
            ValueError: *contact* is us, or the core has left.
        """
        if contact.name == self._me.name:
            raise ValueError("a node cannot join through itself")
        if self._left:
            raise ValueError("this core has left; build a new one to rejoin")
        out: list[Effect] = []
        self._add_active(contact, out)
        out.append(Send(to=contact.name, message=Join(spec=self._me)))
        self._check_invariants()
        return out

    def leave(self, now: float) -> list[Effect]:
        """Tell every neighbour (and every node we asked) that we are leaving.

        The core is finished afterwards: every input returns ``[]``.
        """
        if self._left:
            return []
        out: list[Effect] = []
        bye = DisconnectNotice(leaving=True)
        for name in sorted(self._active):
            out += [Send(to=name, message=bye), Disconnect(peer=name)]
            out.append(NeighbourDown(peer=name))
            self._counters.neighbour_down_count += 1
        for name in sorted(self._pending):
            out += [Send(to=name, message=bye), Disconnect(peer=name)]
            out.append(CancelTimer(name=neighbour_timer(name)))
        out += [CancelTimer(name=SHUFFLE_TIMER), CancelTimer(name=PROMOTION_TIMER)]
        self._active.clear()
        self._pending.clear()
        self._passive.clear()
        self._left = True
        return out

    # -- events -----------------------------------------------------------

    def on_message(self, sender: str, message: object, now: float) -> list[Effect]:
        """Handle *message* received from node *sender* (authenticated by the shell).

        Never raises for anything the peer sent: unknown or inconsistent
        messages are ignored and counted.
        """
        if self._left:
            return []
        out: list[Effect] = []
        if sender == self._me.name:
            self._counters.ignored_message_count += 1
            return out
        match message:
            case Join():
                self._on_join(sender, message, out)
            case ForwardJoin():
                self._on_forward_join(sender, message, out)
            case Neighbour():
                self._on_neighbour(sender, message, out)
            case NeighbourReply():
                self._on_neighbour_reply(sender, message, out)
            case DisconnectNotice():
                self._on_disconnect(sender, message, now, out)
            case Shuffle():
                self._on_shuffle(sender, message, out)
            case ShuffleReply():
                self._on_shuffle_reply(message, out)
            case _:
                self._counters.ignored_message_count += 1
        self._check_invariants()
        return out

    def on_timer(self, name: Hashable, now: float) -> list[Effect]:
        """Handle the timer *name* firing (names this core set; others ignored)."""
        if self._left:
            return []
        out: list[Effect] = []
        if name == SHUFFLE_TIMER:
            out.append(
                SetTimer(name=SHUFFLE_TIMER, at=now + self._config.shuffle_interval)
            )
            self._start_shuffle(out)
        elif name == PROMOTION_TIMER:
            out.append(
                SetTimer(name=PROMOTION_TIMER, at=now + self._config.promotion_interval)
            )
            self._fill_active(now, out)
        elif (
            isinstance(name, tuple)
            and len(name) == 3
            and name[:2] == ("hyparview", "neighbour")
            and name[2] in self._pending
        ):
            # The candidate did not answer: stop waiting. It stays passive; a late
            # acceptance is answered with DisconnectNotice (see _on_neighbour_reply).
            peer = name[2]
            del self._pending[peer]
            self._counters.neighbour_request_timeout_count += 1
            out.append(Disconnect(peer=peer))
        self._check_invariants()
        return out

    def on_connection_lost(self, peer: str, now: float) -> list[Effect]:
        """The established connection to *peer* died (our failure detector).

        An active neighbour is dropped (presumed failed, section 4.3) and we ask
        a passive node to replace it. A node we were asking is treated as a
        failed candidate. Other nodes are ignored.
        """
        if self._left:
            return []
        out: list[Effect] = []
        if peer in self._active:
            self._counters.connection_lost_count += 1
            self._remove_active(peer, out)
            self._fill_active(now, out)
        elif peer in self._pending:
            self._candidate_failed(peer, out)
            self._fill_active(now, out)
        self._check_invariants()
        return out

    def on_connect_failed(self, peer: str, now: float) -> list[Effect]:
        """A dial to *peer* failed: forget it and try the next candidate.

        Whatever view *peer* was in, it is unreachable now: an active neighbour
        (a contact, a ForwardJoin target) is dropped as a lost connection, a
        candidate or passive node is removed from the passive view.
        """
        if self._left:
            return []
        out: list[Effect] = []
        self._counters.connect_failed_count += 1
        if peer in self._active:
            self._remove_active(peer, out)
            self._fill_active(now, out)
        elif peer in self._pending:
            self._candidate_failed(peer, out)
            self._fill_active(now, out)
        else:
            self._passive.pop(peer, None)
        self._check_invariants()
        return out

    # -- message handlers -----------------------------------------------------

    def _on_join(self, sender: str, message: Join, out: list[Effect]) -> None:
        new = message.spec
        if new.name != sender:
            self._counters.ignored_message_count += 1
            return
        self._counters.join_count += 1
        self._add_active(new, out)
        walk = ForwardJoin(new_node=new, ttl=self._config.active_random_walk_length)
        for name in sorted(self._active):
            if name != sender:
                out.append(Send(to=name, message=walk))

    def _on_forward_join(
        self, sender: str, message: ForwardJoin, out: list[Effect]
    ) -> None:
        new = message.new_node
        if new.name == self._me.name:
            # The walk came back to the node it announces: nothing to learn.
            return
        onward = sorted(n for n in self._active if n != sender and n != new.name)
        if message.ttl == 0 or len(self._active) <= 1 or not onward:
            if new.name not in self._active:
                self._counters.forward_join_accepted_count += 1
                self._add_active(new, out)
                out.append(
                    Send(
                        to=new.name,
                        message=Neighbour(spec=self._me, priority=Priority.HIGH),
                    )
                )
            return
        if message.ttl == self._config.passive_random_walk_length:
            self._add_passive(new)
        out.append(
            Send(
                to=self._rng.choice(onward),
                message=ForwardJoin(new_node=new, ttl=message.ttl - 1),
            )
        )

    def _on_neighbour(self, sender: str, message: Neighbour, out: list[Effect]) -> None:
        spec = message.spec
        if spec.name != sender:
            self._counters.ignored_message_count += 1
            return
        if (
            spec.name in self._active
            or message.priority is Priority.HIGH
            or spec.name in self._pending
            or len(self._active) < self._config.active_view_size_max
        ):
            # A request from a node we asked too is a mutual agreement: accept it
            # even if full, or the two answers could cross and leave one side
            # holding the other alone.
            self._add_active(spec, out)
            out.append(
                Send(to=spec.name, message=NeighbourReply(spec=self._me, accepted=True))
            )
            return
        self._counters.neighbour_request_declined_count += 1
        self._send_transient(spec, NeighbourReply(spec=self._me, accepted=False), out)

    def _on_neighbour_reply(
        self, sender: str, message: NeighbourReply, out: list[Effect]
    ) -> None:
        spec = message.spec
        if spec.name != sender:
            self._counters.ignored_message_count += 1
            return
        if spec.name in self._pending:
            del self._pending[spec.name]
            out.append(CancelTimer(name=neighbour_timer(spec.name)))
            if message.accepted:
                self._add_active(spec, out)
            else:
                self._counters.neighbour_request_refused_count += 1
                out.append(Disconnect(peer=spec.name))
        elif message.accepted and spec.name not in self._active:
            # It added us after we stopped waiting (or after we dropped it): it
            # holds us and we do not, so tell it to let go.
            self._counters.ignored_message_count += 1
            self._send_transient(spec, DisconnectNotice(), out)
        elif not message.accepted or spec.name not in self._active:
            self._counters.ignored_message_count += 1

    def _on_disconnect(
        self, sender: str, message: DisconnectNotice, now: float, out: list[Effect]
    ) -> None:
        if sender in self._active:
            spec = self._remove_active(sender, out)
            if not message.leaving:
                self._add_passive(spec)
        elif not message.leaving:
            self._counters.ignored_message_count += 1
        if message.leaving:
            self._passive.pop(sender, None)
            if sender in self._pending:
                del self._pending[sender]
                out += [
                    CancelTimer(name=neighbour_timer(sender)),
                    Disconnect(peer=sender),
                ]
            # A departure is announced, not a choice of the sender to keep its
            # view small: repair at once, as for a failure.
            self._fill_active(now, out)

    def _on_shuffle(self, sender: str, message: Shuffle, out: list[Effect]) -> None:
        origin = message.origin
        if origin.name == self._me.name:
            # Our own shuffle walked back to us: it has nothing new for us.
            self._counters.ignored_message_count += 1
            return
        ttl = message.ttl - 1
        onward = sorted(n for n in self._active if n != sender and n != origin.name)
        if ttl > 0 and len(self._active) > 1 and onward:
            self._counters.shuffle_forwarded_count += 1
            forwarded = Shuffle(origin=origin, nodes=message.nodes, ttl=ttl)
            out.append(Send(to=self._rng.choice(onward), message=forwarded))
            return
        self._counters.shuffle_accepted_count += 1
        received = [origin, *message.nodes]
        candidates = sorted(n for n in self._passive if n != origin.name)
        count = min(len(received), len(candidates))
        reply_names = self._rng.sample(candidates, count)
        reply = ShuffleReply(nodes=tuple(self._passive[n] for n in reply_names))
        self._send_transient(origin, reply, out)
        self._integrate(received, reply_names)

    def _on_shuffle_reply(self, message: ShuffleReply, out: list[Effect]) -> None:
        if not self._shuffle_outstanding:
            self._counters.ignored_message_count += 1
            return
        self._shuffle_outstanding = False
        self._counters.shuffle_reply_count += 1
        self._integrate(message.nodes, self._shuffle_sent)

    # -- timers ---------------------------------------------------------------

    def _start_shuffle(self, out: list[Effect]) -> None:
        if not self._active:
            return
        config = self._config
        target = self._rng.choice(sorted(self._active))
        actives = sorted(n for n in self._active if n != target)
        passives = sorted(n for n in self._passive if n != target)
        chosen = self._rng.sample(
            actives, min(config.shuffle_active_count, len(actives))
        )
        chosen += self._rng.sample(
            passives, min(config.shuffle_passive_count, len(passives))
        )
        nodes = tuple(self._active.get(n) or self._passive[n] for n in chosen)
        self._shuffle_sent = tuple(chosen)
        self._shuffle_outstanding = True
        self._counters.shuffle_sent_count += 1
        shuffle = Shuffle(origin=self._me, nodes=nodes, ttl=config.shuffle_walk_length)
        out.append(Send(to=target, message=shuffle))

    def _fill_active(self, now: float, out: list[Effect]) -> None:
        """Ask random passive nodes to fill the free slots of the active view.

        The first request of a node with no neighbour and no request under way
        is HIGH priority (the receiver must accept); the others are LOW.
        """
        while (
            len(self._active) + len(self._pending) < self._config.active_view_size_max
        ):
            candidates = sorted(n for n in self._passive if n not in self._pending)
            if not candidates:
                return
            name = self._rng.choice(candidates)
            spec = self._passive[name]
            priority = (
                Priority.HIGH
                if not self._active and not self._pending
                else Priority.LOW
            )
            self._pending[name] = spec
            self._counters.neighbour_request_sent_count += 1
            out += [
                Connect(spec=spec),
                Send(to=name, message=Neighbour(spec=self._me, priority=priority)),
                SetTimer(
                    name=neighbour_timer(name),
                    at=now + self._config.neighbour_request_timeout,
                ),
            ]

    # -- view operations --------------------------------------------------------

    def _add_active(self, spec: NodeSpec, out: list[Effect]) -> None:
        """Put *spec* in the active view, dropping a random member if it is full."""
        name = spec.name
        assert name != self._me.name
        if name in self._active:
            self._active[name] = spec
            return
        if name in self._pending:
            del self._pending[name]
            out.append(CancelTimer(name=neighbour_timer(name)))
        self._passive.pop(name, None)
        if len(self._active) >= self._config.active_view_size_max:
            victim = self._rng.choice(sorted(self._active))
            self._counters.active_view_overflow_count += 1
            out.append(Send(to=victim, message=DisconnectNotice()))
            self._add_passive(self._remove_active(victim, out))
        assert spec.name == name
        self._active[name] = spec
        self._counters.neighbour_up_count += 1
        out += [Connect(spec=spec), NeighbourUp(spec=spec)]

    def _remove_active(self, name: str, out: list[Effect]) -> NodeSpec:
        spec = self._active.pop(name)
        self._counters.neighbour_down_count += 1
        out += [Disconnect(peer=name), NeighbourDown(peer=name)]
        return spec

    def _add_passive(self, spec: NodeSpec, evict_first: Sequence[str] = ()) -> None:
        """Remember *spec* as passive, evicting *evict_first* names, then random."""
        name = spec.name
        if name == self._me.name or name in self._active:
            return
        if name in self._passive:
            self._passive[name] = spec
            return
        if len(self._passive) >= self._config.passive_view_size_max:
            preferred = sorted(n for n in evict_first if n in self._passive)
            victim = self._rng.choice(preferred or sorted(self._passive))
            del self._passive[victim]
        assert spec.name == name
        self._passive[name] = spec

    def _integrate(self, nodes: Iterable[NodeSpec], evict_first: Sequence[str]) -> None:
        """Add shuffled *nodes* to the passive view (section 4.4)."""
        budget = self._config.passive_view_size_max
        for spec in nodes:
            if budget == 0:
                return
            budget -= 1
            self._add_passive(spec, evict_first)

    def _candidate_failed(self, name: str, out: list[Effect]) -> None:
        del self._pending[name]
        self._passive.pop(name, None)
        out += [CancelTimer(name=neighbour_timer(name)), Disconnect(peer=name)]

    def _send_transient(
        self, spec: NodeSpec, message: HyParViewMessage, out: list[Effect]
    ) -> None:
        """Send to a node that may not be connected: open, send, close."""
        name = spec.name
        if name in self._active or name in self._pending:
            out.append(Send(to=name, message=message))
        else:
            out += [Connect(spec=spec), Send(to=name, message=message)]
            out.append(Disconnect(peer=name))

    def _check_invariants(self) -> None:
        # Runs after every input, so it costs O(active view) in C, no Python
        # loop: that each entry is keyed by its spec's name is asserted where
        # entries are written (_add_active, _add_passive, the only places).
        me = self._me.name
        active = self._active
        assert me not in active
        assert me not in self._passive
        assert me not in self._pending
        # Two key views: isdisjoint then walks the shorter one (given a plain
        # dict it would walk the whole passive view).
        assert active.keys().isdisjoint(self._passive.keys())
        assert active.keys().isdisjoint(self._pending.keys())
        assert len(active) <= self._config.active_view_size_max
        assert len(self._passive) <= self._config.passive_view_size_max
