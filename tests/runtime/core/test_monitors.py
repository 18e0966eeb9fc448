"""Goal: the monitor bookkeeping gives exactly one DOWN per monitor with the
right reason, and leaves no monitor behind on either side, whatever ends it.

Method: two ``Monitors`` cores (nodes a and b) wired by a tiny pump that carries
``Send`` effects to the other core; process tables are dicts the resolve
functions read. A hypothesis state machine plays random monitor / demonitor /
exit / node-loss sequences and checks, after each step, that every monitor is
either held on both sides or on neither, and at the end that the counts are 0.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from runtime.core.effects import Send
from runtime.core.monitors import (
    DeliverDown,
    DeliverNodeEvent,
    Demonitor,
    DownNotice,
    MonitorRequest,
    Monitors,
    MonitorsEffect,
)

A, B = "a@h", "b@h"


def pid(node: str, n: int) -> str:
    return f"partisan:pid:{node}:1.{n}"


class Pair:
    """Two cores, their live processes, and what reached the watchers."""

    def __init__(self) -> None:
        self.alive: dict[str, set[str]] = {A: set(), B: set()}
        self.cores = {
            node: Monitors(node, resolve=self._resolver(node)) for node in (A, B)
        }
        self.downs: list[DeliverDown] = []
        self.node_events: list[DeliverNodeEvent] = []
        self.in_flight: list[tuple[str, str, object]] = []

    def _resolver(self, node: str):  # type: ignore[no-untyped-def]
        def resolve(target: str) -> str | None:
            return target if target in self.alive[node] else None

        return resolve

    def run(
        self, node: str, effects: list[MonitorsEffect], *, deliver: bool = True
    ) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    self.in_flight.append((node, to, message))
                case DeliverDown():
                    self.downs.append(effect)
                case DeliverNodeEvent():
                    self.node_events.append(effect)
        if deliver:
            self.pump()

    def pump(self) -> None:
        while self.in_flight:
            sender, to, message = self.in_flight.pop(0)
            self.run(to, self.cores[to].on_message(sender, message), deliver=False)


def test_local_monitor_gets_the_exit_reason() -> None:
    pair = Pair()
    pair.alive[A] |= {pid(A, 1), pid(A, 2)}
    core = pair.cores[A]
    pair.run(A, core.monitor("r1", pid(A, 1), pid(A, 2), A, node_up=True))
    pair.alive[A].discard(pid(A, 2))
    pair.run(A, core.process_exited(pid(A, 2), "normal"))
    assert pair.downs == [
        DeliverDown(watcher=pid(A, 1), ref="r1", target=pid(A, 2), reason="normal")
    ]
    assert core.counts().local == 0


def test_monitoring_a_dead_process_gives_noproc_at_once() -> None:
    pair = Pair()
    pair.run(A, pair.cores[A].monitor("r1", pid(A, 1), pid(A, 9), A, node_up=True))
    assert [d.reason for d in pair.downs] == ["noproc"]


def test_remote_monitor_gets_the_reason_and_both_sides_forget_it() -> None:
    pair = Pair()
    pair.alive[B].add(pid(B, 5))
    pair.run(A, pair.cores[A].monitor("r1", pid(A, 1), pid(B, 5), B, node_up=True))
    assert pair.cores[A].counts().outgoing == 1
    assert pair.cores[B].counts().incoming == 1
    pair.alive[B].discard(pid(B, 5))
    effects = pair.cores[B].process_exited(pid(B, 5), "crashed")
    # The DOWN travels on the default channel keyed by the dead process.
    assert effects == [
        Send(
            to=A,
            message=DownNotice(ref="r1", reason="crashed"),
            channel="default",
            key=pid(B, 5),
        )
    ]
    pair.run(B, effects)
    assert [(d.ref, d.reason) for d in pair.downs] == [("r1", "crashed")]
    assert pair.cores[A].counts().outgoing == 0
    assert pair.cores[B].counts().incoming == 0


def test_remote_noproc_and_noconnection() -> None:
    pair = Pair()
    pair.run(A, pair.cores[A].monitor("r1", pid(A, 1), pid(B, 5), B, node_up=True))
    pair.run(A, pair.cores[A].monitor("r2", pid(A, 1), pid(B, 5), B, node_up=False))
    assert sorted((d.ref, d.reason) for d in pair.downs) == [
        ("r1", "noproc"),
        ("r2", "noconnection"),
    ]
    assert pair.cores[A].counts().outgoing == 0


def test_node_loss_gives_noconnection_and_drops_the_other_direction() -> None:
    pair = Pair()
    pair.alive[A].add(pid(A, 1))
    pair.alive[B].add(pid(B, 5))
    pair.run(A, pair.cores[A].monitor("r1", pid(A, 1), pid(B, 5), B, node_up=True))
    pair.run(B, pair.cores[B].monitor("r2", pid(B, 5), pid(A, 1), A, node_up=True))
    pair.cores[A].monitor_node(pid(A, 1), B, on=True)
    pair.cores[A].monitor_nodes(pid(A, 2), on=True)
    pair.run(A, pair.cores[A].node_down(B, "connection lost"))
    assert [(d.ref, d.reason) for d in pair.downs] == [("r1", "noconnection")]
    assert {(e.watcher, e.up) for e in pair.node_events} == {
        (pid(A, 1), False),
        (pid(A, 2), False),
    }
    counts = pair.cores[A].counts()
    assert (counts.outgoing, counts.incoming, counts.node_monitors) == (0, 0, 0)


def test_watcher_exit_cancels_its_remote_monitors() -> None:
    pair = Pair()
    pair.alive[B].add(pid(B, 5))
    pair.run(A, pair.cores[A].monitor("r1", pid(A, 1), pid(B, 5), B, node_up=True))
    effects = pair.cores[A].process_exited(pid(A, 1), "normal")
    assert [type(e) for e in effects] == [Send]
    pair.run(A, effects)
    assert pair.cores[B].counts().incoming == 0
    assert pair.downs == []


def test_demonitor_cancels_on_both_sides() -> None:
    pair = Pair()
    pair.alive[B].add(pid(B, 5))
    pair.run(A, pair.cores[A].monitor("r1", pid(A, 1), pid(B, 5), B, node_up=True))
    assert pair.cores[A].holds("r1")
    pair.run(A, pair.cores[A].demonitor("r1"))
    assert not pair.cores[A].holds("r1")
    assert pair.cores[B].counts().incoming == 0
    pair.run(B, pair.cores[B].process_exited(pid(B, 5), "normal"))
    assert pair.downs == []


def test_node_monitors_stack() -> None:
    core = Monitors(A, resolve=lambda _: None)
    core.monitor_node(pid(A, 1), B, on=True)
    core.monitor_node(pid(A, 1), B, on=True)
    core.monitor_node(pid(A, 1), B, on=False)
    events = core.node_down(B, "gone")
    assert len(events) == 1
    assert core.counts().node_monitors == 0


def test_forged_and_stray_messages_are_ignored() -> None:
    pair = Pair()
    pair.alive[B].add(pid(B, 5))
    core = pair.cores[B]
    # A watcher pid that is not on the sending node.
    assert (
        core.on_message(A, MonitorRequest(ref="x", watcher=pid(B, 1), target=pid(B, 5)))
        == []
    )
    assert (
        core.on_message(A, MonitorRequest(ref="x", watcher="junk", target=pid(B, 5)))
        == []
    )
    assert core.on_message(A, Demonitor(ref="unknown")) == []
    assert core.on_message(A, DownNotice(ref="unknown", reason="normal")) == []
    assert core.on_message(A, "garbage") == []
    assert core.ignored_count == 5
    assert core.counts().incoming == 0


class MonitorMachine(RuleBasedStateMachine):
    """Random monitor traffic between two nodes never leaks a monitor."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()
        self.next_id = 0
        self.refs: list[tuple[str, str]] = []  # (node of the watcher, ref)

    def _new_pid(self, node: str) -> str:
        self.next_id += 1
        new = pid(node, self.next_id)
        self.pair.alive[node].add(new)
        return new

    @rule(
        watcher_node=st.sampled_from([A, B]),
        target_node=st.sampled_from([A, B]),
        dead=st.booleans(),
    )
    def monitor(self, watcher_node: str, target_node: str, dead: bool) -> None:
        watcher = self._new_pid(watcher_node)
        target = pid(target_node, 10_000) if dead else self._new_pid(target_node)
        ref = f"ref{self.next_id}"
        self.refs.append((watcher_node, ref))
        core = self.pair.cores[watcher_node]
        self.pair.run(
            watcher_node, core.monitor(ref, watcher, target, target_node, node_up=True)
        )

    @rule(data=st.data())
    def exit_process(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from([A, B]))
        alive = sorted(self.pair.alive[node])
        if not alive:
            return
        victim = data.draw(st.sampled_from(alive))
        self.pair.alive[node].discard(victim)
        self.pair.run(node, self.pair.cores[node].process_exited(victim, "normal"))

    @rule(data=st.data())
    def demonitor(self, data: st.DataObject) -> None:
        if not self.refs:
            return
        node, ref = data.draw(st.sampled_from(self.refs))
        self.pair.run(node, self.pair.cores[node].demonitor(ref))

    @rule(node=st.sampled_from([A, B]))
    def lose_the_other_node(self, node: str) -> None:
        other = B if node == A else A
        self.pair.run(
            node, self.pair.cores[node].node_down(other, "lost"), deliver=False
        )
        self.pair.run(
            other, self.pair.cores[other].node_down(node, "lost"), deliver=False
        )
        self.pair.in_flight.clear()  # the connection died with them

    @invariant()
    def monitors_are_held_on_both_sides_or_neither(self) -> None:
        a, b = self.pair.cores[A], self.pair.cores[B]
        assert set(a._outgoing) == set(b._incoming)
        assert set(b._outgoing) == set(a._incoming)

    @invariant()
    def at_most_one_down_per_monitor(self) -> None:
        refs = [down.ref for down in self.pair.downs]
        assert len(refs) == len(set(refs))

    def teardown(self) -> None:
        for node in (A, B):
            for victim in sorted(self.pair.alive[node]):
                self.pair.run(
                    node, self.pair.cores[node].process_exited(victim, "normal")
                )
            self.pair.alive[node].clear()
        for node in (A, B):
            counts = self.pair.cores[node].counts()
            assert (counts.local, counts.outgoing, counts.incoming) == (0, 0, 0)


TestMonitorMachine = MonitorMachine.TestCase
