"""Goal: the static membership core links exactly the configured members.

Method: single cores fed commands by hand, reading the effects: ``start`` links
every configured member (our own name skipped), ``update_members`` links the
new, unlinks the gone and reconnects a member whose spec changed (no Down/Up),
``leave`` unlinks everything and finishes, ``join`` is refused, messages and
connection events change nothing, and ``client_server_link`` keeps clients apart.
After each step the ``NeighbourUp`` / ``NeighbourDown`` effects must pair up and
equal ``neighbours()``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from runtime.core.effects import (
    Connect,
    Disconnect,
    Effect,
    NeighbourDown,
    NeighbourUp,
)
from runtime.core.full_mesh import client_server_link
from runtime.core.membership import MembershipCore
from runtime.core.spec import NodeSpec
from runtime.core.static import MESSAGE_TYPES, Static


def spec(name: str, port: int = 0, role: str = "peer") -> NodeSpec:
    return NodeSpec(
        name=f"{name}@sim",
        addresses=[("10.0.0.1", port or 9000 + sum(name.encode()))],
        role=role,
    )


class Tracker:
    """Follows one core's NeighbourUp / NeighbourDown effects."""

    def __init__(self, core: Static) -> None:
        self.core = core
        self.up: set[str] = set()

    def apply(self, effects: Iterable[Effect]) -> list[Effect]:
        effects = list(effects)
        for effect in effects:
            match effect:
                case NeighbourUp(spec=peer):
                    assert peer.name not in self.up
                    self.up.add(peer.name)
                case NeighbourDown(peer=peer):
                    assert peer in self.up
                    self.up.discard(peer)
        if not self.core.left:
            assert sorted(self.up) == self.core.neighbours()
        return effects


def test_static_is_a_membership_core() -> None:
    core: MembershipCore = Static(spec("a"), [])
    assert core.members() == [spec("a")]
    assert MESSAGE_TYPES == ()


def test_start_links_every_configured_member_but_us() -> None:
    core = Static(spec("a"), [spec("c"), spec("a", 1), spec("b")])
    # Before start nothing is linked, but the members are known.
    assert core.neighbours() == []
    assert [s.name for s in core.members()] == ["a@sim", "b@sim", "c@sim"]
    assert core.member("a@sim") == spec("a")
    effects = Tracker(core).apply(core.start(0.0))
    assert effects == [
        Connect(spec=spec("b")),
        NeighbourUp(spec=spec("b")),
        Connect(spec=spec("c")),
        NeighbourUp(spec=spec("c")),
    ]
    assert core.neighbours() == ["b@sim", "c@sim"]
    with pytest.raises(ValueError, match="once"):
        core.start(0.0)


def test_update_members_links_new_unlinks_gone_reconnects_moved() -> None:
    core = Static(spec("a"), [spec("b"), spec("c")])
    tracker = Tracker(core)
    tracker.apply(core.start(0.0))
    effects = tracker.apply(
        core.update_members([spec("a"), spec("c", 7777), spec("d")], 1.0)
    )
    assert effects == [
        Connect(spec=spec("c", 7777)),
        Connect(spec=spec("d")),
        NeighbourUp(spec=spec("d")),
        Disconnect(peer="b@sim"),
        NeighbourDown(peer="b@sim"),
    ]
    assert core.member("c@sim") == spec("c", 7777)
    assert core.member("b@sim") is None
    stats = core.statistics()
    assert (stats.neighbour_up_count, stats.neighbour_down_count) == (3, 1)
    assert stats.address_change_count == 1
    assert core.update_members([spec("c", 7777), spec("d")], 2.0) == []


def test_update_members_before_start_only_replaces_the_set() -> None:
    core = Static(spec("a"), [spec("b")])
    assert core.update_members([spec("c")], 0.0) == []
    assert Tracker(core).apply(core.start(0.0)) == [
        Connect(spec=spec("c")),
        NeighbourUp(spec=spec("c")),
    ]


def test_bad_member_lists_are_refused_and_change_nothing() -> None:
    with pytest.raises(ValueError, match="twice"):
        Static(spec("a"), [spec("b"), spec("b", 1)])
    core = Static(spec("a"), [spec("b")])
    with pytest.raises(ValueError, match="NodeSpec"):
        core.update_members(["b@sim"], 0.0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="twice"):
        core.update_members([spec("c"), spec("c")], 0.0)
    assert [s.name for s in core.members()] == ["a@sim", "b@sim"]


def test_join_is_refused() -> None:
    core = Static(spec("a"), [])
    with pytest.raises(ValueError, match="update_members"):
        core.join(spec("b"), 0.0)


def test_leave_unlinks_everything_and_finishes() -> None:
    core = Static(spec("a"), [spec("b"), spec("c")])
    tracker = Tracker(core)
    tracker.apply(core.start(0.0))
    effects = tracker.apply(core.leave(1.0))
    assert effects == [
        Disconnect(peer="b@sim"),
        NeighbourDown(peer="b@sim"),
        Disconnect(peer="c@sim"),
        NeighbourDown(peer="c@sim"),
    ]
    assert tracker.up == set()
    assert core.left
    assert core.members() == [spec("a")]
    assert core.leave(2.0) == []
    assert core.start(2.0) == []
    with pytest.raises(ValueError, match="left"):
        core.update_members([spec("b")], 2.0)


def test_messages_timers_and_connection_events_change_nothing() -> None:
    core = Static(spec("a"), [spec("b")])
    core.start(0.0)
    assert core.on_message("b@sim", object(), 0.0) == []
    assert core.on_timer("anything", 0.0) == []
    assert core.on_connection_lost("b@sim", 0.0) == []
    assert core.on_connect_failed("b@sim", 0.0) == []
    assert core.neighbours() == ["b@sim"]
    stats = core.statistics()
    assert stats.ignored_message_count == 1
    assert (stats.connection_lost_count, stats.connect_failed_count) == (1, 1)
    assert (stats.member_count, stats.neighbour_count) == (2, 1)


def test_client_server_link_keeps_clients_apart() -> None:
    members = [
        spec("s", role="server"),
        spec("c1", role="client"),
        spec("c2", role="client"),
    ]
    client = Static(spec("c1", role="client"), members, link=client_server_link)
    server = Static(spec("s", role="server"), members, link=client_server_link)
    Tracker(client).apply(client.start(0.0))
    Tracker(server).apply(server.start(0.0))
    assert client.neighbours() == ["s@sim"]
    assert server.neighbours() == ["c1@sim", "c2@sim"]
    assert len(client.members()) == len(server.members()) == 3
