"""Goal: the simulator carries out effects as the driver contract says.

Method: a recording core (every input it gets is logged with its time; it
returns nothing on its own) is driven through ``Simulation.apply_effects``, so
each test scripts exactly the effects a core would return and checks what the
simulator fed back: when messages arrive and in which order, what a dial to a
dead or partitioned node reports, that a crash or a partition reaches the
peers that still want the link after the detection delay, that a graceful
``Disconnect`` delivers what was sent, that timers fire, move and cancel, and
what link faults do. The network has no jitter, so times are exact.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

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
from runtime.core.membership import MembershipCore
from runtime.core.spec import NodeSpec
from runtime.sim import Latency, LinkFaults, NetworkConfig, Simulation
from runtime.sim.network import Network

LATENCY = 0.01
NETWORK = NetworkConfig(
    latency=Latency(base=LATENCY, jitter_median=0.0),
    dial_timeout=2.0,
    crash_detection_delay=1.0,
    break_detection_delay=3.0,
)


class Recorder:
    """A membership core that only records its inputs: ``(time, kind, *args)``."""

    def __init__(self, me: NodeSpec) -> None:
        self._me = me
        self.log: list[tuple[object, ...]] = []

    @property
    def me(self) -> NodeSpec:
        return self._me

    @property
    def left(self) -> bool:
        return False

    def members(self) -> list[NodeSpec]:
        return [self._me]

    def neighbours(self) -> list[str]:
        return []

    def start(self, now: float) -> list[Effect]:
        return []

    def join(self, contact: NodeSpec, now: float) -> list[Effect]:
        self.log.append((now, "join", contact.name))
        return []

    def leave(self, now: float) -> list[Effect]:
        return []

    def on_message(self, sender: str, message: object, now: float) -> list[Effect]:
        self.log.append((now, "message", sender, message))
        return []

    def on_timer(self, name: Hashable, now: float) -> list[Effect]:
        self.log.append((now, "timer", name))
        return []

    def on_connection_lost(self, peer: str, now: float) -> list[Effect]:
        self.log.append((now, "lost", peer))
        return []

    def on_connect_failed(self, peer: str, now: float) -> list[Effect]:
        self.log.append((now, "failed", peer))
        return []


def recorder(
    spec: NodeSpec, _rng: random.Random, _inc: int, _now: float
) -> MembershipCore:
    return Recorder(spec)


def make(count: int, network: NetworkConfig = NETWORK) -> tuple[Simulation, list[str]]:
    sim = Simulation(recorder, seed=1, network=network)
    names = [sim.add_node() for _ in range(count)]
    return sim, names


def log(sim: Simulation, name: str) -> list[tuple[object, ...]]:
    core = sim.core(name)
    assert isinstance(core, Recorder)
    return core.log


def kinds(sim: Simulation, name: str) -> list[tuple[object, ...]]:
    """The log without times: what happened, in order."""
    return [entry[1:] for entry in log(sim, name)]


def connect(sim: Simulation, a: str, b: str) -> None:
    sim.apply_effects(a, [Connect(spec=sim.spec(b))])


def test_messages_arrive_after_a_dial_and_a_latency_in_order() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    sim.apply_effects(a, [Send(to=b, message=i) for i in range(5)])
    sim.run_for(1.0)
    entries = log(sim, b)
    assert [e[3] for e in entries] == [0, 1, 2, 3, 4]
    # Two latencies for the dial, one for the message.
    assert entries[0][0] == pytest.approx(3 * LATENCY)


def test_a_send_without_connect_is_dropped_and_counted() -> None:
    sim, (a, b) = make(2)
    sim.apply_effects(a, [Send(to=b, message="lost")])
    sim.run_for(1.0)
    assert log(sim, b) == []
    assert sim.statistics().dropped_unconnected_count == 1


def test_a_connection_serves_both_ends_once_each_wants_it() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    sim.run_for(1.0)
    connect(sim, b, a)
    sim.apply_effects(b, [Send(to=a, message="back")])
    sim.run_for(1.0)
    assert kinds(sim, a) == [("message", b, "back")]
    assert sim.statistics().dial_count == 1


def test_a_dial_to_a_dead_node_fails_after_the_timeout_once_then_redials() -> None:
    sim, (a, b) = make(2)
    sim.crash(b)
    connect(sim, a, b)
    sim.apply_effects(a, [Send(to=b, message="x")])
    sim.run_for(30.0)
    assert kinds(sim, a) == [("failed", b)]
    assert log(sim, a)[0][0] == pytest.approx(2.0)
    stats = sim.statistics()
    assert stats.redial_count >= 3
    assert stats.dropped_unconnected_count == 1


def test_redials_reach_a_node_that_comes_back() -> None:
    sim, (a, b) = make(2)
    sim.crash(b)
    connect(sim, a, b)
    sim.run_for(5.0)
    sim.restart(b)
    sim.run_for(10.0)
    sim.apply_effects(a, [Send(to=b, message="hello")])
    sim.run_for(1.0)
    assert kinds(sim, b) == [("message", a, "hello")]


def test_a_disconnect_stops_the_redials() -> None:
    sim, (a, b) = make(2)
    sim.crash(b)
    connect(sim, a, b)
    sim.run_for(3.0)
    sim.apply_effects(a, [Disconnect(peer=b)])
    before = sim.statistics().dial_count
    sim.run_for(60.0)
    assert sim.statistics().dial_count == before


def test_a_crash_is_reported_to_peers_that_want_it_after_the_delay() -> None:
    sim, (a, b, c) = make(3)
    connect(sim, a, b)
    connect(sim, c, b)
    sim.apply_effects(c, [Disconnect(peer=b)])
    sim.run_for(1.0)
    sim.crash(b)
    sim.run_for(1.5)
    assert kinds(sim, a) == [("lost", b)]
    assert log(sim, a)[0][0] == pytest.approx(2.0)
    assert kinds(sim, c) == []


def test_messages_in_flight_to_a_crashed_node_are_dropped() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    sim.run_for(1.0)
    sim.apply_effects(a, [Send(to=b, message="late")])
    sim.crash(b)
    sim.restart(b)
    sim.run_for(1.0)
    assert kinds(sim, b) == []
    assert sim.statistics().dropped_in_flight_count == 1


def test_a_graceful_disconnect_delivers_what_was_sent_and_tells_nobody() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    sim.apply_effects(a, [Send(to=b, message=1), Send(to=b, message=2)])
    sim.apply_effects(a, [Disconnect(peer=b)])
    sim.run_for(5.0)
    assert kinds(sim, b) == [("message", a, 1), ("message", a, 2)]
    assert kinds(sim, a) == []
    assert sim.statistics().connection_count == 0


def test_a_connection_stays_while_the_other_end_still_wants_it() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    connect(sim, b, a)
    sim.run_for(1.0)
    sim.apply_effects(a, [Disconnect(peer=b)])
    sim.apply_effects(b, [Send(to=a, message="still")])
    sim.run_for(1.0)
    assert kinds(sim, a) == [("message", b, "still")]
    assert sim.statistics().connection_count == 1


def test_messages_keep_their_order_across_a_reconnection() -> None:
    slow = NetworkConfig(latency=Latency(base=0.01, jitter_median=0.05, jitter_sigma=1))
    sim, (a, b) = make(2, slow)
    for round_ in range(20):
        connect(sim, a, b)
        sim.apply_effects(a, [Send(to=b, message=round_), Disconnect(peer=b)])
        sim.run_for(0.001)
    sim.run_for(10.0)
    assert [e[2] for e in kinds(sim, b)] == list(range(20))


def test_a_partition_breaks_connections_across_and_fails_dials_until_healed() -> None:
    sim, (a, b, c) = make(3)
    connect(sim, a, b)
    connect(sim, a, c)
    sim.run_for(1.0)
    pid = sim.partition([a], [b])
    sim.apply_effects(a, [Send(to=b, message="cut"), Send(to=c, message="fine")])
    sim.run_for(3.5)
    assert kinds(sim, a) == [("lost", b)]
    assert kinds(sim, c) == [("message", a, "fine")]
    assert kinds(sim, b) == []
    sim.heal(pid)
    sim.run_for(10.0)
    sim.apply_effects(a, [Send(to=b, message="healed")])
    sim.run_for(1.0)
    assert kinds(sim, b) == [("message", a, "healed")]


def test_a_loss_breaks_the_connection_and_both_wanting_ends_hear_of_it() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    connect(sim, b, a)
    sim.run_for(1.0)
    sim.set_faults(LinkFaults(loss=1.0), src=a, dst=b)
    sim.apply_effects(a, [Send(to=b, message="gone")])
    sim.clear_faults()
    sim.run_for(3.5)
    assert kinds(sim, a) == [("lost", b)]
    assert kinds(sim, b) == [("lost", a)]
    assert sim.statistics().lost_count == 1


def test_silent_loss_duplication_and_reordering() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    sim.run_for(1.0)
    sim.set_faults(LinkFaults(loss=1.0, loss_breaks_connection=False))
    sim.apply_effects(a, [Send(to=b, message="silent")])
    sim.set_faults(LinkFaults(duplicate=1.0))
    sim.apply_effects(a, [Send(to=b, message="twice")])
    sim.set_faults(LinkFaults(reorder=1.0, reorder_delay=1.0))
    sim.apply_effects(a, [Send(to=b, message=i) for i in range(30)])
    sim.clear_faults()
    sim.run_for(5.0)
    got = [e[2] for e in kinds(sim, b)]
    assert got.count("twice") == 2
    assert "silent" not in got
    numbers = [m for m in got if isinstance(m, int)]
    assert sorted(numbers) == list(range(30))
    assert numbers != list(range(30))
    stats = sim.statistics()
    assert (stats.duplicated_count, stats.reordered_count) == (1, 30)
    assert kinds(sim, a) == []


def test_timers_fire_move_and_cancel() -> None:
    sim, (a,) = make(1)
    sim.apply_effects(
        a,
        [
            SetTimer(name="one", at=1.0),
            SetTimer(name="two", at=2.0),
            SetTimer(name="one", at=3.0),
            SetTimer(name="three", at=4.0),
            CancelTimer(name="three"),
        ],
    )
    sim.run_for(10.0)
    assert log(sim, a) == [(2.0, "timer", "two"), (3.0, "timer", "one")]


def test_a_crashed_node_loses_its_timers() -> None:
    sim, (a, b) = make(2)
    sim.apply_effects(a, [SetTimer(name="t", at=1.0)])
    sim.crash(a)
    sim.restart(a)
    sim.run_for(5.0)
    assert kinds(sim, a) == []
    assert sim.incarnation(a) == 2
    assert sim.is_alive(b)


def test_neighbour_effects_are_the_recorded_view() -> None:
    sim, (a, b, c) = make(3)
    sim.apply_effects(
        a,
        [
            NeighbourUp(spec=sim.spec(b)),
            NeighbourUp(spec=sim.spec(c)),
            NeighbourDown(peer=b),
        ],
    )
    assert sim.view(a) == [c]
    with pytest.raises(AssertionError, match="twice"):
        sim.apply_effects(a, [NeighbourUp(spec=sim.spec(c))])


def test_a_leaving_node_delivers_its_goodbyes_then_its_peers_hear() -> None:
    sim, (a, b) = make(2)
    connect(sim, a, b)
    connect(sim, b, a)
    sim.run_for(1.0)
    sim.apply_effects(a, [Send(to=b, message="bye")])
    sim.leave(a)
    sim.run_for(1.0)
    assert kinds(sim, b) == [("message", a, "bye"), ("lost", a)]
    assert not sim.is_alive(a)


def test_callbacks_run_at_their_time() -> None:
    sim, (a, b) = make(2)
    sim.call_at(2.5, lambda: sim.crash(b))
    sim.run_until(2.0)
    assert sim.is_alive(b)
    sim.run_until(3.0)
    assert not sim.is_alive(b)
    assert sim.live_nodes() == [a]
    assert sim.now == 3.0


def test_caller_mistakes_raise() -> None:
    sim, (a, b) = make(2)
    sim.crash(b)
    with pytest.raises(ValueError, match="not alive"):
        sim.crash(b)
    with pytest.raises(ValueError, match="not alive"):
        sim.add_node(b)
    with pytest.raises(ValueError, match="no node"):
        sim.crash("x@sim")
    with pytest.raises(ValueError, match="is alive"):
        sim.restart(a)
    with pytest.raises(ValueError, match="exists"):
        sim.add_node(name=a)
    with pytest.raises(ValueError, match="no broadcast"):
        sim.broadcast(a, 1, "p")


def test_latency_samples_follow_the_model() -> None:
    network = Network(
        NetworkConfig(latency=Latency(base=0.005, jitter_median=0.002)),
        random.Random(3),
    )
    samples = sorted(network.latency_ns() for _ in range(4001))
    assert samples[0] > 5_000_000
    assert samples[2000] == pytest.approx(7_000_000, rel=0.05)
    assert samples[-1] > 9_000_000
