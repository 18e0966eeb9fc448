"""Plumtree: epidemic broadcast trees, as a sans-IO core for one broadcast group.

Implements Leitão, Pereira and Rodrigues, "Epidemic Broadcast Trees" (SRDS 2007),
in the shape Partisan v6 ended with: one pure core per broadcast *group*, bound to
one channel (``PlumtreeConfig.channel``), with an application-side handler
(:class:`PlumtreeHandler`). Section numbers below are the paper's.

Theory of operation
-------------------
The node's neighbours (reported by membership through ``on_neighbour_up`` /
``on_neighbour_down``) are split in two disjoint sets (§3.1):

* **eager** peers get every new message in full at once (*eager push*, a
  ``Gossip``). A new neighbour starts eager, so the first broadcast floods.
* **lazy** peers only get the message's id (*lazy push*, an ``IHave``). Ids are
  queued per peer and sent in batches on the *lazy tick* (§3.4 allows lazy push
  to be delayed and batched; Partisan sends them on a 1 s tick), or at once when
  a peer's queue fills a batch.

Tree construction (§3.5): when a ``Gossip`` arrives for a message already held,
the link it came on is redundant: the sender moves to lazy and gets a ``Prune``,
which moves us to lazy at its end. After one broadcast over a stable overlay the
eager links are exactly the links that carried a first copy: a spanning tree, so
the next broadcast sends each payload once per node (relative message
redundancy 0).

Tree repair (§3.6): an ``IHave`` for a message not held records the
announcement in the *missing* table and starts that message's graft timer
(``graft_timeout``). If the payload has not arrived when it fires, the first
announcer moves to eager and gets a ``Graft(message_id, round)``; it answers
with the ``Gossip`` and moves us to eager, which heals the tree. The timer is set
again for ``graft_timeout_second`` to try the next announcer. When no announcer
is left, the entry is abandoned (counted) and recovery is left to anti-entropy.

Tree optimisation (§3.7): when a ``Gossip`` arrives and the missing table holds
an announcement of the same message whose round (hop count) is lower by at least
``optimization_threshold``, the announcer is grafted with ``Graft(None, round)``
(join the tree, send nothing) and the slower eager sender is pruned.

The handler split (Partisan v6: a fast novelty check on the tree task, the
heavy apply off it). The core holds the handler and calls two fast methods
synchronously: ``is_stale(message_id)`` when a ``Gossip`` or ``IHave`` names an
id the core's own message cache does not hold, and ``graft(message_id)`` when a
peer grafts an id the cache no longer holds. The heavy ``merge`` is never called
by the core: a new message becomes a :class:`Deliver` effect, and the driver
applies it (``handler.merge``) off the tree path. Because that apply may lag, the
core keeps its own bounded cache of the messages it has seen (id -> payload,
round, sender), so a duplicate that arrives before the apply is still detected
and a graft that arrives before it can still be answered. ``merge``'s boolean is
for the driver's statistics; the novelty decision has been made by then.
``exchange(peer)`` (anti-entropy, plum_db's Merkle exchange) is outside the
core: the driver runs it on its own timer. The core calls nothing else and
never lets a handler see a peer's malformed message. Handlers must not raise on
an id they do not know (they answer "not stale" / ``None``).

Beyond the paper (reasons in docs/protocols/plumtree.md):

* **Catch-up on neighbour up.** The paper assumes reliable links; ours lose what
  was queued on a connection that dies. On ``on_neighbour_up`` the core announces
  (``IHave``) the ids of its ``catch_up_size_max`` most recent cached messages to
  the new neighbour, which grafts what it lacks. A reconnect thereby repairs the
  loss of its old connection, for messages still in the cache.
* **Bounded state.** The message cache, the missing table and each lazy queue
  have a size limit; what happens past each is in :class:`PlumtreeConfig`.
* **Messages from non-neighbours** (in flight when the link went down): a
  ``Gossip``'s payload is still delivered and forwarded, but the peer sets do not
  change; ``IHave``, ``Graft`` and ``Prune`` from them are ignored.

Events and effects
------------------
Inputs: :meth:`Plumtree.broadcast`, :meth:`Plumtree.on_message` (``Gossip``,
``IHave``, ``Graft``, ``Prune``), :meth:`Plumtree.on_neighbour_up`,
:meth:`Plumtree.on_neighbour_down`, :meth:`Plumtree.on_timer`. Each returns
``list[PlumtreeEffect]``: ``Send`` (always on ``config.channel``), ``SetTimer``,
``CancelTimer`` from :mod:`runtime.core.effects`, and :class:`Deliver`. Timers:
``LAZY_TICK_TIMER`` and ``(GRAFT_TIMER, message_id)``.

Transition table (``me`` receives, ``s`` is the sender)
--------------------------------------------------------

======================== ============================= ===============================
event                    condition                     effects / state change
======================== ============================= ===============================
broadcast(id, p)         id not cached                 cache; Gossip(r=0) to eager;
                                                       queue (id, 0) for lazy
Gossip(id, p, r) from s  new (not cached, not stale)   cache; Deliver; cancel graft
                                                       timer; Gossip(r+1) to eager-s;
                                                       queue (id, r+1) for lazy-s;
                                                       s -> eager; §3.7 check
Gossip from s            duplicate                     s -> lazy; Prune to s
IHave([(id, r)]) from s  id new, not missing           missing[id] = [(s, r)];
                                                       set graft timer (timeout)
IHave from s             id missing                    append (s, r) to announcers
IHave from s             id known, or table full       nothing (full: counted)
Graft(id, r) from s      -                             s -> eager; Gossip(id, p, r)
                                                       to s if p is cached/grafted
Graft(None, r) from s    -                             s -> eager
Prune from s             -                             s -> lazy
timer (graft, id)        announcer a left              a -> eager; Graft(id, r) to a;
                                                       set timer (timeout_second)
timer (graft, id)        no announcer left             drop entry (abandoned)
timer lazy tick          -                             IHave batch to each queued peer
neighbour up p           p new                         p -> eager; IHave catch-up
neighbour down p         -                             p out of both sets, its queue
                                                       and its announcements dropped
any message              malformed, or from me         nothing (counted as garbage)
======================== ============================= ===============================

Invariants (asserted after every input)
---------------------------------------
* ``eager`` and ``lazy`` are disjoint, and ``me`` is in neither.
* Lazy queues exist only for neighbours and hold fewer than
  ``ihave_batch_size_max`` entries; any non-empty queue means the lazy tick is set.
* The message cache and the missing table stay within their size limits.
* Iteration is over sorted sets or insertion-ordered dicts only, so one seed
  gives one run. No transition draws from ``rng`` yet; it is taken so that the
  contract matches the other cores and future tree engines (Thicket).
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Final, Protocol, TypeAlias, final

import attrs
from sortedcontainers import SortedSet

from runtime.core.effects import CancelTimer, Send, SetTimer

__all__ = [
    "GRAFT_TIMER",
    "LAZY_TICK_TIMER",
    "MESSAGE_TYPES",
    "Deliver",
    "Gossip",
    "Graft",
    "IHave",
    "MessageId",
    "Plumtree",
    "PlumtreeConfig",
    "PlumtreeEffect",
    "PlumtreeHandler",
    "PlumtreeMessage",
    "PlumtreeStatistics",
    "Prune",
]

MessageId: TypeAlias = Hashable
"""A broadcast message's id: any hashable plain value (not ``None``)."""

LAZY_TICK_TIMER: Final = "plumtree.lazy_tick"
"""The timer that flushes queued ``IHave`` announcements."""
GRAFT_TIMER: Final = "plumtree.graft"
"""First element of a graft timer's name, ``(GRAFT_TIMER, message_id)``."""


def _is_round(value: object) -> bool:
    """A hop count: an int >= 0 and not a bool (``isinstance(True, int)`` holds)."""
    return type(value) is int and value >= 0


def _is_id(value: object) -> bool:
    """A usable message id: hashable and not ``None``."""
    if value is None:
        return False
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _check_id(_instance: object, _attribute: object, value: object) -> None:
    if not _is_id(value):
        raise ValueError(f"a message id must be hashable and not None: {value!r:.80}")


def _check_optional_id(_instance: object, _attribute: object, value: object) -> None:
    if value is not None:
        _check_id(_instance, _attribute, value)


def _check_round(_instance: object, _attribute: object, value: int) -> None:
    if not _is_round(value):
        raise ValueError(f"a round is an int >= 0, not {value!r:.80}")


def _check_payload(_instance: object, _attribute: object, value: object) -> None:
    if value is None:
        raise ValueError("a payload may not be None (None means 'not held')")


def _valid_entries(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(entry, tuple)
        and len(entry) == 2
        and _is_id(entry[0])
        and _is_round(entry[1])
        for entry in value
    )


def _check_entries(_instance: object, _attribute: object, value: object) -> None:
    if not _valid_entries(value):
        raise ValueError("IHave entries are a tuple of (message_id, round) tuples")


# Messages (§3, Algorithm 1). Plain values; runtime/wire.py maps them to CBOR.


@final
@attrs.frozen(kw_only=True)
class Gossip:
    """GOSSIP: a message's payload, eagerly pushed along the tree.

    Attributes:
        message_id: the message's id, unique per broadcast.
        payload: the application's data (never ``None``).
        round: hops travelled: 0 from the originator, +1 per forward.
    """

    message_id: MessageId = attrs.field(validator=_check_id)
    payload: object = attrs.field(validator=_check_payload)
    round: int = attrs.field(validator=_check_round)


@final
@attrs.frozen(kw_only=True)
class IHave:
    """IHAVE: a batch of announcements ``(message_id, round)`` on a lazy link."""

    entries: tuple[tuple[MessageId, int], ...] = attrs.field(validator=_check_entries)


@final
@attrs.frozen(kw_only=True)
class Graft:
    """GRAFT: make the link eager again, and send *message_id* if it is set.

    ``message_id=None`` is the paper's ``GRAFT(null, ...)`` of §3.7: join the tree
    without asking for a message.
    """

    message_id: MessageId | None = attrs.field(validator=_check_optional_id)
    round: int = attrs.field(validator=_check_round)


@final
@attrs.frozen(kw_only=True)
class Prune:
    """PRUNE: the link is redundant; the receiver moves the sender to lazy."""


PlumtreeMessage: TypeAlias = Gossip | IHave | Graft | Prune

MESSAGE_TYPES: Final[tuple[type, ...]] = (Gossip, IHave, Graft, Prune)
"""The wire contract: a message's position is its number (append only)."""


@final
@attrs.frozen(kw_only=True)
class Deliver:
    """Effect: apply a new message (the driver calls ``handler.merge`` off the tree).

    Attributes:
        message_id, payload: the message.
        sender: the neighbour it came from.
        round: its hop count on arrival.
    """

    message_id: MessageId
    payload: object
    sender: str
    round: int


PlumtreeEffect: TypeAlias = Send | SetTimer | CancelTimer | Deliver


class PlumtreeHandler(Protocol):
    """The application side of a broadcast group (Partisan's broadcast handler).

    ``is_stale`` and ``graft`` are called synchronously by the core and must be
    fast and must not raise on ids they do not know. ``merge`` is called by the
    driver for each :class:`Deliver`. Anti-entropy (``exchange(peer)`` in
    Partisan) is the driver's business and is not part of this protocol.
    """

    def is_stale(self, message_id: MessageId) -> bool:
        """Whether *message_id* is already applied (or superseded) here."""
        ...

    def graft(self, message_id: MessageId) -> object | None:
        """The payload of *message_id*, or ``None`` if no longer held or stale."""
        ...

    def merge(self, message_id: MessageId, payload: object) -> bool:
        """Apply a message; ``True`` if it was new."""
        ...


@final
@attrs.frozen(kw_only=True)
class PlumtreeConfig:
    """Knobs of one broadcast group. Reasons for the defaults are in the docs.

    Attributes:
        lazy_tick_interval: seconds between flushes of queued ``IHave``
            announcements. 1 s is Partisan's lazy tick: lazy push is repair
            traffic, and batching a second's worth of ids keeps it cheap.
        graft_timeout: seconds an announced message may stay missing before
            the first ``Graft`` (the paper's *timeout1*, §3.6). Announcements
            are already up to a lazy tick late, so the eager copy has usually
            arrived; 0.5 s covers an eager path a few slow hops longer than
            the lazy one, while a repair still completes within about 1.5
            lazy ticks. Too short grafts needlessly (one duplicate payload,
            then pruned); too long delays recovery.
        graft_timeout_second: seconds before trying the next announcer (the
            paper's *timeout2*, shorter than the first): one ``Graft`` round
            trip with margin.
        ihave_batch_size_max: announcements per ``IHave``. A peer's queue is
            sent as soon as it holds this many, so it never grows past it.
            256 ids of ~60 bytes make a ~16 KiB frame.
        message_cache_size_max: messages (id, payload, round) kept to detect
            duplicates before the driver's apply and to answer grafts. Past
            it the oldest is forgotten: novelty then rests on
            ``handler.is_stale`` and grafts on ``handler.graft``.
        missing_size_max: announced-but-missing ids tracked for repair. Past
            it a new announcement is refused and counted
            (``missing_refused_count``); anti-entropy recovers it, and the
            entries already tracked, which are nearest to repair, are kept.
        catch_up_size_max: most recent cached ids announced to a neighbour
            when it comes up (0 disables), so a reconnect repairs what its old
            connection lost.
        optimization_threshold: hops by which an announcement must beat the
            eager copy before the tree is rewired (§3.7). The paper leaves it
            as a parameter; 3 keeps small latency noise from churning the tree.
        channel: the channel every ``Send`` of this group uses (repair traffic
            included), ``broadcast`` by default.
    """

    lazy_tick_interval: float = 1.0
    graft_timeout: float = 0.5
    graft_timeout_second: float = 0.25
    ihave_batch_size_max: int = 256
    message_cache_size_max: int = 4096
    missing_size_max: int = 4096
    catch_up_size_max: int = 1024
    optimization_threshold: int = 3
    channel: str = "broadcast"

    def __attrs_post_init__(self) -> None:
        for name in ("lazy_tick_interval", "graft_timeout", "graft_timeout_second"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.graft_timeout_second > self.graft_timeout:
            raise ValueError("graft_timeout_second must not exceed graft_timeout")
        for name in (
            "ihave_batch_size_max",
            "message_cache_size_max",
            "missing_size_max",
            "optimization_threshold",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        if type(self.catch_up_size_max) is not int or self.catch_up_size_max < 0:
            raise ValueError("catch_up_size_max must be an int >= 0")
        if not self.channel:
            raise ValueError("channel must be a non-empty string")


@final
@attrs.frozen(kw_only=True)
class PlumtreeStatistics:
    """Counters since the core was built, and current table sizes.

    Counts of messages are of messages, not of announcements inside them.
    """

    gossip_sent_count: int
    gossip_received_count: int
    duplicate_count: int
    delivered_count: int
    ihave_sent_count: int
    ihave_received_count: int
    graft_sent_count: int
    graft_received_count: int
    graft_unanswered_count: int
    prune_sent_count: int
    prune_received_count: int
    garbage_count: int
    missing_refused_count: int
    missing_abandoned_count: int
    optimization_count: int
    missing_count: int
    outstanding_count: int
    message_cache_count: int
    eager_count: int
    lazy_count: int


@final
@attrs.define(eq=False)
class _Cached:
    """A message seen here: payload to answer grafts, round it was forwarded with."""

    payload: object
    round: int


@final
@attrs.define(eq=False)
class _Missing:
    """An announced message not yet received: announcers in arrival order.

    Invariant: at most one announcement per peer, all from current neighbours.
    """

    announcements: list[tuple[str, int]]


@final
class Plumtree:
    """The Plumtree core of one broadcast group on one node.

    Args:
        me: this node's name; never one of its own peers.
        config: the group's knobs (and its channel).
        rng: randomness source (no transition draws from it yet).
        handler: the application side; ``is_stale`` and ``graft`` are called
            synchronously, ``merge`` is the driver's to call on ``Deliver``.

    Error handling:
        Malformed messages, or messages from ``me``, are ignored and counted
        in ``garbage_count``; network input never raises. A caller's misuse
        (``me`` as a neighbour, a bad id or payload, a repeated broadcast id)
        raises ``ValueError``.
    """

    def __init__(
        self,
        me: str,
        config: PlumtreeConfig,
        rng: random.Random,
        handler: PlumtreeHandler,
    ) -> None:
        self._me = me
        self._config = config
        self._rng = rng
        self._handler = handler
        # Disjoint (asserted); sorted so that pushes go out in one fixed order.
        self._eager: SortedSet[str] = SortedSet()
        self._lazy: SortedSet[str] = SortedSet()
        # Messages seen here, oldest first; at most message_cache_size_max.
        self._cache: dict[MessageId, _Cached] = {}
        # Announced but not received, oldest first; at most missing_size_max.
        self._missing: dict[MessageId, _Missing] = {}
        # Per-peer IHave queues, each shorter than ihave_batch_size_max.
        self._outstanding: dict[str, list[tuple[MessageId, int]]] = {}
        # True while LAZY_TICK_TIMER is set; set whenever a queue is non-empty.
        self._tick_armed = False
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "gossip_sent_count",
                "gossip_received_count",
                "duplicate_count",
                "delivered_count",
                "ihave_sent_count",
                "ihave_received_count",
                "graft_sent_count",
                "graft_received_count",
                "graft_unanswered_count",
                "prune_sent_count",
                "prune_received_count",
                "garbage_count",
                "missing_refused_count",
                "missing_abandoned_count",
                "optimization_count",
            ),
            0,
        )

    # Queries.

    @property
    def me(self) -> str:
        """This node's name."""
        return self._me

    @property
    def config(self) -> PlumtreeConfig:
        """The group's configuration."""
        return self._config

    def eager_peers(self) -> list[str]:
        """Peers that get payloads at once (tree links), sorted."""
        return list(self._eager)

    def lazy_peers(self) -> list[str]:
        """Peers that get only announcements (backup links), sorted."""
        return list(self._lazy)

    def missing_ids(self) -> list[MessageId]:
        """Announced ids not yet received, oldest first."""
        return list(self._missing)

    def statistics(self) -> PlumtreeStatistics:
        """Counters and table sizes (a snapshot)."""
        return PlumtreeStatistics(
            **self._counts,
            missing_count=len(self._missing),
            outstanding_count=sum(len(q) for q in self._outstanding.values()),
            message_cache_count=len(self._cache),
            eager_count=len(self._eager),
            lazy_count=len(self._lazy),
        )

    # Commands and events.

    def broadcast(
        self, message_id: MessageId, payload: object, now: float
    ) -> list[PlumtreeEffect]:
        """Originate a message (§3.2): payload to eager peers, id to lazy ones.

        The application has already applied it locally, so no ``Deliver``.

        Raises:
            ValueError: *message_id* is not hashable, is ``None``, or was
                already seen here; or *payload* is ``None``.
        """
        if not _is_id(message_id):
            raise ValueError(f"bad message id {message_id!r:.80}")
        if payload is None:
            raise ValueError("a payload may not be None")
        if message_id in self._cache:
            raise ValueError(f"message {message_id!r:.80} was already broadcast")
        effects: list[PlumtreeEffect] = []
        self._remember(message_id, payload, 0)
        self._forget_missing(message_id, effects)
        self._push(message_id, payload, 0, None, now, effects)
        self._check()
        return effects

    def on_message(
        self, sender: str, message: object, now: float
    ) -> list[PlumtreeEffect]:
        """Handle one message from *sender*; anything malformed is ignored."""
        effects: list[PlumtreeEffect] = []
        if sender == self._me:
            self._counts["garbage_count"] += 1
            return effects
        # Fields are checked again here, not only in the constructors: a
        # message built with validators off must not reach the handler.
        match message:
            case Gossip() if (
                _is_id(message.message_id)
                and message.payload is not None
                and _is_round(message.round)
            ):
                self._on_gossip(sender, message, now, effects)
            case IHave() if _valid_entries(message.entries):
                self._on_ihave(sender, message, now, effects)
            case Graft() if (
                message.message_id is None or _is_id(message.message_id)
            ) and _is_round(message.round):
                self._on_graft(sender, message, effects)
            case Prune():
                self._on_prune(sender)
            case _:
                self._counts["garbage_count"] += 1
        self._check()
        return effects

    def on_neighbour_up(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """*peer* became a neighbour: it joins the eager set (§3.5).

        The ids of the most recent cached messages are announced to it
        (``catch_up_size_max``), so it can graft what it missed.

        Raises:
            ValueError: *peer* is this node.
        """
        if peer == self._me:
            raise ValueError("a node is never its own neighbour")
        effects: list[PlumtreeEffect] = []
        if peer in self._eager or peer in self._lazy:
            return effects
        self._eager.add(peer)
        count = self._config.catch_up_size_max
        if count:
            recent = list(self._cache.items())[-count:]
            entries = [(message_id, cached.round) for message_id, cached in recent]
            size = self._config.ihave_batch_size_max
            for start in range(0, len(entries), size):
                self._send_ihave(peer, entries[start : start + size], effects)
        self._check()
        return effects

    def on_neighbour_down(self, peer: str, now: float) -> list[PlumtreeEffect]:
        """*peer* is gone: out of both sets; repair goes through IHAVE/GRAFT (§3.6)."""
        self._eager.discard(peer)
        self._lazy.discard(peer)
        self._outstanding.pop(peer, None)
        for entry in self._missing.values():
            entry.announcements = [a for a in entry.announcements if a[0] != peer]
        self._check()
        return []

    def on_timer(self, name: Hashable, now: float) -> list[PlumtreeEffect]:
        """A timer this core set has fired; unknown or stale names are ignored."""
        effects: list[PlumtreeEffect] = []
        if name == LAZY_TICK_TIMER:
            self._tick_armed = False
            for peer in sorted(self._outstanding):
                self._send_ihave(peer, self._outstanding.pop(peer), effects)
        elif isinstance(name, tuple) and len(name) == 2 and name[0] == GRAFT_TIMER:
            self._on_graft_timer(name, now, effects)
        self._check()
        return effects

    # Transitions.

    def _on_gossip(
        self, sender: str, message: Gossip, now: float, effects: list[PlumtreeEffect]
    ) -> None:
        self._counts["gossip_received_count"] += 1
        message_id = message.message_id
        neighbour = sender in self._eager or sender in self._lazy
        if message_id in self._cache or self._handler.is_stale(message_id):
            # §3.5: a second copy means the link is redundant.
            self._counts["duplicate_count"] += 1
            if neighbour:
                self._eager.discard(sender)
                self._lazy.add(sender)
                self._send(sender, Prune(), effects)
                self._counts["prune_sent_count"] += 1
            return
        self._remember(message_id, message.payload, message.round + 1)
        effects.append(
            Deliver(
                message_id=message_id,
                payload=message.payload,
                sender=sender,
                round=message.round,
            )
        )
        self._counts["delivered_count"] += 1
        missing = self._forget_missing(message_id, effects)
        self._push(message_id, message.payload, message.round + 1, sender, now, effects)
        if neighbour:
            self._lazy.discard(sender)
            self._eager.add(sender)
            if missing is not None:
                self._optimize(sender, message.round, missing, effects)

    def _optimize(
        self,
        sender: str,
        round: int,
        missing: _Missing,
        effects: list[PlumtreeEffect],
    ) -> None:
        """§3.7: a lazy path shorter by the threshold replaces the eager one."""
        if not missing.announcements:
            return
        peer, best = min(missing.announcements, key=lambda a: (a[1], a[0]))
        if peer == sender or round - best < self._config.optimization_threshold:
            return
        self._counts["optimization_count"] += 1
        self._lazy.discard(peer)
        self._eager.add(peer)
        self._send(peer, Graft(message_id=None, round=best), effects)
        self._counts["graft_sent_count"] += 1
        self._eager.discard(sender)
        self._lazy.add(sender)
        self._send(sender, Prune(), effects)
        self._counts["prune_sent_count"] += 1

    def _on_ihave(
        self, sender: str, message: IHave, now: float, effects: list[PlumtreeEffect]
    ) -> None:
        self._counts["ihave_received_count"] += 1
        if sender not in self._eager and sender not in self._lazy:
            return
        for message_id, round in message.entries:
            entry = self._missing.get(message_id)
            if entry is not None:
                if all(peer != sender for peer, _ in entry.announcements):
                    entry.announcements.append((sender, round))
                continue
            if message_id in self._cache or self._handler.is_stale(message_id):
                continue
            if len(self._missing) >= self._config.missing_size_max:
                self._counts["missing_refused_count"] += 1
                continue
            self._missing[message_id] = _Missing(announcements=[(sender, round)])
            effects.append(
                SetTimer(
                    name=(GRAFT_TIMER, message_id),
                    at=now + self._config.graft_timeout,
                )
            )

    def _on_graft(
        self, sender: str, message: Graft, effects: list[PlumtreeEffect]
    ) -> None:
        self._counts["graft_received_count"] += 1
        if sender not in self._eager and sender not in self._lazy:
            return
        self._lazy.discard(sender)
        self._eager.add(sender)
        message_id = message.message_id
        if message_id is None:
            return
        cached = self._cache.get(message_id)
        payload = cached.payload if cached is not None else None
        if payload is None:
            payload = self._handler.graft(message_id)
        if payload is None:
            self._counts["graft_unanswered_count"] += 1
            return
        gossip = Gossip(message_id=message_id, payload=payload, round=message.round)
        self._send(sender, gossip, effects)
        self._counts["gossip_sent_count"] += 1

    def _on_prune(self, sender: str) -> None:
        self._counts["prune_received_count"] += 1
        if sender in self._eager:
            self._eager.discard(sender)
            self._lazy.add(sender)

    def _on_graft_timer(
        self,
        name: tuple[object, ...],
        now: float,
        effects: list[PlumtreeEffect],
    ) -> None:
        message_id = name[1]
        entry = self._missing.get(message_id) if _is_id(message_id) else None
        if entry is None:
            return
        if not entry.announcements:
            del self._missing[message_id]
            self._counts["missing_abandoned_count"] += 1
            return
        peer, round = entry.announcements.pop(0)
        self._lazy.discard(peer)
        self._eager.add(peer)
        self._send(peer, Graft(message_id=message_id, round=round), effects)
        self._counts["graft_sent_count"] += 1
        effects.append(SetTimer(name=name, at=now + self._config.graft_timeout_second))

    # Helpers.

    def _push(
        self,
        message_id: MessageId,
        payload: object,
        round: int,
        sender: str | None,
        now: float,
        effects: list[PlumtreeEffect],
    ) -> None:
        """Eager push to eager peers and lazy push to lazy ones, except *sender*."""
        gossip = Gossip(message_id=message_id, payload=payload, round=round)
        for peer in self._eager:
            if peer != sender:
                self._send(peer, gossip, effects)
                self._counts["gossip_sent_count"] += 1
        size = self._config.ihave_batch_size_max
        for peer in self._lazy:
            if peer == sender:
                continue
            queue = self._outstanding.setdefault(peer, [])
            queue.append((message_id, round))
            if len(queue) >= size:
                # A full batch goes at once, so no queue outgrows one IHave.
                self._send_ihave(peer, self._outstanding.pop(peer), effects)
            elif not self._tick_armed:
                self._tick_armed = True
                effects.append(
                    SetTimer(
                        name=LAZY_TICK_TIMER,
                        at=now + self._config.lazy_tick_interval,
                    )
                )

    def _remember(self, message_id: MessageId, payload: object, round: int) -> None:
        """Cache a message, forgetting the oldest past the bound."""
        self._cache[message_id] = _Cached(payload=payload, round=round)
        while len(self._cache) > self._config.message_cache_size_max:
            del self._cache[next(iter(self._cache))]

    def _forget_missing(
        self, message_id: MessageId, effects: list[PlumtreeEffect]
    ) -> _Missing | None:
        entry = self._missing.pop(message_id, None)
        if entry is not None:
            effects.append(CancelTimer(name=(GRAFT_TIMER, message_id)))
        return entry

    def _send_ihave(
        self,
        peer: str,
        entries: list[tuple[MessageId, int]],
        effects: list[PlumtreeEffect],
    ) -> None:
        if entries:
            self._send(peer, IHave(entries=tuple(entries)), effects)
            self._counts["ihave_sent_count"] += 1

    def _send(
        self, peer: str, message: PlumtreeMessage, effects: list[PlumtreeEffect]
    ) -> None:
        effects.append(Send(to=peer, message=message, channel=self._config.channel))

    def _check(self) -> None:
        assert self._me not in self._eager
        assert self._me not in self._lazy
        assert not (self._eager & self._lazy)
        assert len(self._cache) <= self._config.message_cache_size_max
        assert len(self._missing) <= self._config.missing_size_max
        for peer, queue in self._outstanding.items():
            assert peer in self._eager or peer in self._lazy
            assert 0 < len(queue) < self._config.ihave_batch_size_max
            assert self._tick_armed
