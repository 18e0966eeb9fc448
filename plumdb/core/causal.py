"""Dotted version vector sets: the causal context of one key.

Implements the *DVV set* of Almeida, Baquero, Gonçalves, Preguiça and Fonte,
"Scalable and Accurate Causality Tracking for Eventually Consistent Stores"
(DAIS 2014), §5 ("Dotted Version Vector Sets"), in the shape of Riak's
``dvvset`` module, which plum_db uses for every object. Written from the paper
and that module's documented behaviour.

Theory of operation
-------------------
A clock is a list of *entries* ``(actor, counter, values)``, sorted by actor,
plus a list of *anonymous* values. An entry ``(i, n, [v_k, ..., v_1])`` says:
actor ``i`` has made events ``1..n`` on this key; the newest ``k`` of them
(dots ``(i, n)``, ``(i, n - 1)``, ...) still hold values ``v_k`` (newest first)
and the events up to ``n - k`` are known and *obsolete* (some later write saw
them). Every live value thus carries exactly one *dot* ``(actor, counter)``,
which is what lets two replicas tell "I have seen that write and overwrote it"
from "I have never seen it" without keeping the overwritten values.

* :meth:`DVVSet.join` is the clock's version vector ``[(actor, counter)]``:
  the *context* a reader hands back when it writes, meaning "I have seen
  all of this".
* A write is ``DVVSet.with_context(context, value).update(actor,
  replica=current)``: the writer's context and the replica's current clock are
  synced *without* the new value, which drops every value the writer saw,
  then the value gets the next dot of ``actor``. Values the writer had not seen
  stay: they are *siblings* of the new one (concurrent writes).
* :meth:`DVVSet.sync` merges two replicas' clocks: per actor the larger
  counter wins, and of the values only those whose dots neither side has
  marked obsolete remain. It is commutative, associative and idempotent, so
  replicas that receive the same writes in any order, any number of times,
  hold the same clock (the tests check these properties).
* Anonymous values carry no dot: :meth:`DVVSet.new` makes one, :meth:`update`
  gives it a dot, and :meth:`DVVSet.reconcile` builds ``(join, [value])``, a
  resolved value with the full context. They are kept, as in ``dvvset``, only
  while neither side of a sync strictly dominates the other.

Beyond the paper: ``update(..., counter_floor=f)`` starts an actor that has no
entry at ``f + 1`` instead of 1. The store uses it after collecting a
tombstone, so that a new write never reuses a dot that replicas still
holding the tombstone consider seen (docs/plumdb.md, Tombstones). Counters
may then jump; a jump only claims as seen events that never existed.

Invariants (checked on construction, ``ValueError`` otherwise)
--------------------------------------------------------------
* Entries are sorted by actor, each actor at most once; actors are non-empty
  strings; counters are ints >= 1.
* An entry holds at most ``counter`` values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeAlias, TypeVar, final

import attrs
import cbor2

__all__ = [
    "DVVSet",
    "VersionVector",
    "check_version_vector",
    "descends",
]

V = TypeVar("V")

VersionVector: TypeAlias = tuple[tuple[str, int], ...]
"""``((actor, counter), ...)`` sorted by actor, counters >= 1: a causal context."""


def check_version_vector(context: Iterable[Iterable[object]]) -> VersionVector:
    """*context* as a sorted :data:`VersionVector` (lists are accepted, as from CBOR).

    Raises:
        TypeError: not an iterable of ``(actor, counter)`` pairs.
        ValueError: an empty actor, a counter < 1, or an actor twice.
    """
    if isinstance(context, str | bytes | dict):
        raise TypeError(f"a context is a sequence of (actor, counter): {context!r:.80}")
    pairs: list[tuple[str, int]] = []
    for pair in context:
        items = tuple(pair)
        if len(items) != 2:
            raise TypeError(f"a context entry is (actor, counter): {items!r:.80}")
        actor, counter = items
        if type(actor) is not str or type(counter) is not int:
            raise TypeError(f"a context entry is (actor: str, counter: int): {items!r}")
        if not actor or counter < 1:
            raise ValueError(f"bad context entry {items!r}: empty actor or counter < 1")
        pairs.append((actor, counter))
    pairs.sort()
    for before, after in itertools.pairwise(pairs):
        if before[0] == after[0]:
            raise ValueError(f"actor {before[0]!r} appears twice in a context")
    return tuple(pairs)


def descends(a: VersionVector, b: VersionVector) -> bool:
    """Whether *a* has seen everything *b* has (pointwise ``a >= b``)."""
    seen = dict(a)
    return all(seen.get(actor, 0) >= counter for actor, counter in b)


def _canonical(value: object) -> bytes:
    """The default order of anonymous values: their canonical CBOR bytes."""
    return cbor2.dumps(value, canonical=True)


@final
@attrs.frozen
class DVVSet(Generic[V]):
    """A DVV set: entries ``(actor, counter, values newest first)`` + anonymous values.

    Build clocks with :meth:`new`, :meth:`with_context`, :meth:`update`,
    :meth:`sync` and :meth:`reconcile`; the constructor is for decoders.

    Attributes:
        entries: sorted by actor; see the module docstring.
        anonymous: values without a dot.
    """

    entries: tuple[tuple[str, int, tuple[V, ...]], ...] = ()
    anonymous: tuple[V, ...] = ()

    def __attrs_post_init__(self) -> None:
        if type(self.entries) is not tuple or type(self.anonymous) is not tuple:
            raise TypeError("entries and anonymous are tuples")
        previous = ""
        for entry in self.entries:
            if type(entry) is not tuple or len(entry) != 3:
                raise TypeError(f"an entry is (actor, counter, values): {entry!r:.80}")
            actor, counter, values = entry
            if type(actor) is not str or not actor:
                raise ValueError(f"an actor is a non-empty str: {actor!r:.80}")
            if actor <= previous:
                raise ValueError("entries must be sorted by actor, each actor once")
            if type(counter) is not int or counter < 1:
                raise ValueError(f"a counter is an int >= 1: {counter!r}")
            if type(values) is not tuple or len(values) > counter:
                raise ValueError("an entry holds a tuple of at most counter values")
            previous = actor

    # Construction.

    @classmethod
    def new(cls, value: V) -> DVVSet[V]:
        """A clock with no history and one anonymous *value* (``dvvset:new/1``)."""
        return cls((), (value,))

    @classmethod
    def with_context(cls, context: VersionVector, value: V) -> DVVSet[V]:
        """A writer's clock: its read *context* and the new *value* (``new/2``)."""
        context = check_version_vector(context)
        return cls(tuple((actor, n, ()) for actor, n in context), (value,))

    # Queries.

    def join(self) -> VersionVector:
        """The version vector of this clock: the context to hand to a writer."""
        return tuple((actor, counter) for actor, counter, _ in self.entries)

    def values(self) -> tuple[V, ...]:
        """Every live value: anonymous first, then per actor, newest first."""
        dotted = tuple(value for _, _, values in self.entries for value in values)
        return self.anonymous + dotted

    def size(self) -> int:
        """The number of live values (siblings)."""
        return len(self.anonymous) + sum(len(v) for _, _, v in self.entries)

    def counter(self, actor: str) -> int:
        """*actor*'s counter in this clock (0 if absent)."""
        for entry_actor, counter, _ in self.entries:
            if entry_actor == actor:
                return counter
        return 0

    def less(self, other: DVVSet[V]) -> bool:
        """Whether this clock's history is strictly older than *other*'s."""
        mine, theirs = self.join(), other.join()
        return mine != theirs and descends(theirs, mine)

    def equal_history(self, other: DVVSet[V]) -> bool:
        """Same counters and the same number of values per actor (``equal/2``)."""
        return [(a, n, len(v)) for a, n, v in self.entries] == [
            (a, n, len(v)) for a, n, v in other.entries
        ]

    # Operations.

    def sync(
        self, other: DVVSet[V], *, order: Callable[[V], Any] | None = None
    ) -> DVVSet[V]:
        """Merge two replicas' clocks (``sync/2``); discards obsolete values.

        Args:
            other: the other clock.
            order: key that sorts anonymous values when both sides' are kept
                (canonical CBOR bytes by default), so the result does not
                depend on the argument order.
        """
        anonymous: tuple[V, ...]
        if self.less(other):
            anonymous = other.anonymous
        elif other.less(self) or not other.anonymous:
            anonymous = self.anonymous
        elif not self.anonymous:
            anonymous = other.anonymous
        else:
            key = order if order is not None else _canonical
            union = {key(value): value for value in self.anonymous + other.anonymous}
            anonymous = tuple(union[k] for k in sorted(union))
        return DVVSet(_sync_entries(self.entries, other.entries), anonymous)

    def update(
        self,
        actor: str,
        *,
        replica: DVVSet[V] | None = None,
        counter_floor: int = 0,
    ) -> DVVSet[V]:
        """Record this writer's clock's one anonymous value as *actor*'s next event.

        ``update(actor)`` is ``dvvset:update/2`` and ``update(actor,
        replica=r)`` is ``update/3``: the writer's context is synced with the
        replica's clock first, so the result dominates both.

        Args:
            actor: the writing replica (node name and incarnation).
            replica: the key's current clock on this replica, if any.
            counter_floor: if *actor* has no entry after the sync, its event
                gets counter ``counter_floor + 1`` (see the module docstring).

        Raises:
            ValueError: this clock does not hold exactly one anonymous value
                (make it with :meth:`new` or :meth:`with_context`), or an
                empty actor, or a negative floor.
        """
        if len(self.anonymous) != 1:
            raise ValueError("update needs a clock with exactly one anonymous value")
        if type(actor) is not str or not actor:
            raise ValueError("an actor is a non-empty str")
        if type(counter_floor) is not int or counter_floor < 0:
            raise ValueError("counter_floor is an int >= 0")
        value = self.anonymous[0]
        anonymous: tuple[V, ...] = ()
        if replica is None:
            entries = self.entries
        else:
            synced = DVVSet(self.entries, ()).sync(replica)
            entries, anonymous = synced.entries, synced.anonymous
        return DVVSet(_event(entries, actor, value, counter_floor), anonymous)

    def reconcile(self, value: V) -> DVVSet[V]:
        """This clock's history with *value* as its one anonymous value.

        ``dvvset:reconcile``: the form of a resolved value, which covers every
        value of this clock.
        """
        return DVVSet(tuple((a, n, ()) for a, n, _ in self.entries), (value,))


def _merge_entry(
    a: tuple[str, int, tuple[V, ...]], b: tuple[str, int, tuple[V, ...]]
) -> tuple[str, int, tuple[V, ...]]:
    """One actor's entry from two replicas: the larger counter, live values only.

    The side with counter ``n`` and ``k`` values has marked obsolete the events
    up to ``n - k``; each side keeps the values the other has not obsoleted.
    """
    if a[1] < b[1]:
        a, b = b, a
    actor, n1, values1 = a
    _, n2, values2 = b
    if n1 - len(values1) >= n2 - len(values2):
        return a
    return (actor, n1, values1[: n1 - n2 + len(values2)])


def _sync_entries(
    a: tuple[tuple[str, int, tuple[V, ...]], ...],
    b: tuple[tuple[str, int, tuple[V, ...]], ...],
) -> tuple[tuple[str, int, tuple[V, ...]], ...]:
    """Merge two sorted entry lists (a merge join on the actor)."""
    out: list[tuple[str, int, tuple[V, ...]]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] < b[j][0]:
            out.append(a[i])
            i += 1
        elif a[i][0] > b[j][0]:
            out.append(b[j])
            j += 1
        else:
            out.append(_merge_entry(a[i], b[j]))
            i += 1
            j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return tuple(out)


def _event(
    entries: tuple[tuple[str, int, tuple[V, ...]], ...],
    actor: str,
    value: V,
    counter_floor: int,
) -> tuple[tuple[str, int, tuple[V, ...]], ...]:
    """*entries* with *value* as *actor*'s next event (``dvvset`` ``event/3``)."""
    out = list(entries)
    for index, (entry_actor, counter, values) in enumerate(out):
        if entry_actor == actor:
            out[index] = (actor, counter + 1, (value, *values))
            return tuple(out)
        if entry_actor > actor:
            out.insert(index, (actor, counter_floor + 1, (value,)))
            return tuple(out)
    out.append((actor, counter_floor + 1, (value,)))
    return tuple(out)
