"""Goal: the link bookkeeping gives exit signals both ways with the right reason
and leaves no link behind on either node, whatever ends it.

Method: two ``Links`` cores (nodes a and b) with process tables as sets and a
harness that plays the driver: ``Send`` effects go into a FIFO queue per
direction (one connection each way, so order is kept), and a ``DeliverExit``
kills its target unless the target traps exits or the reason is ``normal``
(the cascade a real node runs). A hypothesis state machine plays random link /
unlink / exit / node-loss sequences with messages in flight, delivered one at a
time in any interleaving of the two directions; when nothing is in flight the
links must be symmetric and only between live processes, and at the end every
count is zero.
"""

from __future__ import annotations

from collections import deque

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from runtime.core.effects import Send
from runtime.core.links import (
    DeliverExit,
    LinkCounts,
    LinkExit,
    LinkRequest,
    Links,
    LinksEffect,
    Unlink,
    node_of,
)

A, B = "a@h", "b@[::1]"


def pid(node: str, n: int) -> str:
    return f"partisan:pid:{node}:1.{n}"


class Pair:
    """Two cores, their live processes, in-flight messages, delivered signals."""

    def __init__(self) -> None:
        self.alive: dict[str, set[str]] = {A: set(), B: set()}
        self.trapping: set[str] = set()
        self.cores = {
            node: Links(node, is_alive=self.alive[node].__contains__) for node in (A, B)
        }
        self.signals: list[DeliverExit] = []
        self.queues: dict[tuple[str, str], deque[object]] = {
            (A, B): deque(),
            (B, A): deque(),
        }

    def run(self, node: str, effects: list[LinksEffect]) -> None:
        for effect in effects:
            match effect:
                case Send(to=to, message=message):
                    self.queues[(node, to)].append(message)
                case DeliverExit(target=target, reason=reason):
                    self.signals.append(effect)
                    if target in self.alive[node] and (
                        target not in self.trapping and reason != "normal"
                    ):
                        self.exit(node, target, "killed-by-link")

    def exit(self, node: str, victim: str, reason: object) -> None:
        self.alive[node].discard(victim)
        self.trapping.discard(victim)
        self.run(node, self.cores[node].process_exited(victim, reason))

    def deliver_one(self, sender: str, receiver: str) -> bool:
        queue = self.queues[(sender, receiver)]
        if not queue:
            return False
        message = queue.popleft()
        self.run(receiver, self.cores[receiver].on_message(sender, message))
        return True

    def pump(self) -> None:
        while self.deliver_one(A, B) or self.deliver_one(B, A):
            pass

    def quiet(self) -> bool:
        return not any(self.queues.values())


def test_local_link_is_two_way_and_exit_signals_the_other_end() -> None:
    pair = Pair()
    pair.alive[A] |= {pid(A, 1), pid(A, 2)}
    core = pair.cores[A]
    assert core.link(pid(A, 1), pid(A, 2), node_up=True) == []
    assert core.linked(pid(A, 2)) == [pid(A, 1)]
    assert core.counts() == LinkCounts(local=1, remote=0)
    effects = core.process_exited(pid(A, 2), "boom")
    assert effects == [DeliverExit(target=pid(A, 1), sender=pid(A, 2), reason="boom")]
    assert core.counts() == LinkCounts(0, 0)


def test_linking_twice_or_to_oneself_does_nothing() -> None:
    pair = Pair()
    pair.alive[A] |= {pid(A, 1), pid(A, 2)}
    core = pair.cores[A]
    core.link(pid(A, 1), pid(A, 2), node_up=True)
    assert core.link(pid(A, 2), pid(A, 1), node_up=True) == []
    assert core.link(pid(A, 1), pid(A, 1), node_up=True) == []
    assert core.counts() == LinkCounts(local=1, remote=0)


def test_linking_a_dead_process_gives_noproc() -> None:
    core = Links(A, is_alive=lambda _: False)
    assert core.link(pid(A, 1), pid(A, 9), node_up=True) == [
        DeliverExit(target=pid(A, 1), sender=pid(A, 9), reason="noproc")
    ]
    assert core.counts() == LinkCounts(0, 0)


def test_remote_link_request_and_exit_travel_keyed_by_the_process() -> None:
    pair = Pair()
    pair.alive[A].add(pid(A, 1))
    pair.alive[B].add(pid(B, 5))
    effects = pair.cores[A].link(pid(A, 1), pid(B, 5), node_up=True)
    assert effects == [
        Send(
            to=B,
            message=LinkRequest(sender=pid(A, 1), target=pid(B, 5)),
            channel="default",
            key=pid(A, 1),
        )
    ]
    pair.run(A, effects)
    pair.pump()
    assert pair.cores[B].linked(pid(B, 5)) == [pid(A, 1)]
    pair.alive[B].discard(pid(B, 5))
    effects = pair.cores[B].process_exited(pid(B, 5), "crashed")
    assert effects == [
        Send(
            to=A,
            message=LinkExit(sender=pid(B, 5), target=pid(A, 1), reason="crashed"),
            channel="default",
            key=pid(B, 5),
        )
    ]
    pair.run(B, effects)
    pair.trapping.add(pid(A, 1))
    pair.pump()
    assert pair.signals[-1] == DeliverExit(
        target=pid(A, 1), sender=pid(B, 5), reason="crashed"
    )
    assert pair.cores[A].counts() == pair.cores[B].counts() == LinkCounts(0, 0)


def test_remote_link_to_a_dead_process_answers_noproc() -> None:
    pair = Pair()
    pair.alive[A].add(pid(A, 1))
    pair.trapping.add(pid(A, 1))
    pair.run(A, pair.cores[A].link(pid(A, 1), pid(B, 5), node_up=True))
    pair.pump()
    assert [(s.target, s.reason) for s in pair.signals] == [(pid(A, 1), "noproc")]
    assert pair.cores[A].counts() == LinkCounts(0, 0)


def test_link_to_a_node_that_is_down_gives_noconnection_at_once() -> None:
    core = Links(A, is_alive=lambda _: True)
    assert core.link(pid(A, 1), pid(B, 5), node_up=False) == [
        DeliverExit(target=pid(A, 1), sender=pid(B, 5), reason="noconnection")
    ]


def test_node_loss_ends_every_link_across_it_with_noconnection() -> None:
    pair = Pair()
    pair.alive[A] |= {pid(A, 1), pid(A, 2)}
    pair.alive[B].add(pid(B, 5))
    pair.trapping |= {pid(A, 1), pid(A, 2)}
    pair.run(A, pair.cores[A].link(pid(A, 1), pid(B, 5), node_up=True))
    pair.run(A, pair.cores[A].link(pid(A, 2), pid(B, 5), node_up=True))
    pair.pump()
    effects = pair.cores[A].node_down(B)
    assert sorted((e.target, e.reason) for e in effects) == [  # type: ignore[union-attr]
        (pid(A, 1), "noconnection"),
        (pid(A, 2), "noconnection"),
    ]
    pair.cores[B].node_down(A)
    assert pair.cores[A].counts() == pair.cores[B].counts() == LinkCounts(0, 0)


def test_unlink_crossing_an_exit_signal_drops_the_signal() -> None:
    pair = Pair()
    pair.alive[A].add(pid(A, 1))
    pair.alive[B].add(pid(B, 5))
    pair.run(A, pair.cores[A].link(pid(A, 1), pid(B, 5), node_up=True))
    pair.pump()
    # b's process dies while a's unlink is on its way: the signal crosses it.
    pair.run(A, pair.cores[A].unlink(pid(A, 1), pid(B, 5)))
    pair.exit(B, pid(B, 5), "boom")
    pair.pump()
    assert pair.signals == []
    assert pair.alive[A] == {pid(A, 1)}
    assert pair.cores[A].counts() == pair.cores[B].counts() == LinkCounts(0, 0)


def test_forged_and_stray_messages_are_ignored() -> None:
    core = Links(B, is_alive=lambda _: True)
    # The sender pid is not on the sending node.
    assert core.on_message(A, LinkRequest(sender=pid(B, 1), target=pid(B, 5))) == []
    # The target is not on this node.
    assert core.on_message(A, LinkRequest(sender=pid(A, 1), target=pid(A, 5))) == []
    assert core.on_message(A, Unlink(sender=pid(A, 1), target=pid(B, 5))) == []
    assert (
        core.on_message(A, LinkExit(sender=pid(A, 1), target=pid(B, 5), reason="x"))
        == []
    )
    assert core.on_message(A, "garbage") == []
    assert core.ignored_count == 5
    assert core.counts() == LinkCounts(0, 0)


def test_node_of_parses_bracketed_hosts() -> None:
    assert node_of(pid(B, 3)) == B
    assert node_of("partisan:ref:a@h:1.2") == ""
    assert node_of("nonsense") == ""


class LinkMachine(RuleBasedStateMachine):
    """Random link traffic between two nodes, with messages in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()
        self.next_id = 0
        self.known: list[tuple[str, str]] = []

    def _new_pid(self, node: str, *, trap: bool) -> str:
        self.next_id += 1
        new = pid(node, self.next_id)
        self.pair.alive[node].add(new)
        if trap:
            self.pair.trapping.add(new)
        self.known.append((node, new))
        return new

    @rule(node=st.sampled_from([A, B]), trap=st.booleans())
    def spawn(self, node: str, trap: bool) -> None:
        self._new_pid(node, trap=trap)

    @rule(data=st.data(), node_up=st.booleans())
    def link(self, data: st.DataObject, node_up: bool) -> None:
        if not self.known:
            return
        node, a = data.draw(st.sampled_from(self.known))
        if a not in self.pair.alive[node]:
            return
        _, b = data.draw(st.sampled_from(self.known))
        up = node_up or node_of(b) == node
        self.pair.run(node, self.pair.cores[node].link(a, b, node_up=up))

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        if not self.known:
            return
        node, a = data.draw(st.sampled_from(self.known))
        if a not in self.pair.alive[node]:
            return
        _, b = data.draw(st.sampled_from(self.known))
        self.pair.run(node, self.pair.cores[node].unlink(a, b))

    @rule(data=st.data(), reason=st.sampled_from(["normal", "boom"]))
    def exit_process(self, data: st.DataObject, reason: str) -> None:
        node = data.draw(st.sampled_from([A, B]))
        alive = sorted(self.pair.alive[node])
        if alive:
            self.pair.exit(node, data.draw(st.sampled_from(alive)), reason)

    @rule(sender=st.sampled_from([A, B]))
    def deliver_one(self, sender: str) -> None:
        self.pair.deliver_one(sender, B if sender == A else A)

    @rule(node=st.sampled_from([A, B]))
    def lose_the_other_node(self, node: str) -> None:
        other = B if node == A else A
        # The connection dies with what was on it, both ways.
        for queue in self.pair.queues.values():
            queue.clear()
        self.pair.run(node, self.pair.cores[node].node_down(other))
        self.pair.run(other, self.pair.cores[other].node_down(node))
        for queue in self.pair.queues.values():
            queue.clear()

    @invariant()
    def quiet_links_are_symmetric_and_between_live_processes(self) -> None:
        if not self.pair.quiet():
            return
        ends: set[tuple[str, str]] = set()
        for node in (A, B):
            core = self.pair.cores[node]
            for local in core._links:
                assert local in self.pair.alive[node], f"{local} is dead but linked"
                ends |= {(local, other) for other in core.linked(local)}
        for a, b in ends:
            assert (b, a) in ends, f"{a} -> {b} is held on one side only"

    def teardown(self) -> None:
        pair = self.pair
        pair.pump()
        for node in (A, B):
            for victim in sorted(pair.alive[node]):
                if victim in pair.alive[node]:
                    pair.exit(node, victim, "normal")
        pair.pump()
        for node in (A, B):
            assert pair.cores[node].counts() == LinkCounts(0, 0)


TestLinkMachine = LinkMachine.TestCase
