"""Goal: the full-mesh core and its map behave as docs/protocols/full_mesh.md says.

Method: the map (``MemberMap``) is tested on its own: examples of add, remove,
merge and the canonical form a peer's map must have, and hypothesis properties of
the merge laws (commutative, associative, idempotent) over maps built both by
replicas applying random operations and straight from random contexts and
entries (including forged ones that disagree about a dot). The core is tested
with a small pump that delivers ``Send`` effects between cores in FIFO order,
treats ``Connect`` to a live node as instant, and fires timers on a virtual
``now``: joins of three nodes, joins retried until the contact answers, restart
with a new address and incarnation replacing the old entry, leave, remove of
another node, the removed node's reset (and its immunity to stale gossip),
update_members, client/server links, unknown messages, caller mistakes, and a
seed replaying the same trace.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Hashable, Iterable, Sequence

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core import full_mesh
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
from runtime.core.full_mesh import (
    GOSSIP_TIMER,
    MESSAGE_TYPES,
    FullMesh,
    FullMeshConfig,
    LinkPolicy,
    MemberEntry,
    MemberMap,
    MemberMapLimitError,
    MembershipState,
    actor_id,
    client_server_link,
)
from runtime.core.membership import MembershipCore
from runtime.core.spec import NodeSpec

CONFIG = FullMeshConfig()


def node(name: str) -> str:
    return f"{name}@sim"


def spec(name: str, port: int = 0, role: str = "peer") -> NodeSpec:
    """The spec of test node *name* (``n3`` -> ``n3@sim``), at *port* if given."""
    return NodeSpec(
        name=node(name),
        addresses=[("10.0.0.1", port or 9000 + sum(name.encode()))],
        role=role,
    )


class Cluster:
    """Cores keyed by node name, FIFO delivery, instant connects, virtual timers.

    Checks on every effect: a ``Send`` goes to a node we hold a ``Connect`` for,
    and ``NeighbourUp`` / ``NeighbourDown`` pair up.
    """

    def __init__(self, config: FullMeshConfig = CONFIG, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.now = 0.0
        self.cores: dict[str, FullMesh] = {}
        self.inflight: deque[tuple[str, str, object]] = deque()
        self.timers: dict[tuple[str, Hashable], float] = {}
        self.dead: set[str] = set()
        self.up: dict[str, set[str]] = {}
        self.connected: dict[str, set[str]] = {}
        self.trace: list[tuple[float, str, str]] = []
        self.incarnations = 0

    def add(
        self,
        name: str,
        *,
        port: int = 0,
        role: str = "peer",
        link: LinkPolicy | None = None,
    ) -> FullMesh:
        """Start node *name* (a fresh incarnation if it ran before)."""
        me = spec(name, port, role)
        self.incarnations += 1
        core = FullMesh(
            me,
            self.config,
            random.Random(f"{self.seed}:{name}:{self.incarnations}"),
            incarnation=self.incarnations,
            started_at=1_000 * self.incarnations,
            link=link,
        )
        self.cores[me.name] = core
        self.dead.discard(me.name)
        self.up[me.name] = set()
        self.connected[me.name] = set()
        self.timers = {k: v for k, v in self.timers.items() if k[0] != me.name}
        self.apply(me.name, core.start(self.now))
        return core

    def core(self, name: str) -> FullMesh:
        return self.cores[node(name)]

    def live(self) -> list[str]:
        return sorted(
            n for n, c in self.cores.items() if n not in self.dead and not c.left
        )

    def apply(self, at: str, effects: Iterable[Effect]) -> None:
        for effect in effects:
            self.trace.append((self.now, at, repr(effect)))
            match effect:
                case Send(to=to, message=message):
                    assert to != at
                    assert to in self.connected[at], f"{at} sends to unconnected {to}"
                    self.inflight.append((at, to, message))
                case Connect(spec=target):
                    assert target.name != at
                    self.connected[at].add(target.name)
                case Disconnect(peer=peer):
                    self.connected[at].discard(peer)
                case SetTimer(name=name, at=when):
                    self.timers[(at, name)] = when
                case CancelTimer(name=name):
                    self.timers.pop((at, name), None)
                case NeighbourUp(spec=peer):
                    assert peer.name not in self.up[at], f"{at}: {peer.name} up twice"
                    assert peer.name in self.connected[at]
                    self.up[at].add(peer.name)
                case NeighbourDown(peer=peer):
                    assert peer in self.up[at], f"{at}: {peer} down but not up"
                    self.up[at].discard(peer)

    def join(self, name: str, contact: str) -> None:
        self.apply(node(name), self.core(name).join(spec(contact), self.now))

    def settle(self, limit: int = 100_000) -> None:
        """Deliver every in-flight message, in order (messages to the dead drop)."""
        for _ in range(limit):
            if not self.inflight:
                return
            src, dst, message = self.inflight.popleft()
            if dst not in self.dead:
                self.apply(dst, self.cores[dst].on_message(src, message, self.now))
        raise AssertionError("messages kept flowing")

    def advance(self, seconds: float) -> None:
        """Fire every timer due within *seconds*, in time order, settling after each."""
        end = self.now + seconds
        while True:
            due = sorted(
                (when, at, repr(name), name)
                for (at, name), when in self.timers.items()
                if when <= end and at not in self.dead
            )
            if not due:
                break
            when, at, _, name = due[0]
            del self.timers[(at, name)]
            self.now = max(self.now, when)
            self.apply(at, self.cores[at].on_timer(name, self.now))
            self.settle()
        self.now = end

    def crash(self, name: str) -> None:
        gone = node(name)
        self.dead.add(gone)
        self.inflight = deque(m for m in self.inflight if m[0] != gone)

    def names(self, name: str) -> list[str]:
        return [s.name for s in self.core(name).members()]

    def assert_up_matches(self) -> None:
        for name in self.live():
            assert sorted(self.up[name]) == self.cores[name].neighbours()


def form(cluster: Cluster, names: Sequence[str]) -> None:
    """Start *names* and join all but the first through the first."""
    for name in names:
        cluster.add(name)
    for name in names[1:]:
        cluster.join(name, names[0])
    cluster.settle()


def sends(effects: Sequence[Effect], to: str | None = None) -> list[Send]:
    return [
        e
        for e in effects
        if isinstance(e, Send)
        and isinstance(e.message, MembershipState)
        and (to is None or e.to == to)
    ]


def kinds(effects: Sequence[Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


# ---------------------------------------------------------------------------
# The map


A1 = actor_id(node("a"), 1)
B1 = actor_id(node("b"), 1)
C1 = actor_id(node("c"), 1)


def test_map_add_then_names_and_winner() -> None:
    m = MemberMap().add(spec("a"), actor=A1, started_at=5)
    m = m.add(spec("b"), actor=A1, started_at=0)
    assert m.names() == [node("a"), node("b")]
    assert m.clock == ((A1, 2),)
    assert m.cloud == ()
    assert m.winners()[node("b")].spec == spec("b")
    assert m.covers((A1, 2))
    assert not m.covers((A1, 3))
    assert m.counter_of(A1) == 2


def test_map_add_replaces_the_entries_it_observed() -> None:
    old = MemberMap().add(spec("a", 1), actor=A1, started_at=5)
    new = old.merge(MemberMap()).add(spec("a", 2), actor=B1, started_at=6)
    assert [e.spec for e in new.entries_of(node("a"))] == [spec("a", 2)]
    # The replacement wins wherever it is merged, in either order.
    assert old.merge(new) == new.merge(old) == new


def test_map_remove_is_remembered_by_the_context() -> None:
    a = MemberMap().add(spec("x"), actor=A1, started_at=0)
    b = MemberMap().merge(a).remove(node("x"))
    assert b.names() == []
    assert b.covers((A1, 1))
    assert a.merge(b).names() == []
    assert b.merge(a).names() == []


def test_map_add_concurrent_with_remove_wins() -> None:
    base = MemberMap().add(spec("x", 1), actor=A1, started_at=0)
    removed = base.remove(node("x"))
    readded = base.merge(MemberMap()).add(spec("x", 2), actor=B1, started_at=0)
    merged = removed.merge(readded)
    assert [e.spec for e in merged.entries_of(node("x"))] == [spec("x", 2)]


def test_map_concurrent_adds_both_survive_and_started_at_picks() -> None:
    one = MemberMap().add(spec("x", 1), actor=A1, started_at=10)
    two = MemberMap().add(spec("x", 2), actor=B1, started_at=20)
    merged = one.merge(two)
    assert len(merged.entries_of(node("x"))) == 2
    assert merged.names() == [node("x")]
    assert merged.winners()[node("x")].spec == spec("x", 2)
    # Equal start times: the greater dot decides.
    three = MemberMap().add(spec("x", 3), actor=C1, started_at=20)
    assert one.merge(two).merge(three).winners()[node("x")].spec == spec("x", 3)


def test_map_update_removes_and_adds_in_one_pass() -> None:
    m = MemberMap().update(add=[spec("a"), spec("b")], actor=A1)
    m = m.update(remove=[node("a")], add=[spec("c")], actor=A1)
    assert m.names() == [node("b"), node("c")]
    assert m.clock == ((A1, 3),)
    with pytest.raises(ValueError, match="twice"):
        m.update(add=[spec("d"), spec("d")], actor=A1)
    with pytest.raises(ValueError, match="actor"):
        m.update(add=[spec("d")])


def _entry(actor: str, counter: int, name: str = "x") -> MemberEntry:
    return MemberEntry(actor=actor, counter=counter, spec=spec(name), started_at=0)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"clock": ((B1, 1), (A1, 1))}, "sorted"),
        ({"clock": ((A1, 0),)}, "counter"),
        ({"clock": ((A1, True),)}, "counter"),
        ({"clock": (("nobody", 1),)}, "actor"),
        ({"clock": ((node("a") + "#01", 1),)}, "actor"),
        ({"clock": ((A1, 1, 2),)}, "pair"),
        ({"clock": ((A1, 1),), "cloud": ((A1, 2),)}, "beyond the clock"),
        ({"clock": ((A1, 1),), "cloud": ((A1, 1),)}, "beyond the clock"),
        ({"cloud": ((A1, 5), (A1, 3))}, "sorted"),
        ({"entries": (_entry(A1, 1),)}, "outside the causal context"),
        (
            {"clock": ((A1, 2),), "entries": (_entry(A1, 1, "b"), _entry(A1, 1, "c"))},
            "twice",
        ),
        (
            {"clock": ((A1, 2),), "entries": (_entry(A1, 2), _entry(A1, 1))},
            "sorted",
        ),
        ({"entries": ("not an entry",)}, "MemberEntry"),
    ],
)
def test_map_refuses_non_canonical_or_malformed_input(
    fields: dict[str, object], error: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        MemberMap(**fields)  # type: ignore[arg-type]


def test_map_accepts_lists_where_the_wire_gives_them() -> None:
    m = MemberMap(clock=[[A1, 1]], entries=[_entry(A1, 1)])  # type: ignore[list-item]
    assert m.clock == ((A1, 1),)


def test_entry_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="started_at"):
        MemberEntry(actor=A1, counter=1, spec=spec("a"), started_at=-1)
    with pytest.raises(ValueError, match="counter"):
        MemberEntry(actor=A1, counter=2**63, spec=spec("a"), started_at=0)
    with pytest.raises(TypeError):
        MemberEntry(actor=A1, counter=1, spec="a@sim", started_at=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MembershipState(state=())  # type: ignore[arg-type]


def test_map_limits_raise_the_limit_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(full_mesh, "MEMBER_COUNT_LIMIT", 2)
    one = MemberMap().update(add=[spec("a"), spec("b")], actor=A1)
    two = MemberMap().add(spec("c"), actor=B1, started_at=0)
    with pytest.raises(MemberMapLimitError):
        one.merge(two)
    with pytest.raises(MemberMapLimitError):
        one.add(spec("c"), actor=A1, started_at=0)
    with pytest.raises(ValueError, match="members"):
        MemberMap(
            clock=((A1, 3),),
            entries=(_entry(A1, 1, "a"), _entry(A1, 2, "b"), _entry(A1, 3, "c")),
        )


# -- merge laws ---------------------------------------------------------------

ACTORS = [actor_id(node(n), i) for n in ("a", "b", "c") for i in (1, 2)]
NAMES = ["w", "x", "y", "z"]
SPECS = {(name, port): spec(name, port) for name in NAMES for port in (1, 2)}


@st.composite
def replica_maps(draw: st.DrawFn) -> list[MemberMap]:
    """Maps held by three replicas after random adds, removes and merges."""
    replicas = [MemberMap(), MemberMap(), MemberMap()]
    actors = [ACTORS[0], ACTORS[2], ACTORS[4]]
    steps = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), max_size=25))
    for index, choice in steps:
        name = NAMES[choice % len(NAMES)]
        if choice < 5:
            replicas[index] = replicas[index].add(
                spec(name, 1 + choice), actor=actors[index], started_at=choice
            )
        elif choice < 7:
            replicas[index] = replicas[index].remove(node(name))
        else:
            other = replicas[(index + choice) % 3]
            replicas[index] = replicas[index].merge(other)
    return replicas


@st.composite
def raw_maps(draw: st.DrawFn) -> MemberMap:
    """Any canonical map: random context, any covered dots live, any values.

    Values are drawn per map, so two maps may disagree about one dot (only a
    forged map would): the laws must hold anyway.
    """
    vector = {actor: n for actor in ACTORS if (n := draw(st.integers(0, 3))) > 0}
    extra = draw(st.sets(st.tuples(st.sampled_from(ACTORS), st.integers(1, 6))))
    context = {(a, c) for a, n in vector.items() for c in range(1, n + 1)} | extra
    # Canonical form: fold what is contiguous into the vector.
    for actor, counter in sorted(context):
        if counter == vector.get(actor, 0) + 1:
            vector[actor] = counter
    cloud = sorted(d for d in context if d[1] > vector.get(d[0], 0) + 1)
    live = draw(st.sets(st.sampled_from(sorted(context)))) if context else set()
    entries = []
    for actor, counter in sorted(live):
        name = draw(st.sampled_from(NAMES))
        entries.append(
            MemberEntry(
                actor=actor,
                counter=counter,
                spec=SPECS[name, draw(st.integers(1, 2))],
                started_at=draw(st.integers(0, 2)),
            )
        )
    entries.sort(key=lambda e: (e.name, e.actor, e.counter))
    return MemberMap(
        clock=tuple(sorted(vector.items())), cloud=tuple(cloud), entries=tuple(entries)
    )


@given(replica_maps())
def test_merge_laws_hold_for_replica_maps(maps: list[MemberMap]) -> None:
    a, b, c = maps
    assert a.merge(a) == a
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(raw_maps(), raw_maps(), raw_maps())
def test_merge_laws_hold_for_any_maps(a: MemberMap, b: MemberMap, c: MemberMap) -> None:
    assert a.merge(a) == a
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    # The merge is an upper bound: merging either input again changes nothing.
    joined = a.merge(b)
    assert joined.merge(a) == joined
    assert joined.merge(b) == joined


# ---------------------------------------------------------------------------
# The core


def test_start_arms_the_gossip_timer() -> None:
    core: MembershipCore
    core = FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=7, started_at=1)
    assert core.start(2.0) == [SetTimer(name=GOSSIP_TIMER, at=3.0)]
    assert core.members() == [spec("a")]
    assert core.neighbours() == []
    assert isinstance(core, FullMesh)
    assert core.actor == "a@sim#7"


def test_join_of_three_nodes_through_one_contact() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    everyone = [node("a"), node("b"), node("c")]
    for name in ("a", "b", "c"):
        assert cluster.names(name) == everyone
        assert cluster.core(name).neighbours() == [
            n for n in everyone if n != node(name)
        ]
        assert cluster.core(name).statistics().pending_join_count == 0
    cluster.assert_up_matches()


def test_join_sends_our_map_to_the_contact() -> None:
    core = FullMesh(spec("b"), CONFIG, random.Random(0), incarnation=1, started_at=1)
    effects = core.join(spec("a"), 0.0)
    assert effects == [
        Connect(spec=spec("a")),
        Send(to=node("a"), message=MembershipState(state=core.state)),
    ]
    # The contact is not a member (nor a neighbour) until its map arrives.
    assert core.neighbours() == []
    assert core.statistics().pending_join_count == 1


def test_join_is_retried_every_tick_until_the_contact_answers() -> None:
    cluster = Cluster()
    cluster.add("a")
    cluster.add("b")
    cluster.join("b", "a")
    cluster.inflight.clear()  # the first attempt is lost
    assert cluster.names("a") == [node("a")]
    cluster.advance(CONFIG.gossip_interval)
    assert cluster.names("a") == cluster.names("b") == [node("a"), node("b")]
    assert cluster.core("b").statistics().pending_join_count == 0


def test_join_through_a_member_just_sends_our_map() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b"])
    effects = cluster.core("b").join(spec("a"), cluster.now)
    assert kinds(effects) == ["Send"]


def test_restart_with_new_address_replaces_the_old_entry() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    cluster.crash("b")
    restarted = cluster.add("b", port=7777)
    cluster.join("b", "a")
    # Watch a's effects: the new address is a Connect, not a Down/Up.
    src, dst, message = cluster.inflight.popleft()
    effects = cluster.core("a").on_message(src, message, cluster.now)
    cluster.apply(dst, effects)
    assert Connect(spec=spec("b", 7777)) in effects
    assert not [e for e in effects if isinstance(e, NeighbourUp | NeighbourDown)]
    cluster.settle()
    for name in ("a", "b", "c"):
        assert cluster.core(name).member(node("b")) == spec("b", 7777)
        # The old incarnation's entry is gone everywhere, not just outranked.
        entries = cluster.core(name).state.entries_of(node("b"))
        assert [e.actor for e in entries] == [restarted.actor]
    assert restarted.statistics().self_readd_count == 1
    cluster.assert_up_matches()


def test_restart_with_an_older_clock_still_replaces_the_old_entry() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b"])
    cluster.crash("b")
    # A new incarnation whose wall clock went backwards: its self re-add still
    # removes the old entry, so the start time does not matter.
    me = spec("b", 7777)
    core = FullMesh(me, CONFIG, random.Random(9), incarnation=99, started_at=0)
    cluster.cores[me.name] = core
    cluster.dead.discard(me.name)
    cluster.up[me.name] = set()
    cluster.connected[me.name] = set()
    cluster.apply(me.name, core.join(spec("a"), cluster.now))
    cluster.settle()
    assert cluster.core("a").member(node("b")) == me
    assert len(cluster.core("a").state.entries_of(node("b"))) == 1


def test_leave_sends_the_map_before_disconnecting() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    effects = cluster.core("c").leave(cluster.now)
    assert kinds(effects) == [
        "Send",
        "Send",
        "Disconnect",
        "NeighbourDown",
        "Disconnect",
        "NeighbourDown",
        "CancelTimer",
    ]
    cluster.apply(node("c"), effects)
    cluster.settle()
    assert cluster.core("c").left
    assert cluster.core("c").members() == [spec("c")]
    assert cluster.core("c").on_message(node("a"), effects[0], 0.0) == []
    for name in ("a", "b"):
        assert cluster.names(name) == [node("a"), node("b")]
    cluster.assert_up_matches()


def test_remove_tells_the_removed_node_and_it_resets() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    effects = cluster.core("a").remove(node("c"), cluster.now)
    # Both members get the map, c first of all before its links close.
    assert kinds(effects) == ["Send", "Send", "Disconnect", "NeighbourDown"]
    assert {s.to for s in sends(effects)} == {node("b"), node("c")}
    cluster.apply(node("a"), effects)
    cluster.settle()
    assert cluster.names("a") == cluster.names("b") == [node("a"), node("b")]
    removed = cluster.core("c")
    assert removed.members() == [spec("c")]
    assert removed.neighbours() == []
    assert not removed.left
    assert removed.statistics().reset_count == 1
    cluster.assert_up_matches()
    # Gossip goes on without c coming back.
    cluster.advance(3 * CONFIG.gossip_interval)
    assert cluster.names("a") == [node("a"), node("b")]
    assert cluster.names("c") == [node("c")]


def test_removed_node_re_added_by_an_operator_elsewhere_comes_back() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    cluster.apply(node("a"), cluster.core("a").remove(node("c"), cluster.now))
    cluster.settle()
    assert cluster.names("c") == [node("c")]
    # b's operator puts c back: b's map holds a third party's entry of c,
    # which invites c back; c then re-adds itself with its own spec.
    everyone = [spec("a"), spec("b"), spec("c", 4321)]
    cluster.apply(node("b"), cluster.core("b").update_members(everyone, cluster.now))
    cluster.settle()
    for name in ("a", "b", "c"):
        assert cluster.names(name) == [node("a"), node("b"), node("c")]
        assert cluster.core(name).member(node("c")) == spec("c")
    cluster.assert_up_matches()


def test_mutual_removal_reaches_everyone_through_removal_notices() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    # a and b remove each other at once; c hears of neither removal directly.
    cluster.apply(node("a"), cluster.core("a").remove(node("b"), cluster.now))
    cluster.apply(node("b"), cluster.core("b").remove(node("a"), cluster.now))
    cluster.inflight = deque(m for m in cluster.inflight if m[1] != node("c"))
    cluster.settle()
    assert cluster.names("a") == [node("a")]
    assert cluster.names("b") == [node("b")]
    # c gossips to a and b; each answers with a removal notice.
    cluster.advance(CONFIG.gossip_interval)
    assert cluster.names("c") == [node("c")]
    cluster.assert_up_matches()


def test_remove_of_an_unknown_name_is_a_no_op() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b"])
    assert cluster.core("a").remove(node("zz"), cluster.now) == []


def test_removed_node_ignores_stale_gossip_then_rejoins() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    stale = MembershipState(state=cluster.core("b").state)
    cluster.apply(node("a"), cluster.core("a").remove(node("c"), cluster.now))
    cluster.settle()
    removed = cluster.core("c")
    # b's map from before the removal, and a duplicate of the removal itself,
    # must not pull c back in. b's still holds c's old entry: it gets a removal
    # notice, a map that only covers c's old dot.
    effects = removed.on_message(node("b"), stale, cluster.now)
    assert kinds(effects) == ["Connect", "Send", "Disconnect"]
    notice = sends(effects)[0].message
    assert isinstance(notice, MembershipState)
    assert notice.state.entries == ()
    assert notice.state.clock == ((removed.actor, 1),)
    removal = MembershipState(state=cluster.core("a").state)
    assert removed.on_message(node("a"), removal, cluster.now) == []
    assert removed.members() == [spec("c")]
    stats = removed.statistics()
    assert (stats.stale_state_count, stats.removal_notice_count) == (2, 1)
    # The notice drops c's entry from a stale map and changes nothing else.
    assert stale.state.merge(notice.state).names() == [node("a"), node("b")]
    assert stale.state.merge(notice.state).clock == stale.state.clock
    # A deliberate join brings it back, everywhere.
    cluster.join("c", "b")
    cluster.settle()
    everyone = [node("a"), node("b"), node("c")]
    for name in ("a", "b", "c"):
        assert cluster.names(name) == everyone
    cluster.assert_up_matches()


def test_removed_node_that_missed_its_removal_learns_it_from_a_member() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    cluster.apply(node("a"), cluster.core("a").remove(node("c"), cluster.now))
    cluster.inflight = deque(m for m in cluster.inflight if m[1] != node("c"))
    cluster.settle()
    assert cluster.names("c") == [node("a"), node("b"), node("c")]
    # c gossips to b, which no longer links it: b answers with a transient send.
    cluster.advance(CONFIG.gossip_interval)
    assert cluster.names("c") == [node("c")]
    assert cluster.names("a") == cluster.names("b") == [node("a"), node("b")]
    cluster.assert_up_matches()


def test_update_members_adds_and_removes() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    cluster.add("d")  # running, but in no cluster yet
    core = cluster.core("a")
    effects = core.update_members([spec("a"), spec("b"), spec("d")], cluster.now)
    # d is linked, the map goes to b, d and (before its links close) c.
    assert effects[:2] == [Connect(spec=spec("d")), NeighbourUp(spec=spec("d"))]
    assert [s.to for s in sends(effects)] == [node("b"), node("d"), node("c")]
    assert effects[-2:] == [Disconnect(peer=node("c")), NeighbourDown(peer=node("c"))]
    cluster.apply(node("a"), effects)
    cluster.settle()
    expected = [node("a"), node("b"), node("d")]
    for name in ("a", "b", "d"):
        assert cluster.names(name) == expected
    assert cluster.names("c") == [node("c")]
    cluster.assert_up_matches()
    assert core.update_members([spec("b"), spec("d")], cluster.now) == []


def test_update_members_spec_change_of_a_live_member_is_overruled_by_it() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b"])
    wrong = spec("b", 1234)
    cluster.apply(node("a"), cluster.core("a").update_members([wrong], cluster.now))
    assert cluster.core("a").member(node("b")) == wrong
    cluster.settle()
    # b saw its entry replaced by a third party's and re-added its own spec.
    for name in ("a", "b"):
        assert cluster.core(name).member(node("b")) == spec("b")
    assert cluster.core("b").statistics().self_readd_count == 1
    assert cluster.core("b").statistics().reset_count == 0
    cluster.assert_up_matches()


def test_update_members_refuses_bad_input() -> None:
    core = FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=1, started_at=1)
    with pytest.raises(ValueError, match="twice"):
        core.update_members([spec("b"), spec("b", 5)], 0.0)
    with pytest.raises(ValueError, match="NodeSpec"):
        core.update_members(["b@sim"], 0.0)  # type: ignore[list-item]
    assert core.members() == [spec("a")]


def test_client_server_links_clients_only_to_servers() -> None:
    cluster = Cluster()
    cluster.add("s1", role="server", link=client_server_link)
    cluster.add("s2", role="server", link=client_server_link)
    for name in ("c1", "c2"):
        cluster.add(name, role="client", link=client_server_link)
    cluster.apply(node("s2"), cluster.core("s2").join(cluster.core("s1").me, 0.0))
    cluster.apply(node("c1"), cluster.core("c1").join(cluster.core("s1").me, 0.0))
    # A client may even join through another client: it hears back transiently.
    cluster.apply(node("c2"), cluster.core("c2").join(cluster.core("c1").me, 0.0))
    cluster.settle()
    cluster.advance(CONFIG.gossip_interval)
    everyone = sorted(node(n) for n in ("s1", "s2", "c1", "c2"))
    for name in ("s1", "s2", "c1", "c2"):
        assert cluster.names(name) == everyone
    assert cluster.core("s1").neighbours() == [node("c1"), node("c2"), node("s2")]
    assert cluster.core("c1").neighbours() == [node("s1"), node("s2")]
    assert cluster.core("c2").neighbours() == [node("s1"), node("s2")]
    assert node("c1") not in cluster.connected[node("c2")]
    cluster.assert_up_matches()


def test_client_joining_through_a_lone_client_waits_for_a_server() -> None:
    cluster = Cluster()
    server = cluster.add("s", role="server", link=client_server_link)
    lone = cluster.add("c1", role="client", link=client_server_link)
    joiner = cluster.add("c2", role="client", link=client_server_link)
    cluster.apply(node("c2"), joiner.join(lone.me, 0.0))
    cluster.settle()
    # c1 knows no server yet: c2 is a member of a cluster of two clients, with
    # no link, so its join stays pending.
    assert cluster.names("c2") == [node("c1"), node("c2")]
    assert joiner.neighbours() == []
    assert joiner.statistics().pending_join_count == 1
    cluster.apply(node("c1"), lone.join(server.me, cluster.now))
    cluster.settle()
    cluster.advance(CONFIG.gossip_interval)
    for name in ("s", "c1", "c2"):
        assert cluster.names(name) == [node("c1"), node("c2"), node("s")]
    assert joiner.neighbours() == [node("s")]
    assert joiner.statistics().pending_join_count == 0
    assert node("c1") not in cluster.connected[node("c2")]
    cluster.assert_up_matches()


def test_client_server_link_policy() -> None:
    client, server, peer = spec("c", role="client"), spec("s", role="server"), spec("p")
    assert not client_server_link(client, spec("d", role="client"))
    assert client_server_link(client, server)
    assert client_server_link(server, client)
    assert client_server_link(peer, client)


def test_connection_events_change_nothing() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b"])
    core = cluster.core("a")
    assert core.on_connection_lost(node("b"), 1.0) == []
    assert core.on_connect_failed(node("b"), 1.0) == []
    assert core.neighbours() == [node("b")]
    stats = core.statistics()
    assert (stats.connection_lost_count, stats.connect_failed_count) == (1, 1)


def test_gossip_goes_to_a_fanout_sample_in_a_large_cluster() -> None:
    cluster = Cluster(FullMeshConfig(gossip_fanout=3))
    names = [f"n{i}" for i in range(8)]
    form(cluster, names)
    cluster.advance(CONFIG.gossip_interval)
    for name in names:
        assert cluster.names(name) == sorted(node(n) for n in names)
    effects = cluster.core("n0").on_timer(GOSSIP_TIMER, cluster.now)
    assert effects[0] == SetTimer(
        name=GOSSIP_TIMER, at=cluster.now + CONFIG.gossip_interval
    )
    assert len(sends(effects)) == 3


def test_equal_state_is_not_answered() -> None:
    cluster = Cluster()
    form(cluster, ["a", "b"])
    same = MembershipState(state=cluster.core("b").state)
    assert cluster.core("a").on_message(node("b"), same, 0.0) == []


def test_unknown_messages_and_our_own_are_ignored() -> None:
    core = FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=1, started_at=1)
    assert core.on_message(node("b"), object(), 0.0) == []
    assert core.on_message(node("b"), "garbage", 0.0) == []
    own = MembershipState(state=core.state)
    assert core.on_message(node("a"), own, 0.0) == []
    assert core.on_timer("nobody's timer", 0.0) == []
    assert core.statistics().ignored_message_count == 3


def test_a_map_too_large_to_merge_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    core = FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=1, started_at=1)
    big = MemberMap().update(add=[spec("b"), spec("c")], actor=B1)
    monkeypatch.setattr(full_mesh, "MEMBER_COUNT_LIMIT", 2)
    assert core.on_message(node("b"), MembershipState(state=big), 0.0) == []
    assert core.members() == [spec("a")]
    assert core.statistics().state_refused_count == 1


def test_caller_mistakes_raise() -> None:
    core = FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=1, started_at=1)
    with pytest.raises(ValueError, match="itself"):
        core.join(spec("a"), 0.0)
    with pytest.raises(ValueError, match="leave"):
        core.remove(node("a"), 0.0)
    with pytest.raises(ValueError, match="incarnation"):
        FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=-1, started_at=1)
    with pytest.raises(ValueError, match="started_at"):
        FullMesh(spec("a"), CONFIG, random.Random(0), incarnation=1, started_at=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gossip_fanout"):
        FullMeshConfig(gossip_fanout=0)
    with pytest.raises(ValueError, match="gossip_interval"):
        FullMeshConfig(gossip_interval=0)
    core.leave(0.0)
    assert core.leave(0.0) == []
    with pytest.raises(ValueError, match="left"):
        core.join(spec("b"), 0.0)
    with pytest.raises(ValueError, match="left"):
        core.update_members([], 0.0)
    assert core.on_timer(GOSSIP_TIMER, 0.0) == []


def test_same_seed_gives_same_trace() -> None:
    def run() -> list[tuple[float, str, str]]:
        cluster = Cluster(FullMeshConfig(gossip_fanout=2), seed=42)
        form(cluster, [f"n{i}" for i in range(6)])
        cluster.advance(5.0)
        cluster.apply(node("n0"), cluster.core("n0").remove(node("n3"), cluster.now))
        cluster.advance(2.0)
        return cluster.trace

    assert run() == run()


def test_message_types_are_the_wire_contract() -> None:
    assert (MembershipState, MemberMap, MemberEntry) == MESSAGE_TYPES
    for cls in MESSAGE_TYPES:
        assert attrs.has(cls)


def test_messages_round_trip_through_the_codec() -> None:
    codec_module = pytest.importorskip("runtime.core.codec")
    codec = codec_module.MessageCodec(MESSAGE_TYPES)
    cluster = Cluster()
    form(cluster, ["a", "b", "c"])
    cluster.apply(node("a"), cluster.core("a").remove(node("c"), cluster.now))
    cluster.settle()
    for name in ("a", "c"):
        message = MembershipState(state=cluster.core(name).state)
        assert codec.decode(codec.encode(message)) == message
