"""Full-mesh membership: every node links to every member, as a sans-IO core.

Partisan's default strategy (``partisan_full_membership_strategy``), rebuilt on a
state-based CRDT whose merge is commutative, associative and idempotent, so any
order, duplication or loss of gossip converges once it stops.

Theory of operation
-------------------
The membership is an **add-wins map** ``node name -> NodeSpec`` (``MemberMap``):
an OR-map over a *dot kernel*, as in ORSWOT (Bieniusa et al., "An optimized
conflict-free replicated set", 2012) and the delta-CRDT papers (Almeida, Shoker
and Baquero, "Delta state replicated data types", 2018, section 7).

* An **actor** is one node *incarnation*: ``f"{name}#{incarnation}"`` (the shell
  passes the node's random ``creation``). A restarted node starts with an empty
  map and its counter at 0, so a fresh actor is what keeps its dots unique.
* Each add is a **dot** ``(actor, counter)``, the actor's next counter. The map
  holds a **causal context** (every dot it has observed: a version vector plus a
  *cloud* of dots beyond it, not yet contiguous) and the **entries**: the live
  dots, each carrying a ``NodeSpec`` and the ``started_at`` of the node that the
  spec describes (0 when a third party added it).
* ``add(spec)`` drops every live dot of ``spec.name`` (it has observed them) and
  adds one new dot; ``remove(name)`` drops every live dot of the name. Both keep
  the context, which is what remembers the removal.
* ``merge`` keeps a dot that is live in both maps, or live in one and unseen by
  the other's context; the contexts unite. A dot observed and dropped anywhere is
  dropped everywhere; a dot nobody else has seen survives: an add concurrent with
  a remove wins.

Concurrent adds of one name can leave it several live dots. ``members()`` lists
each name once: the entry with the greatest ``(started_at, actor, counter)``, so
a node's own entry (its real start time) beats one a third party added, and a
restarted node (later start) beats its previous incarnation.

**Self-healing of our own entry.** After merging a state, a node looks at the
dots of its own name:

* its current dot is live and alone: nothing to do;
* its current dot is live beside others (a previous incarnation's entry, or one a
  third party added, perhaps with an old address): it **re-adds itself**, a new
  dot observing all of them, so the stale entries disappear everywhere;
* its current dot was observed and dropped, and the name is either gone or held
  by another incarnation of the same name: it was **removed** (or superseded).
  It **resets**: it drops every other member (``Disconnect`` + ``NeighbourDown``
  each) and keeps a fresh map holding only itself. ``left`` stays false and it
  may ``join`` again. Until it does (or an operator re-adds it elsewhere), it
  ignores states that do not invite it back, so stale gossip from members that
  have not yet heard of the removal, or a duplicate of the removal itself, cannot
  pull it back into the cluster. A member whose gossip still holds an old entry
  of our name (ours before the removal, or an earlier incarnation's) gets a
  *removal notice* in reply: a map whose context is exactly those dots and which
  holds no entry, so merging it drops them there and touches nothing else
  (without it, a removal that reached only the removed node, as when two nodes
  remove each other at once, would never reach the others);
* its current dot was dropped but a third party's add of the name is live (an
  ``update_members`` elsewhere that changed our spec, or an add concurrent with
  our removal: add wins): it re-adds itself with its own spec.

The fresh map after a reset holds only our new dot in its context, as a *cloud*
dot (our counter continues from where it was, so the dot is new everywhere), and
does not claim to have observed our earlier dots: an add we made for another
name before the reset stays live when we merge with the cluster again.

Gossip
------
Every message is the whole map (``MembershipState``). A node pushes it

* after a command of its own (``join``, ``remove``, ``update_members``, a
  re-add of itself): to every linked member, and to the members the command
  removed or added that we do not link to (transiently: ``Connect``, ``Send``,
  ``Disconnect``);
* after a merge changed its map: to ``gossip_fanout`` random linked members
  (every linked member while there are at most that many), not the sender;
* to the sender of a state that lacked something ours has (push-pull): so a
  joiner hears back from its contact, and a removed node that missed its removal
  learns it from whoever it gossips to next;
* every ``gossip_interval``: to ``gossip_fanout`` random linked members, and to
  contacts of joins that have not completed (anti-entropy, which repairs any loss).

A node that links to no one but knows members (a client whose list holds only
clients) draws its fanout from those and sends transiently, so it is not cut off
while one of them can reach the cluster.

Links
-----
``link(me, other)`` says whether we keep a link to a member (default: always).
``client_server_link`` builds the ``client_server`` strategy: two clients never
link, everyone else does. For every linked member the core emits ``Connect`` and
``NeighbourUp`` when it appears and ``Disconnect`` and ``NeighbourDown`` when it
goes, so the two pair up and the nodes "up" are always ``neighbours()``. A
member whose spec changes (a restart with a new address) gets ``Connect(new
spec)`` only: it is the same member, so no Down/Up; the driver replaces the
connections it holds to the old address.

Lost connections and failed dials change nothing: after ``Connect`` the driver
keeps (re)dialling a node until ``Disconnect``, and deciding that a member is
dead is the failure detector's job, not membership's (as in Partisan). The
periodic push re-synchronises a peer once its connection is back.

Events accepted and effects emitted
-----------------------------------
Inputs: ``start``, ``join``, ``leave``, ``remove``, ``update_members``,
``on_message``, ``on_timer``, ``on_connection_lost``, ``on_connect_failed``.
Effects: ``Send`` (``MembershipState``, on the ``membership`` channel),
``SetTimer`` / ``CancelTimer`` (``GOSSIP_TIMER``), ``Connect`` / ``Disconnect``,
``NeighbourUp`` / ``NeighbourDown``.

Transition table
----------------

=========================== ===================== ==================================
event                       condition             state change / effects
=========================== ===================== ==================================
``start``                   -                     arm the gossip timer
``join(C)``                 C not a member        C pending; Connect C; send to C
``join(C)``                 C a member            send our map to C
``remove(N)``               N a member            drop N; send to every linked
                                                  member and N; then Disconnect,
                                                  NeighbourDown N
``update_members(specs)``   -                     add changed, drop missing; send
                                                  to linked, added and dropped;
                                                  then Disconnect, NeighbourDown
``leave()``                 -                     drop ourselves; send to every
                                                  linked member; Disconnect,
                                                  NeighbourDown each; core stops
MembershipState(S) from P   S equals our map      nothing
MembershipState(S) from P   we were reset, S does ignored (counted stale); a
                            not invite us back    removal notice to P if S holds
                                                  an old entry of ours
MembershipState(S) from P   merge changes our map new members Connect, NeighbourUp;
                                                  changed specs Connect; gone ones
                                                  Disconnect, NeighbourDown; push
                                                  to fanout; re-add or reset us
MembershipState(S) from P   merge differs from S, reply with our map to P
                            P lists itself in S
gossip timer                -                     re-arm; push to fanout; resend
                                                  to pending contacts
connection lost / failed    -                     counted only
anything else               -                     ignored and counted
=========================== ===================== ==================================

Invariants (asserted after every input until ``leave``)
-------------------------------------------------------
* Our current dot is live in our map and carries ``me``; ``members()`` lists us
  once, as ``me``, and every other name once.
* The linked members (``neighbours()``) are exactly the members other than us
  that ``link`` accepts, with the spec ``members()`` shows.
* A pending join contact is never us, and is a member only while we link to
  no one.

Determinism: the map is canonical (sorted tuples), every set is iterated sorted,
and the only randomness is the fanout sample drawn from the given
``random.Random`` over a sorted list.

Network input never raises. ``MembershipState`` and ``MemberMap`` validate
themselves on construction (so the codec refuses a malformed message), a merge
whose result would exceed a limit is refused, and anything unknown is ignored;
all are counted in ``FullMeshStatistics``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, TypeAlias, cast, final

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
from runtime.ref import NODE_NAME_BYTES_MAX, validate_node_name

__all__ = [
    "ACTOR_COUNT_LIMIT",
    "CLOUD_DOT_COUNT_LIMIT",
    "COUNTER_LIMIT",
    "ENTRY_COUNT_LIMIT",
    "GOSSIP_TIMER",
    "INCARNATION_LIMIT",
    "MEMBER_COUNT_LIMIT",
    "MESSAGE_TYPES",
    "STARTED_AT_LIMIT",
    "FullMesh",
    "FullMeshConfig",
    "FullMeshStatistics",
    "LinkPolicy",
    "MemberEntry",
    "MemberMap",
    "MemberMapLimitError",
    "MembershipState",
    "actor_id",
    "client_server_link",
    "link_always",
]

# Hard ceilings on what one map (hence one message) may hold. Full mesh keeps a
# connection per member per channel, so clusters stay in the hundreds (Partisan
# recommends HyParView beyond that); 16,384 members is far above any sensible
# full mesh and still bounds a state a hostile peer can make us hold.
MEMBER_COUNT_LIMIT: Final = 16_384
# Live dots: one per member, more only while concurrent adds of a name are being
# healed; twice the members leaves room for a whole cluster restarting at once.
ENTRY_COUNT_LIMIT: Final = 2 * MEMBER_COUNT_LIMIT
# Actors in the causal context: one per node incarnation that ever changed the
# map (every node adds itself at start). The context never forgets an actor (see
# docs/protocols/full_mesh.md, "What is bounded"), so this is the budget of
# restarts a cluster's lifetime may spend: 65,536 is a restart a day for 100
# nodes for well over a year, at about 40 bytes an actor on the wire.
ACTOR_COUNT_LIMIT: Final = 65_536
# Context dots beyond the version vector. Full-state gossip keeps every actor's
# dots contiguous; only a node that reset after its removal holds one (its new
# dot) until it merges with the cluster again, plus one per add it makes alone.
CLOUD_DOT_COUNT_LIMIT: Final = 4_096
# Counters, incarnations and start times fit a signed 64-bit CBOR integer.
COUNTER_LIMIT: Final = 2**63 - 1
INCARNATION_LIMIT: Final = 2**63 - 1
STARTED_AT_LIMIT: Final = 2**63 - 1
# "name@host#incarnation": a node name, "#", and at most 19 decimal digits.
_ACTOR_BYTES_MAX: Final = NODE_NAME_BYTES_MAX + 1 + 19

GOSSIP_TIMER: Final = ("full_mesh", "gossip")
"""The periodic push of our map (anti-entropy), re-armed each time it fires."""

Dot: TypeAlias = tuple[str, int]
"""``(actor, counter)``: the identity of one add."""

LinkPolicy: TypeAlias = Callable[[NodeSpec, NodeSpec], bool]
"""``link(me, other)``: whether *me* keeps a link (connections) to member *other*."""


def link_always(_me: NodeSpec, _other: NodeSpec) -> bool:
    """The full-mesh policy: link every member."""
    return True


def client_server_link(me: NodeSpec, other: NodeSpec) -> bool:
    """The ``client_server`` policy: link unless both nodes are clients.

    Servers (and peers) link everyone; a client links only servers and peers, so
    clients never connect to each other.
    """
    return not (me.role == "client" and other.role == "client")


def actor_id(name: str, incarnation: int) -> str:
    """The actor of node *name*'s incarnation *incarnation*: ``name#incarnation``."""
    return f"{name}#{incarnation}"


def _actor_node(actor: str) -> str:
    """The node name part of an actor id."""
    return actor.rpartition("#")[0]


# ---------------------------------------------------------------------------
# Validation helpers


def _check_actor(value: object) -> None:
    if type(value) is not str or len(value) > _ACTOR_BYTES_MAX:
        raise ValueError(f"an actor is a str of at most {_ACTOR_BYTES_MAX} characters")
    name, sep, incarnation = value.rpartition("#")
    if (
        not sep
        or not incarnation.isascii()
        or not incarnation.isdigit()
        or incarnation != str(int(incarnation))
        or int(incarnation) > INCARNATION_LIMIT
    ):
        raise ValueError(f"an actor is name@host#incarnation, not {value!r}")
    validate_node_name(name)


def _check_int(value: object, what: str, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} must be an int in {low}..{high}, not {value!r}")


def _pairs(value: Iterable[Iterable[object]]) -> tuple[tuple[str, int], ...]:
    # The codec may hand us lists; the validators check element types.
    return cast("tuple[tuple[str, int], ...]", tuple(tuple(pair) for pair in value))


def _entries(value: Iterable[MemberEntry]) -> tuple[MemberEntry, ...]:
    return tuple(value)


def _entry_rank(entry: MemberEntry) -> tuple[int, str, int]:
    """The order in which concurrent entries of one name win ``members()``."""
    return (entry.started_at, entry.actor, entry.counter)


def _value_key(entry: MemberEntry) -> tuple[Any, ...]:
    """A total order on entries, used only if two maps disagree about one dot.

    Honest maps never do (a dot is made once, by its actor); choosing by a total
    order keeps merge commutative and associative even for a forged map.
    """
    return (entry.started_at, attrs.astuple(entry.spec))


# ---------------------------------------------------------------------------
# The CRDT


class MemberMapLimitError(ValueError):
    """An add or merge would make a ``MemberMap`` exceed one of its limits."""


@final
@attrs.frozen(kw_only=True)
class MemberEntry:
    """One live dot of a ``MemberMap``: actor *actor* added *spec* at *counter*.

    Attributes:
        actor: ``name@host#incarnation`` of the node incarnation that added it.
        counter: the actor's counter for this add (1, 2, ...).
        spec: the member's spec; its ``name`` is the map key.
        started_at: wall-clock nanoseconds at which the member described by
            *spec* started, or 0 when a third party (``update_members``) added
            it. Decides between concurrent entries of one name.
    """

    actor: str = attrs.field()
    counter: int = attrs.field()
    spec: NodeSpec = attrs.field(validator=attrs.validators.instance_of(NodeSpec))
    started_at: int = attrs.field()

    @actor.validator
    def _validate_actor(self, _attribute: object, value: str) -> None:
        _check_actor(value)

    @counter.validator
    def _validate_counter(self, _attribute: object, value: int) -> None:
        _check_int(value, "counter", 1, COUNTER_LIMIT)

    @started_at.validator
    def _validate_started_at(self, _attribute: object, value: int) -> None:
        _check_int(value, "started_at", 0, STARTED_AT_LIMIT)

    @property
    def dot(self) -> Dot:
        """``(actor, counter)``."""
        return (self.actor, self.counter)

    @property
    def name(self) -> str:
        """The member's node name (the map key)."""
        return self.spec.name


@final
@attrs.frozen(kw_only=True)
class MemberMap:
    """The add-wins map ``node name -> NodeSpec``: a state-based CRDT value.

    Immutable; ``add``, ``remove`` and ``merge`` return new maps. The fields are
    in canonical form, so two maps with the same content are equal (``==``), and
    the constructor refuses anything else:

    Attributes:
        clock: the version vector: ``(actor, n)`` means the actor's dots 1..n are
            observed. Sorted by actor, each ``n >= 1``, at most
            ``ACTOR_COUNT_LIMIT`` actors.
        cloud: observed dots beyond the version vector, sorted, none contiguous
            with it (``n > clock[actor] + 1``); at most ``CLOUD_DOT_COUNT_LIMIT``.
        entries: the live dots, sorted by ``(name, actor, counter)``; each dot
            appears once and is covered by the context; at most
            ``ENTRY_COUNT_LIMIT`` entries over at most ``MEMBER_COUNT_LIMIT``
            names.

    Raises:
        ValueError, TypeError: on construction, for anything malformed.
    """

    clock: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_pairs)
    cloud: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_pairs)
    entries: tuple[MemberEntry, ...] = attrs.field(default=(), converter=_entries)

    def __attrs_post_init__(self) -> None:
        if len(self.clock) > ACTOR_COUNT_LIMIT:
            raise ValueError(f"a clock holds at most {ACTOR_COUNT_LIMIT} actors")
        if len(self.cloud) > CLOUD_DOT_COUNT_LIMIT:
            raise ValueError(f"a cloud holds at most {CLOUD_DOT_COUNT_LIMIT} dots")
        if len(self.entries) > ENTRY_COUNT_LIMIT:
            raise ValueError(f"a map holds at most {ENTRY_COUNT_LIMIT} entries")
        vector: dict[str, int] = {}
        previous: str | None = None
        for pair in self.clock:
            actor, counter = _checked_dot(pair)
            if previous is not None and actor <= previous:
                raise ValueError("clock actors must be sorted and unique")
            previous = actor
            vector[actor] = counter
        cloud: set[Dot] = set()
        previous_dot: Dot | None = None
        for pair in self.cloud:
            dot = _checked_dot(pair)
            if previous_dot is not None and dot <= previous_dot:
                raise ValueError("cloud dots must be sorted and unique")
            previous_dot = dot
            if dot[1] <= vector.get(dot[0], 0) + 1:
                raise ValueError("cloud dots must lie beyond the clock, not next to it")
            cloud.add(dot)
        seen: set[Dot] = set()
        names = 0
        previous_key: tuple[str, str, int] | None = None
        for entry in self.entries:
            if not isinstance(entry, MemberEntry):
                raise TypeError("entries hold MemberEntry values only")
            key = (entry.spec.name, entry.actor, entry.counter)
            if previous_key is not None and key <= previous_key:
                raise ValueError("entries must be sorted by (name, actor, counter)")
            if previous_key is None or key[0] != previous_key[0]:
                names += 1
            previous_key = key
            dot = entry.dot
            if dot in seen:
                raise ValueError(f"dot {dot} appears twice")
            seen.add(dot)
            if not (dot[1] <= vector.get(dot[0], 0) or dot in cloud):
                raise ValueError(f"live dot {dot} is outside the causal context")
        if names > MEMBER_COUNT_LIMIT:
            raise ValueError(f"a map holds at most {MEMBER_COUNT_LIMIT} members")

    # -- queries ------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name with a live dot, sorted."""
        found: list[str] = []
        for entry in self.entries:
            if not found or found[-1] != entry.name:
                found.append(entry.name)
        return found

    def entries_of(self, name: str) -> list[MemberEntry]:
        """The live entries of *name* (empty if it is not a member)."""
        return [entry for entry in self.entries if entry.name == name]

    def winners(self) -> dict[str, MemberEntry]:
        """Name -> the entry that represents it (greatest started_at, then dot)."""
        chosen: dict[str, MemberEntry] = {}
        for entry in self.entries:
            best = chosen.get(entry.name)
            if best is None or _entry_rank(entry) > _entry_rank(best):
                chosen[entry.name] = entry
        return chosen

    def covers(self, dot: Dot) -> bool:
        """Whether the causal context has observed *dot*."""
        actor, counter = dot
        for clock_actor, clock_counter in self.clock:
            if clock_actor == actor:
                if counter <= clock_counter:
                    return True
                break
        return dot in self.cloud

    def counter_of(self, actor: str) -> int:
        """The highest counter of *actor* the context has observed (0 if none)."""
        highest = 0
        for clock_actor, counter in self.clock:
            if clock_actor == actor:
                highest = counter
        for cloud_actor, counter in self.cloud:
            if cloud_actor == actor:
                highest = max(highest, counter)
        return highest

    # -- operations ---------------------------------------------------------

    def add(self, spec: NodeSpec, *, actor: str, started_at: int) -> MemberMap:
        """*actor* maps ``spec.name`` to *spec*, replacing every entry it sees.

        Raises:
            MemberMapLimitError: the map would hold too many members.
            ValueError: *actor* or *started_at* is malformed.
        """
        return self.update(add=[spec], actor=actor, started_at=started_at)

    def remove(self, name: str) -> MemberMap:
        """Drop every live entry of *name* (the context remembers them)."""
        return self.update(remove=[name])

    def update(
        self,
        *,
        remove: Iterable[str] = (),
        add: Iterable[NodeSpec] = (),
        actor: str | None = None,
        started_at: int = 0,
    ) -> MemberMap:
        """Remove the names in *remove*, then add each spec of *add* as *actor*.

        One pass over the map however many names change (``update_members``
        may change thousands). Each added name gets a new dot of *actor* and
        loses every entry it had; *started_at* goes into every new entry.

        Raises:
            MemberMapLimitError: the result would exceed a limit.
            ValueError: *add* is not empty but *actor* is missing or malformed,
                or *add* names one node twice.
        """
        additions = sorted(add, key=lambda spec: spec.name)
        if len({spec.name for spec in additions}) != len(additions):
            raise ValueError("update adds one name twice")
        if additions:
            if actor is None:
                raise ValueError("an add needs an actor")
            _check_actor(actor)
            _check_int(started_at, "started_at", 0, STARTED_AT_LIMIT)
        dropped = set(remove) | {spec.name for spec in additions}
        kept = [entry for entry in self.entries if entry.name not in dropped]
        vector = dict(self.clock)
        cloud = set(self.cloud)
        if additions:
            assert actor is not None
            counter = self.counter_of(actor)
            if counter + len(additions) > COUNTER_LIMIT:
                raise MemberMapLimitError(f"actor {actor} ran out of counters")
            for spec in additions:
                counter += 1
                cloud.add((actor, counter))
                kept.append(
                    MemberEntry(
                        actor=actor, counter=counter, spec=spec, started_at=started_at
                    )
                )
        return _build(vector, cloud, kept)

    def merge(self, other: MemberMap) -> MemberMap:
        """The join of two maps: commutative, associative and idempotent.

        A dot live in both stays; a dot live in one stays only if the other's
        context has not observed it (else the other removed it). Contexts unite.

        Raises:
            MemberMapLimitError: the union would exceed a limit.
        """
        if self == other:
            return self
        ours = {entry.dot: entry for entry in self.entries}
        theirs = {entry.dot: entry for entry in other.entries}
        our_context, their_context = _Context(self), _Context(other)
        kept: list[MemberEntry] = []
        for dot, entry in ours.items():
            twin = theirs.get(dot)
            if twin is not None:
                if twin != entry:
                    entry = max(entry, twin, key=_value_key)
                kept.append(entry)
            elif not their_context.covers(dot):
                kept.append(entry)
        for dot, entry in theirs.items():
            if dot not in ours and not our_context.covers(dot):
                kept.append(entry)
        vector = dict(self.clock)
        for actor, counter in other.clock:
            if counter > vector.get(actor, 0):
                vector[actor] = counter
        return _build(vector, set(self.cloud) | set(other.cloud), kept)


@final
class _Context:
    """A map's causal context as a dict and a set, for O(1) membership tests."""

    __slots__ = ("cloud", "vector")

    def __init__(self, value: MemberMap) -> None:
        self.vector = dict(value.clock)
        self.cloud = frozenset(value.cloud)

    def covers(self, dot: Dot) -> bool:
        return dot[1] <= self.vector.get(dot[0], 0) or dot in self.cloud


def _checked_dot(pair: object) -> Dot:
    if type(pair) is not tuple or len(pair) != 2:
        raise ValueError("a dot is an (actor, counter) pair")
    actor, counter = pair
    _check_actor(actor)
    _check_int(counter, "counter", 1, COUNTER_LIMIT)
    return (actor, counter)


def _build(
    vector: dict[str, int], cloud: set[Dot], entries: Iterable[MemberEntry]
) -> MemberMap:
    """A canonical ``MemberMap`` from a context and live entries.

    Folds cloud dots contiguous with the version vector into it, drops cloud dots
    it covers, sorts everything, and checks the limits first so that an
    over-limit result raises ``MemberMapLimitError``, not a bare ``ValueError``.
    """
    vector = dict(vector)
    remaining: list[Dot] = []
    for actor, counter in sorted(cloud):
        known = vector.get(actor, 0)
        if counter <= known:
            continue
        if counter == known + 1:
            vector[actor] = counter
        else:
            remaining.append((actor, counter))
    ordered = sorted(entries, key=lambda e: (e.spec.name, e.actor, e.counter))
    if len(vector) > ACTOR_COUNT_LIMIT:
        raise MemberMapLimitError(f"more than {ACTOR_COUNT_LIMIT} actors")
    if len(remaining) > CLOUD_DOT_COUNT_LIMIT:
        raise MemberMapLimitError(f"more than {CLOUD_DOT_COUNT_LIMIT} cloud dots")
    if len(ordered) > ENTRY_COUNT_LIMIT:
        raise MemberMapLimitError(f"more than {ENTRY_COUNT_LIMIT} entries")
    if len({e.spec.name for e in ordered}) > MEMBER_COUNT_LIMIT:
        raise MemberMapLimitError(f"more than {MEMBER_COUNT_LIMIT} members")
    return MemberMap(
        clock=tuple(sorted(vector.items())),
        cloud=tuple(remaining),
        entries=tuple(ordered),
    )


# ---------------------------------------------------------------------------
# Messages


@final
@attrs.frozen(kw_only=True)
class MembershipState:
    """The sender's whole membership map (Partisan's ``receive_state``)."""

    state: MemberMap = attrs.field(validator=attrs.validators.instance_of(MemberMap))


MESSAGE_TYPES: Final[tuple[type, ...]] = (MembershipState, MemberMap, MemberEntry)
"""Every message class and every attrs class nested in one: the wire contract."""


# ---------------------------------------------------------------------------
# Configuration and statistics


def _seconds_positive(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if type(value) not in (int, float) or not 0 < value < float("inf"):
        raise ValueError(f"{attribute.name} must be a positive number of seconds")


def _fanout(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 1 <= value <= MEMBER_COUNT_LIMIT:
        raise ValueError(f"{attribute.name} must be an int in 1..{MEMBER_COUNT_LIMIT}")


@final
@attrs.frozen(kw_only=True)
class FullMeshConfig:
    """The knobs of one full-mesh node; every one is bounded and validated.

    Attributes:
        gossip_interval: seconds between periodic pushes of our map. 1 s
            (Partisan's periodic interval is 10 s) because the push is also how
            a lost or refused message is repaired: the driver refuses sends
            while a connection is still coming up, so the state sent with a
            ``Connect`` is often lost, and a join should complete within about a
            second. The cost is ``gossip_fanout`` messages of one map (about
            100 bytes a member) per node per second.
        gossip_fanout: members a periodic or merge-triggered push goes to. With
            at most this many linked members every one is sent to; beyond it a
            random sample, so a cluster of n nodes costs ``n * fanout`` messages
            per round rather than ``n * n``, and a change still reaches everyone
            in about ``log(n) / log(fanout)`` rounds (epidemic push; Demers et
            al., "Epidemic algorithms for replicated database maintenance",
            1987). 8 keeps clusters of up to nine nodes on "send to all".
    """

    gossip_interval: float = attrs.field(default=1.0, validator=_seconds_positive)
    gossip_fanout: int = attrs.field(default=8, validator=_fanout)


@final
@attrs.frozen(kw_only=True)
class FullMeshStatistics:
    """Counters of one full-mesh core (a snapshot; all counts since creation).

    Attributes:
        member_count: members we know, ourselves included.
        neighbour_count: members we link to.
        pending_join_count: join contacts that have not yet answered.
        actor_count, entry_count, cloud_dot_count: the size of our map.
        state_sent_count: ``MembershipState`` messages we sent.
        state_received_count: ``MembershipState`` messages we received.
        merge_count: received states that changed our map.
        self_readd_count: times we re-added ourselves over other entries.
        reset_count: times we found ourselves removed and reset.
        stale_state_count: states ignored after a reset (they did not invite
            us back).
        removal_notice_count: removal notices we sent, after a reset, to
            members still holding an old entry of our name.
        state_refused_count: states whose merge would exceed a limit.
        neighbour_up_count, neighbour_down_count: each ``NeighbourUp`` /
            ``NeighbourDown`` emitted.
        address_change_count: linked members whose spec changed (``Connect``
            to the new spec).
        connection_lost_count, connect_failed_count: driver reports.
        ignored_message_count: messages of unknown type, or from ourselves.
    """

    member_count: int
    neighbour_count: int
    pending_join_count: int
    actor_count: int
    entry_count: int
    cloud_dot_count: int
    state_sent_count: int
    state_received_count: int
    merge_count: int
    self_readd_count: int
    reset_count: int
    stale_state_count: int
    removal_notice_count: int
    state_refused_count: int
    neighbour_up_count: int
    neighbour_down_count: int
    address_change_count: int
    connection_lost_count: int
    connect_failed_count: int
    ignored_message_count: int


@attrs.define
class _Counters:
    """The mutable counters behind ``FullMeshStatistics`` (all start at 0)."""

    state_sent_count: int = 0
    state_received_count: int = 0
    merge_count: int = 0
    self_readd_count: int = 0
    reset_count: int = 0
    stale_state_count: int = 0
    removal_notice_count: int = 0
    state_refused_count: int = 0
    neighbour_up_count: int = 0
    neighbour_down_count: int = 0
    address_change_count: int = 0
    connection_lost_count: int = 0
    connect_failed_count: int = 0
    ignored_message_count: int = 0


# ---------------------------------------------------------------------------
# The core


@final
class FullMesh:
    """One node's full-mesh membership (no I/O, no clock, seeded randomness).

    Args:
        me: our own node spec.
        config: the protocol's knobs.
        rng: the only source of randomness (fanout samples).
        incarnation: this run of the node (the shell passes its random
            ``creation``); with the name it makes our actor id, so it must
            differ between runs of one name.
        started_at: wall-clock nanoseconds at which this node started (from the
            injected clock); carried in our entry, it makes a restarted node's
            entry win over its previous incarnation's.
        link: ``link(me, other)`` decides whether we keep a link to a member;
            ``None`` links every member (full mesh); ``client_server_link``
            makes the ``client_server`` strategy.

    Every input method returns the effects to carry out, in order, and never
    ``None``. After ``leave`` the core is finished: every input returns ``[]``.

    Error handling:
        Nothing a peer sends raises: unexpected input is ignored and counted.
        Caller mistakes (joining or removing ourselves, bad arguments, commands
        after ``leave``) raise ``ValueError``. Invariants are ``assert``-ed.
    """

    def __init__(
        self,
        me: NodeSpec,
        config: FullMeshConfig,
        rng: random.Random,
        *,
        incarnation: int,
        started_at: int,
        link: LinkPolicy | None = None,
    ) -> None:
        if not isinstance(me, NodeSpec):
            raise ValueError("me must be a NodeSpec")
        if not isinstance(config, FullMeshConfig):
            raise ValueError("config must be a FullMeshConfig")
        _check_int(incarnation, "incarnation", 0, INCARNATION_LIMIT)
        _check_int(started_at, "started_at", 0, STARTED_AT_LIMIT)
        self._me = me
        self._config = config
        self._rng = rng
        self._link: LinkPolicy = link if link is not None else link_always
        self._actor = actor_id(me.name, incarnation)
        self._started_at = started_at
        # The map. Invariant (until leave): our current dot is live in it and
        # carries self._me.
        self._state = MemberMap().add(me, actor=self._actor, started_at=started_at)
        self._dot: Dot = (self._actor, 1)
        # Name -> the spec members() shows: the winning entry, or self._me for
        # our own name. Invariant: the names are exactly self._state.names().
        self._view: dict[str, NodeSpec] = {me.name: me}
        # Name -> spec of the members we link to (NeighbourUp'd). Invariant:
        # exactly the members but us that self._link accepts, with their view
        # spec.
        self._up: dict[str, NodeSpec] = {}
        # Join contacts we are still pursuing; we hold a Connect to each. A join
        # is done once its contact is a member and we link to it or to anyone
        # (a client joining through a client waits until it links a server).
        # Invariant: a contact that is a member means we link to no one.
        self._contacts: dict[str, NodeSpec] = {}
        # True after a reset until something invites us back (see the module
        # docstring): states that do not are ignored.
        self._evicted = False
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

    @property
    def actor(self) -> str:
        """Our actor id, ``name@host#incarnation``."""
        return self._actor

    @property
    def state(self) -> MemberMap:
        """Our membership map (immutable)."""
        return self._state

    def members(self) -> list[NodeSpec]:
        """Every member, ourselves included (as ``me``), sorted by name."""
        if self._left:
            return [self._me]
        return [self._view[name] for name in sorted(self._view)]

    def member(self, name: str) -> NodeSpec | None:
        """The spec ``members()`` shows for *name*, or ``None``."""
        if self._left:
            return self._me if name == self._me.name else None
        return self._view.get(name)

    def neighbours(self) -> list[str]:
        """Names of the members we link to, sorted."""
        return sorted(self._up)

    def statistics(self) -> FullMeshStatistics:
        """A snapshot of the sizes and counters."""
        return FullMeshStatistics(
            member_count=len(self.members()),
            neighbour_count=len(self._up),
            pending_join_count=len(self._contacts),
            actor_count=len(self._state.clock),
            entry_count=len(self._state.entries),
            cloud_dot_count=len(self._state.cloud),
            **attrs.asdict(self._counters),
        )

    # -- commands ---------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Arm the gossip timer; call once, before anything else."""
        if self._left:
            return []
        return [SetTimer(name=GOSSIP_TIMER, at=now + self._config.gossip_interval)]

    def join(self, contact: NodeSpec, now: float) -> list[Effect]:
        """Join the cluster through *contact*: send it our map.

        The contact merges it (we become its member), answers with its own map,
        and merging that brings us every member. Until the contact is a member
        and we link to someone (it, or, for a client that joined through a
        client, a server), the join is retried at every gossip tick; the driver
        keeps dialling the contact.

        Raises:
            ValueError: *contact* is not a NodeSpec or is us, or the core left.
        """
        if self._left:
            raise ValueError("this core has left; build a new one to rejoin")
        if not isinstance(contact, NodeSpec):
            raise ValueError("contact must be a NodeSpec")
        if contact.name == self._me.name:
            raise ValueError("a node cannot join through itself")
        out: list[Effect] = []
        self._evicted = False
        name = contact.name
        message = MembershipState(state=self._state)
        if name in self._view and self._up:
            self._send(name, message, out, spec=self._view[name])
        else:
            self._contacts[name] = contact
            out.append(Connect(spec=contact))
            self._send(name, message, out)
        self._check_invariants()
        return out

    def leave(self, now: float) -> list[Effect]:
        """Remove ourselves, tell every linked member, close every link, stop.

        The map without us goes to every linked member before any
        ``Disconnect`` (the driver delivers what was queued before closing).
        The core is finished afterwards: every input returns ``[]``.
        """
        if self._left:
            return []
        out: list[Effect] = []
        self._state = self._state.remove(self._me.name)
        message = MembershipState(state=self._state)
        for name in sorted(self._up):
            self._send(name, message, out)
        for name in sorted(self._contacts):
            out.append(Disconnect(peer=name))
        self._drop(sorted(self._up), out)
        out.append(CancelTimer(name=GOSSIP_TIMER))
        self._up = {}
        self._contacts = {}
        self._view = {self._me.name: self._me}
        self._left = True
        return out

    def remove(self, name: str, now: float) -> list[Effect]:
        """Remove another node from the cluster (Partisan's ``leave(Node)``).

        Every linked member and the removed node itself get the new map (so the
        removed node learns it and resets), then the removed node's links close.
        Removing a name we do not know is a no-op (membership is eventually
        consistent; the name may be gone already).

        Raises:
            ValueError: *name* is us (use ``leave``), or the core left.
        """
        if self._left:
            raise ValueError("this core has left")
        if name == self._me.name:
            raise ValueError("a node removes itself with leave()")
        if name not in self._view:
            return []
        out: list[Effect] = []
        gone = {name: self._view[name]}
        departed = self._set_state(self._state.remove(name), out)
        self._announce(gone, departed, out)
        self._check_invariants()
        return out

    def update_members(self, specs: Iterable[NodeSpec], now: float) -> list[Effect]:
        """Make the membership exactly *specs* plus ourselves.

        Names missing from *specs* are removed (and told, as by ``remove``);
        names new to us, or whose spec differs from the one we show, are added
        with *specs*' spec (as a third party: ``started_at`` 0, so a member's
        own entry still wins a concurrent add, and a live member whose spec we
        changed re-adds itself with its real spec) and told, transiently if we
        do not link to them. Our own name in *specs* is skipped: our entry is
        always ``me``.

        Raises:
            ValueError: an element is not a NodeSpec, a name appears twice,
                there are too many, or the core left.
        """
        if self._left:
            raise ValueError("this core has left")
        wanted: dict[str, NodeSpec] = {}
        for spec in specs:
            if not isinstance(spec, NodeSpec):
                raise ValueError("update_members takes NodeSpec values")
            if spec.name in wanted:
                raise ValueError(f"{spec.name} appears twice")
            wanted[spec.name] = spec
        wanted.pop(self._me.name, None)
        if len(wanted) >= MEMBER_COUNT_LIMIT:
            raise ValueError(f"at most {MEMBER_COUNT_LIMIT - 1} other members")
        removed = sorted(
            n for n in self._view if n != self._me.name and n not in wanted
        )
        added = [wanted[n] for n in sorted(wanted) if self._view.get(n) != wanted[n]]
        if not removed and not added:
            return []
        out: list[Effect] = []
        gone = {name: self._view[name] for name in removed}
        try:
            state = self._state.update(
                remove=removed, add=added, actor=self._actor, started_at=0
            )
        except MemberMapLimitError as error:
            raise ValueError(str(error)) from error
        if added:
            self._evicted = False
        departed = self._set_state(state, out)
        self._announce(gone, departed, out, added=[spec.name for spec in added])
        self._check_invariants()
        return out

    # -- events -----------------------------------------------------------

    def on_message(self, sender: str, message: object, now: float) -> list[Effect]:
        """Handle *message* received from node *sender* (authenticated by the shell).

        Never raises for anything the peer sent: unknown messages, our own, and
        maps too large to merge are ignored and counted.
        """
        if self._left:
            return []
        out: list[Effect] = []
        if sender == self._me.name:
            self._counters.ignored_message_count += 1
            return out
        match message:
            case MembershipState(state=incoming):
                self._on_state(sender, incoming, out)
            case _:
                self._counters.ignored_message_count += 1
        self._check_invariants()
        return out

    def on_timer(self, name: Hashable, now: float) -> list[Effect]:
        """The gossip timer: re-arm, push to a fanout sample, retry pending joins."""
        if self._left or name != GOSSIP_TIMER:
            return []
        out: list[Effect] = [
            SetTimer(name=GOSSIP_TIMER, at=now + self._config.gossip_interval)
        ]
        message = MembershipState(state=self._state)
        for peer in self._fanout(exclude=None):
            self._send(peer, message, out, spec=self._view[peer])
        for peer in sorted(self._contacts):
            self._send(peer, message, out)
        self._check_invariants()
        return out

    def on_connection_lost(self, peer: str, now: float) -> list[Effect]:
        """An established link died: counted only (the driver redials members)."""
        if not self._left:
            self._counters.connection_lost_count += 1
        return []

    def on_connect_failed(self, peer: str, now: float) -> list[Effect]:
        """A dial failed: counted only (the driver keeps dialling until Disconnect)."""
        if not self._left:
            self._counters.connect_failed_count += 1
        return []

    # -- the merge path -------------------------------------------------------

    def _on_state(self, sender: str, incoming: MemberMap, out: list[Effect]) -> None:
        self._counters.state_received_count += 1
        current = self._state
        if incoming == current:
            return
        if self._evicted and not self._invites_us(incoming):
            self._counters.stale_state_count += 1
            self._notify_removal(sender, incoming, out)
            return
        me = self._me.name
        try:
            merged = current.merge(incoming)
            own = merged.entries_of(me)
            readd = False
            if not any(entry.dot == self._dot for entry in own):
                if not own or any(_actor_node(e.actor) == me for e in own):
                    self._reset(merged, out)
                    return
                readd = True
            elif len(own) > 1:
                readd = True
            if readd:
                merged = merged.add(
                    self._me, actor=self._actor, started_at=self._started_at
                )
        except MemberMapLimitError:
            self._counters.state_refused_count += 1
            return
        self._evicted = False
        departed: list[str] = []
        if merged != current:
            self._counters.merge_count += 1
            if readd:
                self._counters.self_readd_count += 1
                self._dot = (self._actor, merged.counter_of(self._actor))
            departed = self._set_state(merged, out)
            message = MembershipState(state=merged)
            targets = sorted(self._up) if readd else self._fanout(exclude=sender)
            for peer in targets:
                if peer != sender:
                    self._send(peer, message, out, spec=self._view[peer])
        if merged != incoming:
            self._reply(sender, incoming, out)
        self._drop(departed, out)

    def _invites_us(self, incoming: MemberMap) -> bool:
        """After a reset: does *incoming* know our new self, or re-add us?

        A state that has merged our post-reset map covers our current dot; a
        state with a live entry of our name made by a third party is an
        operator's re-add (or an add concurrent with our removal, which wins).
        Anything else predates our removal or repeats it.
        """
        if incoming.covers(self._dot):
            return True
        me = self._me.name
        return any(_actor_node(e.actor) != me for e in incoming.entries_of(me))

    def _reset(self, merged: MemberMap, out: list[Effect]) -> None:
        """We were removed: keep a fresh map holding only ourselves."""
        self._counters.reset_count += 1
        counter = max(
            self._state.counter_of(self._actor), merged.counter_of(self._actor)
        )
        if counter >= COUNTER_LIMIT:
            # Unreachable in practice (2**63 adds); keep our map rather than
            # reuse a dot.
            self._counters.state_refused_count += 1
            return
        entry = MemberEntry(
            actor=self._actor,
            counter=counter + 1,
            spec=self._me,
            started_at=self._started_at,
        )
        # Only our new dot in the context (a cloud dot unless it is our first):
        # the fresh map must not claim to have observed, hence removed, adds we
        # made for other names before.
        fresh = _build({}, {entry.dot}, [entry])
        self._dot = entry.dot
        self._evicted = True
        departed = self._set_state(fresh, out)
        self._drop(departed, out)

    def _notify_removal(
        self, sender: str, incoming: MemberMap, out: list[Effect]
    ) -> None:
        """Tell *sender*, which still lists an old entry of ours, that it is gone.

        After a reset, a member that has not heard of our removal (it reached
        only us, or its copy was lost), or that still holds the entry of an
        earlier incarnation of our name, keeps listing us and gossiping to us.
        Every entry of our name made by an incarnation of our name, other than
        our current one, is stale by definition (one process per name, and it
        is us). We answer with a *removal notice*: a map whose context is
        exactly those dots and which holds no entry, so merging it drops them
        and nothing else (it claims nothing about any other dot, our current one
        included).
        """
        me = self._me.name
        stale = {
            e.dot
            for e in incoming.entries_of(me)
            if _actor_node(e.actor) == me and e.dot != self._dot
        }
        if not stale:
            return
        try:
            notice = MembershipState(state=_build({}, stale, []))
        except MemberMapLimitError:
            return
        self._counters.removal_notice_count += 1
        self._reply(sender, incoming, out, notice)

    def _reply(
        self,
        sender: str,
        incoming: MemberMap,
        out: list[Effect],
        message: MembershipState | None = None,
    ) -> None:
        """Send our map (or *message*) to *sender*, whose state lacked something.

        Only if the sender counts itself a member (a node that left sends a map
        without itself and wants nothing back). A sender we do not link to (a
        removed node, a client contacted by a client) gets a transient send.
        """
        entries = incoming.entries_of(sender)
        if not entries:
            return
        if message is None:
            message = MembershipState(state=self._state)
        if sender in self._up or sender in self._contacts:
            self._send(sender, message, out)
            return
        spec = self._view.get(sender)
        if spec is None:
            spec = max(entries, key=_entry_rank).spec
        self._send(sender, message, out, spec=spec)

    # -- state transitions ----------------------------------------------------

    def _set_state(self, state: MemberMap, out: list[Effect]) -> list[str]:
        """Install *state*: Connect + NeighbourUp new links, Connect changed specs.

        Returns the names that stopped being linked, in order; the caller emits
        their ``Disconnect`` + ``NeighbourDown`` with ``_drop`` once it has sent
        what they should still get.
        """
        me = self._me.name
        view = {name: entry.spec for name, entry in state.winners().items()}
        view[me] = self._me
        linked = {
            name: spec
            for name, spec in sorted(view.items())
            if name != me and self._link(self._me, spec)
        }
        old = self._up
        for name, spec in linked.items():
            previous = old.get(name)
            if previous is None:
                self._counters.neighbour_up_count += 1
                out += [Connect(spec=spec), NeighbourUp(spec=spec)]
            elif previous != spec:
                self._counters.address_change_count += 1
                out.append(Connect(spec=spec))
        departed = sorted(name for name in old if name not in linked)
        self._state = state
        self._view = view
        self._up = linked
        for name in sorted(self._contacts):
            if name in view and linked:
                del self._contacts[name]
                if name not in linked:
                    # The join's connection is not a link we keep.
                    out.append(Disconnect(peer=name))
        return departed

    def _drop(self, names: Sequence[str], out: list[Effect]) -> None:
        for name in names:
            self._counters.neighbour_down_count += 1
            out += [Disconnect(peer=name), NeighbourDown(peer=name)]

    def _announce(
        self,
        gone: dict[str, NodeSpec],
        departed: list[str],
        out: list[Effect],
        added: Sequence[str] = (),
    ) -> None:
        """After a command: send the map to every linked member, *added*, *gone*.

        An added member we do not link to (a client, added by a client) is told
        transiently, as a removed one is, so that it learns of us even when we
        link to no one who could tell it.
        """
        message = MembershipState(state=self._state)
        for name in sorted(self._up):
            self._send(name, message, out)
        for name in added:
            if name not in self._up and name in self._view:
                self._send(name, message, out, spec=self._view[name])
        for name in sorted(gone):
            if name in departed:
                self._send(name, message, out)
            else:
                self._send(name, message, out, spec=gone[name])
        self._drop(departed, out)

    def _send(
        self,
        name: str,
        message: MembershipState,
        out: list[Effect],
        *,
        spec: NodeSpec | None = None,
    ) -> None:
        """Send *message* to *name*; with *spec*, a transient Connect/Send/Disconnect.

        The transient form is for a node we keep no link to; it is skipped when
        we do hold one (linked, or a join contact).
        """
        self._counters.state_sent_count += 1
        if spec is None or name in self._up or name in self._contacts:
            out.append(Send(to=name, message=message))
        else:
            out += [
                Connect(spec=spec),
                Send(to=name, message=message),
                Disconnect(peer=name),
            ]

    def _fanout(self, *, exclude: str | None) -> list[str]:
        """The members a push goes to: all, or a sample of ``gossip_fanout``.

        Drawn from the linked members; a node that links to no one but knows
        members (a client whose list holds only clients) draws from those, and
        is sent to transiently, so it is never cut off from the cluster while
        one of them can reach it.
        """
        me = self._me.name
        pool = self._up or {
            n: s for n, s in self._view.items() if n != me and n not in self._contacts
        }
        names = [name for name in sorted(pool) if name != exclude]
        if len(names) <= self._config.gossip_fanout:
            return names
        return sorted(self._rng.sample(names, self._config.gossip_fanout))

    def _check_invariants(self) -> None:
        if self._left:
            return
        me = self._me.name
        own = self._state.entries_of(me)
        assert any(e.dot == self._dot and e.spec == self._me for e in own)
        assert self._view[me] == self._me
        assert sorted(self._view) == self._state.names()
        assert all(spec.name == name for name, spec in self._view.items())
        expected = {
            name: spec
            for name, spec in self._view.items()
            if name != me and self._link(self._me, spec)
        }
        assert self._up == expected
        assert me not in self._contacts
        assert not self._up or self._view.keys().isdisjoint(self._contacts)
