"""Goal: the HyParView core behaves as the paper's sections 4.2-4.4 describe.

Method: a small cluster harness shuttles effects between cores with no sockets. It
keeps a dict of cores keyed by node name, a FIFO of in-flight ``Send`` effects
delivered in order, treats ``Connect`` to a live node as instant success (to a
crashed one, as a failed dial reported through ``on_connect_failed``), and keeps
timers in a dict driven by a virtual ``now``. Single-core tests feed messages by
hand and read the effects. The examples trace the paper: join of a second and
third node, the ForwardJoin walk (passive at PRWL, active at ttl 0 or when the view
is small), active view overflow, symmetry after joins, repair after a failure,
shuffles filling passive views, recovery of a node whose active view empties,
leave, and garbage or unexpected messages, which must be ignored without raising.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Hashable, Iterable

import pytest

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
from runtime.core.hyparview import (
    PROMOTION_TIMER,
    SHUFFLE_NODES_LIMIT,
    SHUFFLE_TIMER,
    DisconnectNotice,
    ForwardJoin,
    HyParView,
    HyParViewConfig,
    Join,
    Neighbour,
    NeighbourReply,
    Priority,
    Shuffle,
    ShuffleReply,
    neighbour_timer,
)
from runtime.core.spec import NodeSpec

CONFIG = HyParViewConfig()


def spec(name: str) -> NodeSpec:
    """The spec of test node *name* (``n3`` -> ``n3@sim``)."""
    port = 9000 + sum(name.encode())
    return NodeSpec(name=f"{name}@sim", addresses=[("10.0.0.1", port)])


def node(name: str) -> str:
    return f"{name}@sim"


class Cluster:
    """Cores keyed by node name, FIFO message delivery, virtual timers."""

    def __init__(self, config: HyParViewConfig = CONFIG, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.now = 0.0
        self.cores: dict[str, HyParView] = {}
        self.inflight: deque[tuple[str, str, object]] = deque()
        self.failures: deque[tuple[str, str]] = deque()
        self.timers: dict[tuple[str, Hashable], float] = {}
        self.dead: set[str] = set()
        self.up: dict[str, set[str]] = {}
        self.trace: list[tuple[float, str, str, str]] = []

    def add(self, name: str) -> HyParView:
        me = spec(name)
        core = HyParView(me, self.config, random.Random(f"{self.seed}:{name}"))
        self.cores[me.name] = core
        self.up[me.name] = set()
        self.apply(me.name, core.start(self.now))
        return core

    def core(self, name: str) -> HyParView:
        return self.cores[node(name)]

    def live(self) -> list[str]:
        return sorted(n for n in self.cores if n not in self.dead)

    def apply(self, at: str, effects: Iterable[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    self.trace.append((self.now, at, to, repr(message)))
                    if to not in self.dead:
                        self.inflight.append((at, to, message))
                case Connect(spec=target):
                    if target.name in self.dead or target.name not in self.cores:
                        self.failures.append((at, target.name))
                case SetTimer(name=name, at=when):
                    self.timers[(at, name)] = when
                case CancelTimer(name=name):
                    self.timers.pop((at, name), None)
                case NeighbourUp(spec=peer):
                    assert peer.name not in self.up[at], f"{at}: {peer.name} up twice"
                    self.up[at].add(peer.name)
                case NeighbourDown(peer=peer):
                    assert peer in self.up[at], f"{at}: {peer} down but not up"
                    self.up[at].discard(peer)
                case Disconnect():
                    pass

    def join(self, name: str, contact: str) -> None:
        self.apply(node(name), self.core(name).join(spec(contact), self.now))

    def settle(self, limit: int = 100_000) -> None:
        """Deliver every in-flight message and dial failure, in order."""
        for _ in range(limit):
            if self.failures:
                at, peer = self.failures.popleft()
                if at not in self.dead:
                    self.apply(at, self.cores[at].on_connect_failed(peer, self.now))
            elif self.inflight:
                src, dst, message = self.inflight.popleft()
                if dst not in self.dead:
                    effects = self.cores[dst].on_message(src, message, self.now)
                    self.apply(dst, effects)
            else:
                return
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
        """Kill *name*: its links drop, and peers holding it see the loss."""
        gone = node(name)
        self.dead.add(gone)
        self.inflight = deque(m for m in self.inflight if gone not in m[:2])
        for other in self.live():
            core = self.cores[other]
            if (
                gone in core.active_view()
                or core.statistics().neighbour_request_pending_count
            ):
                self.apply(other, core.on_connection_lost(gone, self.now))

    def leave(self, name: str) -> None:
        gone = node(name)
        self.apply(gone, self.cores[gone].leave(self.now))
        self.dead.add(gone)

    def assert_symmetric(self) -> None:
        for name in self.live():
            for peer in self.cores[name].active_view():
                assert peer not in self.dead, f"{name} holds dead {peer}"
                assert name in self.cores[peer].active_view(), f"{name} -> {peer}"

    def assert_up_matches_active(self) -> None:
        for name in self.live():
            assert sorted(self.up[name]) == self.cores[name].active_view()

    def components(self) -> list[set[str]]:
        left = set(self.live())
        found = []
        while left:
            start = min(left)
            seen, stack = {start}, [start]
            while stack:
                for peer in self.cores[stack.pop()].active_view():
                    if peer not in seen:
                        seen.add(peer)
                        stack.append(peer)
            left -= seen
            found.append(seen)
        return found


def sends(effects: list[Effect], kind: type) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and isinstance(e.message, kind)]


def lone(config: HyParViewConfig = CONFIG, name: str = "x") -> HyParView:
    return HyParView(spec(name), config, random.Random(1))


def with_neighbours(core: HyParView, *names: str) -> None:
    """Make *names* active neighbours of *core* by feeding their Joins."""
    for name in names:
        core.on_message(node(name), Join(spec=spec(name)), 0.0)


# -- join (section 4.2) ----------------------------------------------------------


def test_join_second_node_views_are_symmetric() -> None:
    cluster = Cluster()
    cluster.add("a")
    cluster.add("b")
    cluster.join("b", "a")
    cluster.settle()
    assert cluster.core("a").active_view() == [node("b")]
    assert cluster.core("b").active_view() == [node("a")]
    assert cluster.core("a").statistics().join_count == 1
    cluster.assert_up_matches_active()


def test_join_third_node_forward_join_accepted_when_view_small() -> None:
    # a's only other neighbour b has an active view of one (the sender), so the
    # walk ends at b, which adds c and tells it with a HIGH Neighbour.
    cluster = Cluster()
    for name in "abc":
        cluster.add(name)
    cluster.join("b", "a")
    cluster.settle()
    cluster.join("c", "a")
    cluster.settle()
    for name in "abc":
        others = sorted(node(n) for n in "abc" if n != name)
        assert cluster.core(name).active_view() == others
    assert cluster.core("b").statistics().forward_join_accepted_count == 1
    cluster.assert_symmetric()
    cluster.assert_up_matches_active()


def test_join_contact_forwards_to_every_other_neighbour() -> None:
    core = lone()
    with_neighbours(core, "a", "b", "c")
    effects = core.on_message(node("n"), Join(spec=spec("n")), 0.0)
    walks = sends(effects, ForwardJoin)
    assert sorted(s.to for s in walks) == [node("a"), node("b"), node("c")]
    assert all(s.message == ForwardJoin(new_node=spec("n"), ttl=6) for s in walks)
    assert NeighbourUp(spec=spec("n")) in effects
    assert node("n") in core.active_view()


def test_forward_join_at_prwl_adds_to_passive_and_forwards() -> None:
    core = lone()
    with_neighbours(core, "s", "a", "b")
    prwl = CONFIG.passive_random_walk_length
    effects = core.on_message(node("s"), ForwardJoin(new_node=spec("n"), ttl=prwl), 0.0)
    assert core.passive_view() == [node("n")]
    assert node("n") not in core.active_view()
    (walk,) = sends(effects, ForwardJoin)
    assert walk.to in (node("a"), node("b"))
    assert walk.message == ForwardJoin(new_node=spec("n"), ttl=prwl - 1)


def test_forward_join_away_from_prwl_only_forwards() -> None:
    core = lone()
    with_neighbours(core, "s", "a", "b")
    effects = core.on_message(node("s"), ForwardJoin(new_node=spec("n"), ttl=5), 0.0)
    assert core.passive_view() == []
    assert [s.message for s in sends(effects, ForwardJoin)] == [
        ForwardJoin(new_node=spec("n"), ttl=4)
    ]


def test_forward_join_at_ttl_zero_adds_to_active() -> None:
    core = lone()
    with_neighbours(core, "s", "a", "b")
    effects = core.on_message(node("s"), ForwardJoin(new_node=spec("n"), ttl=0), 0.0)
    assert node("n") in core.active_view()
    assert (
        Send(to=node("n"), message=Neighbour(spec=spec("x"), priority=Priority.HIGH))
        in effects
    )
    assert not sends(effects, ForwardJoin)


def test_forward_join_with_only_the_sender_active_adds_to_active() -> None:
    core = lone()
    with_neighbours(core, "s")
    core.on_message(node("s"), ForwardJoin(new_node=spec("n"), ttl=5), 0.0)
    assert core.active_view() == [node("n"), node("s")]


def test_forward_join_about_ourselves_is_dropped() -> None:
    core = lone()
    with_neighbours(core, "s", "a")
    assert core.on_message(node("s"), ForwardJoin(new_node=spec("x"), ttl=2), 0.0) == []
    assert core.active_view() == [node("a"), node("s")]


# -- active view management (section 4.3) --------------------------------------------


def test_active_view_overflow_drops_random_member_to_passive() -> None:
    core = lone(HyParViewConfig(active_view_size_max=2))
    with_neighbours(core, "a", "b")
    effects = core.on_message(node("c"), Join(spec=spec("c")), 0.0)
    (notice,) = sends(effects, DisconnectNotice)
    victim = notice.to
    assert victim in (node("a"), node("b"))
    assert notice.message == DisconnectNotice(leaving=False)
    # The notice goes out before the connection is closed.
    assert effects.index(notice) < effects.index(Disconnect(peer=victim))
    assert NeighbourDown(peer=victim) in effects
    assert core.passive_view() == [victim]
    assert len(core.active_view()) == 2
    assert node("c") in core.active_view()
    assert core.statistics().active_view_overflow_count == 1


def test_disconnect_notice_moves_sender_to_passive() -> None:
    core = lone()
    with_neighbours(core, "a", "b")
    effects = core.on_message(node("a"), DisconnectNotice(), 0.0)
    assert effects == [Disconnect(peer=node("a")), NeighbourDown(peer=node("a"))]
    assert core.active_view() == [node("b")]
    assert core.passive_view() == [node("a")]


def test_active_views_symmetric_after_many_joins() -> None:
    cluster = Cluster(seed=7)
    rng = random.Random(7)
    names = [f"n{i}" for i in range(30)]
    for i, name in enumerate(names):
        cluster.add(name)
        if i:
            cluster.join(name, rng.choice(names[:i]))
            cluster.settle()
    cluster.assert_symmetric()
    cluster.assert_up_matches_active()
    assert len(cluster.components()) == 1
    for name in cluster.live():
        core = cluster.cores[name]
        assert 1 <= len(core.active_view()) <= CONFIG.active_view_size_max
        assert name not in core.active_view() + core.passive_view()
        assert not set(core.active_view()) & set(core.passive_view())
    # Walks at PRWL seeded passive views before any shuffle ran.
    assert sum(len(c.passive_view()) for c in cluster.cores.values()) > 0


def test_neighbour_low_refused_when_active_view_full() -> None:
    core = lone(HyParViewConfig(active_view_size_max=2))
    with_neighbours(core, "a", "b")
    request = Neighbour(spec=spec("p"), priority=Priority.LOW)
    effects = core.on_message(node("p"), request, 0.0)
    assert effects == [
        Connect(spec=spec("p")),
        Send(to=node("p"), message=NeighbourReply(spec=spec("x"), accepted=False)),
        Disconnect(peer=node("p")),
    ]
    assert core.active_view() == [node("a"), node("b")]
    assert core.statistics().neighbour_request_declined_count == 1


def test_neighbour_high_accepted_when_active_view_full() -> None:
    core = lone(HyParViewConfig(active_view_size_max=2))
    with_neighbours(core, "a", "b")
    request = Neighbour(spec=spec("p"), priority=Priority.HIGH)
    effects = core.on_message(node("p"), request, 0.0)
    assert node("p") in core.active_view()
    assert len(sends(effects, DisconnectNotice)) == 1
    assert (
        Send(to=node("p"), message=NeighbourReply(spec=spec("x"), accepted=True))
        in effects
    )


# -- failures and repair (section 4.3) ----------------------------------------------


def _core_with_passive(*names: str) -> HyParView:
    """A core whose passive view holds *names* (learnt from a shuffle walk)."""
    core = lone()
    with_neighbours(core, "s")
    shuffle = Shuffle(origin=spec("o"), nodes=[spec(n) for n in names], ttl=1)
    core.on_message(node("s"), shuffle, 0.0)
    return core


def test_connection_lost_empty_view_asks_passive_with_high_priority() -> None:
    core = _core_with_passive("p")
    assert core.active_view() == [node("s")]
    effects = core.on_connection_lost(node("s"), 1.0)
    assert NeighbourDown(peer=node("s")) in effects
    requests = sends(effects, Neighbour)
    assert requests[0].message == Neighbour(spec=spec("x"), priority=Priority.HIGH)
    low = Neighbour(spec=spec("x"), priority=Priority.LOW)
    assert all(r.message == low for r in requests[1:])
    assert {r.to for r in requests} == {node("o"), node("p")}
    assert SetTimer(name=neighbour_timer(requests[0].to), at=6.0) in effects
    # A failed neighbour is not kept as a passive node.
    assert node("s") not in core.passive_view()


def test_connection_lost_with_neighbours_left_asks_with_low_priority() -> None:
    core = _core_with_passive("p")
    with_neighbours(core, "a")
    effects = core.on_connection_lost(node("s"), 1.0)
    requests = sends(effects, Neighbour)
    priorities = [
        r.message.priority for r in requests if isinstance(r.message, Neighbour)
    ]
    assert priorities
    assert set(priorities) == {Priority.LOW}


def test_connection_lost_replacement_comes_from_passive_view() -> None:
    cluster = Cluster(seed=3)
    names = [f"n{i}" for i in range(15)]
    rng = random.Random(3)
    for i, name in enumerate(names):
        cluster.add(name)
        if i:
            cluster.join(name, rng.choice(names[:i]))
            cluster.settle()
    cluster.advance(3 * CONFIG.shuffle_interval)
    victim = node("n0")
    holders = [n for n in cluster.live() if victim in cluster.cores[n].active_view()]
    cluster.crash("n0")
    cluster.settle()
    for holder in holders:
        core = cluster.cores[holder]
        assert victim not in core.active_view()
        assert core.statistics().connection_lost_count == 1
        assert core.statistics().neighbour_request_sent_count >= 1
    cluster.advance(2 * CONFIG.promotion_interval)
    cluster.assert_symmetric()
    cluster.assert_up_matches_active()
    assert len(cluster.components()) == 1


def test_connect_failed_candidate_dropped_and_next_tried() -> None:
    core = _core_with_passive("p", "q")
    core.on_message(node("s"), DisconnectNotice(leaving=True), 0.0)
    pending = core.statistics().neighbour_request_pending_count
    assert pending == 3  # o, p and q were all asked.
    effects = core.on_connect_failed(node("p"), 1.0)
    assert node("p") not in core.passive_view()
    assert CancelTimer(name=neighbour_timer(node("p"))) in effects
    assert core.statistics().neighbour_request_pending_count == 2


def test_neighbour_reply_refused_keeps_candidate_passive() -> None:
    core = _core_with_passive("p")
    core.on_connection_lost(node("s"), 0.0)
    reply = NeighbourReply(spec=spec("p"), accepted=False)
    effects = core.on_message(node("p"), reply, 0.5)
    assert effects == [
        CancelTimer(name=neighbour_timer(node("p"))),
        Disconnect(peer=node("p")),
    ]
    assert node("p") in core.passive_view()
    assert core.statistics().neighbour_request_refused_count == 1


def test_neighbour_timeout_then_late_acceptance_is_undone() -> None:
    core = _core_with_passive("p")
    core.on_connection_lost(node("s"), 0.0)
    effects = core.on_timer(neighbour_timer(node("p")), 5.0)
    assert effects == [Disconnect(peer=node("p"))]
    late = core.on_message(node("p"), NeighbourReply(spec=spec("p"), accepted=True), 6)
    # p holds us now but we stopped waiting: tell it to let go.
    assert late == [
        Connect(spec=spec("p")),
        Send(to=node("p"), message=DisconnectNotice()),
        Disconnect(peer=node("p")),
    ]
    assert node("p") not in core.active_view()


def test_node_whose_active_view_empties_recovers_from_passive() -> None:
    cluster = Cluster(seed=11)
    names = [f"n{i}" for i in range(12)]
    rng = random.Random(11)
    for i, name in enumerate(names):
        cluster.add(name)
        if i:
            cluster.join(name, rng.choice(names[:i]))
            cluster.settle()
    cluster.advance(4 * CONFIG.shuffle_interval)
    target = node("n5")
    core = cluster.cores[target]
    neighbours = core.active_view()
    assert core.passive_view(), "shuffles should have filled n5's passive view"
    for peer in neighbours:
        cluster.crash(peer.split("@")[0])
    cluster.settle()
    cluster.advance(3 * CONFIG.promotion_interval)
    assert core.active_view(), "n5 stayed isolated"
    assert not set(core.active_view()) & set(neighbours)
    cluster.assert_symmetric()


# -- shuffle (section 4.4) ------------------------------------------------------------


def test_shuffle_exchanges_fill_passive_views() -> None:
    cluster = Cluster(seed=5)
    names = [f"n{i}" for i in range(16)]
    rng = random.Random(5)
    for i, name in enumerate(names):
        cluster.add(name)
        if i:
            cluster.join(name, rng.choice(names[:i]))
            cluster.settle()
    before = sum(len(cluster.cores[n].passive_view()) for n in cluster.live())
    cluster.advance(5 * CONFIG.shuffle_interval)
    after = sum(len(cluster.cores[n].passive_view()) for n in cluster.live())
    assert after > before
    for name in cluster.live():
        stats = cluster.cores[name].statistics()
        assert stats.shuffle_sent_count >= 5
        assert cluster.cores[name].passive_view()
    total = sum(c.statistics().shuffle_reply_count for c in cluster.cores.values())
    assert total > 0
    cluster.assert_symmetric()


def test_shuffle_walk_ends_with_reply_to_origin() -> None:
    core = _core_with_passive("p", "q")
    shuffle = Shuffle(origin=spec("o2"), nodes=[spec("r")], ttl=1)
    effects = core.on_message(node("s"), shuffle, 0.0)
    (reply,) = sends(effects, ShuffleReply)
    assert reply.to == node("o2")
    assert isinstance(reply.message, ShuffleReply)
    assert len(reply.message.nodes) == 2
    assert effects[0] == Connect(spec=spec("o2"))
    assert effects[-1] == Disconnect(peer=node("o2"))
    assert {node("o2"), node("r")} <= set(core.passive_view())


def test_shuffle_forwarded_while_ttl_left() -> None:
    core = lone()
    with_neighbours(core, "s", "a")
    shuffle = Shuffle(origin=spec("o"), nodes=[spec("r")], ttl=3)
    effects = core.on_message(node("s"), shuffle, 0.0)
    assert effects == [
        Send(to=node("a"), message=Shuffle(origin=spec("o"), nodes=[spec("r")], ttl=2))
    ]


def test_shuffle_timer_sends_sample_and_rearms() -> None:
    core = _core_with_passive("p", "q")
    with_neighbours(core, "a")
    effects = core.on_timer(SHUFFLE_TIMER, 10.0)
    assert effects[0] == SetTimer(name=SHUFFLE_TIMER, at=20.0)
    (shuffle,) = sends(effects, Shuffle)
    assert isinstance(shuffle.message, Shuffle)
    assert shuffle.message.origin == spec("x")
    assert shuffle.message.ttl == CONFIG.shuffle_walk_length
    names = [s.name for s in shuffle.message.nodes]
    assert shuffle.to not in names
    assert len(names) == len(set(names))


def test_passive_view_evicts_when_full() -> None:
    config = HyParViewConfig(passive_view_size_max=3)
    core = lone(config)
    with_neighbours(core, "s")
    shuffle = Shuffle(origin=spec("o"), nodes=[spec(f"p{i}") for i in range(6)], ttl=1)
    core.on_message(node("s"), shuffle, 0.0)
    assert len(core.passive_view()) == 3


# -- leave ---------------------------------------------------------------------------


def test_leave_removes_node_from_peers_views() -> None:
    cluster = Cluster(seed=9)
    names = [f"n{i}" for i in range(10)]
    rng = random.Random(9)
    for i, name in enumerate(names):
        cluster.add(name)
        if i:
            cluster.join(name, rng.choice(names[:i]))
            cluster.settle()
    gone = node("n3")
    holders = [n for n in cluster.live() if gone in cluster.cores[n].active_view()]
    assert holders
    cluster.leave("n3")
    cluster.settle()
    for name in cluster.live():
        core = cluster.cores[name]
        assert gone not in core.active_view()
    for holder in holders:
        assert gone not in cluster.cores[holder].passive_view()
    assert cluster.core("n3").active_view() == []
    assert cluster.core("n3").on_timer(SHUFFLE_TIMER, 99.0) == []
    cluster.advance(2 * CONFIG.promotion_interval)
    cluster.assert_symmetric()
    assert len(cluster.components()) == 1


def test_leave_cancels_timers_and_stops_core() -> None:
    core = lone()
    with_neighbours(core, "a")
    effects = core.leave(0.0)
    assert effects[0] == Send(to=node("a"), message=DisconnectNotice(leaving=True))
    assert CancelTimer(name=SHUFFLE_TIMER) in effects
    assert CancelTimer(name=PROMOTION_TIMER) in effects
    assert core.left
    assert core.on_message(node("a"), Join(spec=spec("a")), 1.0) == []
    assert core.leave(1.0) == []
    with pytest.raises(ValueError, match="left"):
        core.join(spec("a"), 1.0)


# -- commands, timers, determinism ------------------------------------------------


def test_start_arms_shuffle_and_promotion_timers() -> None:
    assert lone().start(2.0) == [
        SetTimer(name=SHUFFLE_TIMER, at=12.0),
        SetTimer(name=PROMOTION_TIMER, at=3.0),
    ]


def test_join_through_ourselves_raises() -> None:
    with pytest.raises(ValueError, match="itself"):
        lone().join(spec("x"), 0.0)


def test_join_connects_and_sends_join() -> None:
    assert lone().join(spec("c"), 0.0) == [
        Connect(spec=spec("c")),
        NeighbourUp(spec=spec("c")),
        Send(to=node("c"), message=Join(spec=spec("x"))),
    ]


def test_same_seed_gives_same_trace() -> None:
    def run() -> list[tuple[float, str, str, str]]:
        cluster = Cluster(seed=42)
        names = [f"n{i}" for i in range(12)]
        rng = random.Random(42)
        for i, name in enumerate(names):
            cluster.add(name)
            if i:
                cluster.join(name, rng.choice(names[:i]))
        cluster.settle()
        cluster.advance(3 * CONFIG.shuffle_interval)
        cluster.crash("n4")
        cluster.advance(3 * CONFIG.shuffle_interval)
        return cluster.trace

    first = run()
    assert first == run()
    assert len(first) > 100


# -- garbage and unexpected input ------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        None,
        "join",
        42,
        {"t": "join"},
        b"\x00\xff",
        ShuffleReply(nodes=[spec("p")]),  # nobody asked
        NeighbourReply(spec=spec("z"), accepted=False),  # nobody asked
        DisconnectNotice(),  # not a neighbour
        Join(spec=spec("other")),  # spec names another node than the sender
        Neighbour(spec=spec("other"), priority=Priority.HIGH),
        NeighbourReply(spec=spec("other"), accepted=True),
    ],
)
def test_garbage_message_is_ignored_and_counted(message: object) -> None:
    core = lone()
    with_neighbours(core, "a")
    assert core.on_message(node("z"), message, 1.0) == []
    assert core.active_view() == [node("a")]
    assert core.passive_view() == []
    assert core.statistics().ignored_message_count == 1


def test_message_from_ourselves_is_ignored() -> None:
    core = lone()
    assert core.on_message(node("x"), Join(spec=spec("x")), 0.0) == []
    assert core.active_view() == []


def test_unknown_or_stale_timer_is_ignored() -> None:
    core = lone()
    assert core.on_timer("nonsense", 1.0) == []
    assert core.on_timer(neighbour_timer(node("nobody")), 1.0) == []


def test_connection_lost_for_unknown_peer_is_ignored() -> None:
    core = lone()
    with_neighbours(core, "a")
    assert core.on_connection_lost(node("nobody"), 1.0) == []
    assert core.active_view() == [node("a")]


def test_shuffle_of_our_own_walk_is_ignored() -> None:
    core = lone()
    with_neighbours(core, "a", "b")
    shuffle = Shuffle(origin=spec("x"), nodes=[spec("x"), spec("a")], ttl=2)
    assert core.on_message(node("a"), shuffle, 0.0) == []


def test_shuffle_naming_ourselves_or_neighbours_keeps_views_disjoint() -> None:
    core = lone()
    with_neighbours(core, "a")
    nodes = [spec("x"), spec("a"), spec("p"), spec("p")]
    core.on_message(node("a"), Shuffle(origin=spec("o"), nodes=nodes, ttl=1), 0.0)
    assert core.passive_view() == [node("o"), node("p")]
    assert core.active_view() == [node("a")]


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: ForwardJoin(new_node=spec("n"), ttl=-1), ValueError),
        (lambda: ForwardJoin(new_node=spec("n"), ttl=33), ValueError),
        (lambda: ForwardJoin(new_node=spec("n"), ttl=True), ValueError),
        (lambda: Shuffle(origin=spec("o"), nodes=[spec("a")] * 65, ttl=1), ValueError),
        (lambda: Shuffle(origin=spec("o"), nodes=["a@sim"], ttl=1), TypeError),  # type: ignore[list-item]
        (lambda: ShuffleReply(nodes=[None]), TypeError),  # type: ignore[list-item]
        (lambda: NeighbourReply(spec=spec("n"), accepted="yes"), TypeError),  # type: ignore[arg-type]
        (lambda: Neighbour(spec=spec("n"), priority="high"), TypeError),  # type: ignore[arg-type]
        (lambda: Join(spec="n@sim"), TypeError),  # type: ignore[arg-type]
        (lambda: DisconnectNotice(leaving=1), TypeError),  # type: ignore[arg-type]
    ],
)
def test_message_with_bad_fields_refused_at_construction(
    build: object, error: type[Exception]
) -> None:
    assert callable(build)
    with pytest.raises(error):
        build()


def test_shuffle_nodes_limit_is_accepted() -> None:
    nodes = [spec(f"p{i}") for i in range(SHUFFLE_NODES_LIMIT)]
    assert len(Shuffle(origin=spec("o"), nodes=nodes, ttl=1).nodes) == 64


@pytest.mark.parametrize(
    "overrides",
    [
        {"active_view_size_max": 0},
        {"active_view_size_max": 65},
        {"passive_view_size_max": 0},
        {"active_view_size_max": 2.5},
        {"passive_random_walk_length": 7},
        {"shuffle_walk_length": 0},
        {"shuffle_interval": 0.0},
        {"neighbour_request_timeout": -1.0},
        {"promotion_interval": float("inf")},
        {"shuffle_active_count": 40, "shuffle_passive_count": 40},
    ],
)
def test_config_out_of_range_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each knob names itself
        HyParViewConfig(**overrides)  # type: ignore[arg-type]


def test_config_defaults_match_the_paper_and_partisan() -> None:
    default = HyParViewConfig()
    assert default == HyParViewConfig(
        active_view_size_max=6,
        passive_view_size_max=30,
        active_random_walk_length=6,
        passive_random_walk_length=3,
        shuffle_interval=10.0,
        shuffle_active_count=3,
        shuffle_passive_count=4,
        shuffle_walk_length=5,
        neighbour_request_timeout=5.0,
        promotion_interval=1.0,
    )
