"""Goal: every membership strategy, driven by the real shell, assembles a
cluster, reports nodes up and down through one path (callbacks, monitors,
snapshot), and detects failures: a lost connection at once, a silent peer after
the heartbeat timeout.

Method: whole clusters of real nodes in one trio process over
``runtime.testing.MemoryNetwork`` under ``MockClock`` (autojump), so heartbeat
timeouts of seconds cost no real time. Nodes join through seeds
(``NodeConfig.peers``), as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

import runtime
from runtime import Node, NodeConfig, open_node
from runtime.config import FailureDetectorConfig, MembershipConfig
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"


def names(count: int) -> list[str]:
    return [f"n{i}@sim" for i in range(count)]


@asynccontextmanager
async def cluster(
    network: MemoryNetwork,
    count: int,
    strategy: str,
    *,
    heartbeat_timeout: float = 3.0,
    roles: dict[str, str] | None = None,
) -> AsyncIterator[dict[str, Node]]:
    membership = MembershipConfig(
        strategy=strategy,
        failure_detector=FailureDetectorConfig(
            heartbeat_interval=0.5, heartbeat_timeout=heartbeat_timeout
        ),
        join_retry_interval=1.0,
    )
    async with AsyncExitStack() as stack:
        nodes: dict[str, Node] = {}
        seeds: list[runtime.NodeSpec] = []
        for name in names(count):
            config = NodeConfig(
                name=name,
                secret=SECRET,
                listen=("sim", 0),
                membership=membership,
                peers=seeds if strategy != "static" else [],
                role=(roles or {}).get(name, "peer"),
            )
            node = await stack.enter_async_context(open_node(config, network=network))
            nodes[name] = node
            if not seeds:
                seeds = [node.spec()]
        yield nodes


async def until(predicate: Callable[[], bool], seconds: float = 120) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.05)


def symmetric_and_connected(nodes: dict[str, Node]) -> bool:
    views = {
        name: set(node.membership.core.neighbours()) for name, node in nodes.items()
    }
    for name, view in views.items():
        if not view:
            return False
        for other in view:
            if name not in views.get(other, set()):
                return False
    seen = {next(iter(views))}
    frontier = list(seen)
    while frontier:
        for other in views[frontier.pop()]:
            if other not in seen:
                seen.add(other)
                frontier.append(other)
    return seen == set(views)


async def test_hyparview_converges_to_symmetric_connected_views(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=3)
    async with cluster(network, 12, "hyparview") as nodes:
        await until(lambda: symmetric_and_connected(nodes))
        # Up means linked and connected: it equals the active view once quiet.
        await until(
            lambda: all(
                node.membership.up_nodes() == node.membership.core.neighbours()
                for node in nodes.values()
            )
        )


async def test_a_stopped_node_is_reported_down_at_once_and_monitors_fire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=4)
    async with AsyncExitStack() as stack:
        nodes = await stack.enter_async_context(cluster(network, 3, "hyparview"))
        a, _b, c = nodes.values()
        await until(lambda: len(a.membership.up_nodes()) == 2)
        downs: list[str] = []
        a.membership.on_down(None, downs.append)
        got: list[object] = []

        async def victim() -> None:
            await trio.sleep_forever()

        async def watcher(target: runtime.Pid) -> None:
            runtime.monitor(target)
            runtime.monitor_node(c.name)
            got.append(await runtime.receive())
            got.append(await runtime.receive())

        target = c.spawn(victim)
        await until(lambda: c.membership.is_up(a.name))
        a.spawn(watcher, target)
        await until(lambda: c.monitor_counts().incoming == 1)
        started = trio.current_time()
        await c.stop()
        await until(lambda: len(got) == 2)
        # Stopping ends the victim first ("shutdown"), then the node goes.
        kinds = sorted(type(m).__name__ for m in got)
        assert kinds == ["Down", "NodeDown"]
        down = next(m for m in got if isinstance(m, runtime.Down))
        assert down.reason in ("shutdown", "noconnection")
        assert trio.current_time() - started < 1.0  # connection loss, not heartbeats
        await until(lambda: downs == [c.name])
        assert a.monitor_counts() == runtime.MonitorCounts(0, 0, 0, 0, 0)


async def test_a_silent_peer_is_declared_down_after_the_heartbeat_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=5)
    async with cluster(network, 3, "hyparview", heartbeat_timeout=3.0) as nodes:
        a, _b, c = nodes.values()
        await until(lambda: len(a.membership.up_nodes()) == 2)
        downs: list[tuple[str, float]] = []
        a.membership.on_down(None, lambda n: downs.append((n, trio.current_time())))
        cut = trio.current_time()
        # A silent partition: frames are held, connections stay open.
        network.partition([a.name], [c.name])
        await until(lambda: bool(downs))
        assert downs[0][0] == c.name
        # Documented bound: the timeout plus two heartbeat intervals (the last
        # frame is noticed at a tick, and silence is checked at ticks).
        assert 3.0 <= downs[0][1] - cut <= 3.0 + 2 * 0.5 + 0.1
        network.heal()
        await until(lambda: symmetric_and_connected(nodes))


async def test_monitoring_a_process_on_a_node_that_is_not_up_gives_noconnection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=6)
    async with cluster(network, 1, "hyparview") as nodes:
        (a,) = nodes.values()
        got: list[object] = []

        async def watcher() -> None:
            ref = runtime.monitor("partisan:pid:ghost@sim:1.1")
            got.append(await runtime.receive())
            got.append(ref)
            runtime.monitor_node("ghost@sim")
            got.append(await runtime.receive())

        a.spawn(watcher)
        await until(lambda: len(got) == 3)
        down, ref, node_down = got
        assert down == runtime.Down(
            ref=ref,
            target=runtime.Pid.from_uri("partisan:pid:ghost@sim:1.1"),
            reason="noconnection",
        )
        assert node_down == runtime.NodeDown(node="ghost@sim", reason="noconnection")


async def test_injected_partition_cuts_both_ways_and_heals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=7)
    async with cluster(network, 3, "hyparview", heartbeat_timeout=2.0) as nodes:
        a, b, c = nodes.values()
        await until(lambda: symmetric_and_connected(nodes))
        await until(lambda: a.membership.is_up(c.name) and c.membership.is_up(a.name))
        ref = a.inject_partition([c.name], ttl=30.0)
        assert [p.nodes for p in a.partitions()] == [frozenset({c.name})]
        # The injecting side closes its links at once; the other side notices
        # the silence within its heartbeat timeout.
        await until(lambda: not a.membership.is_up(c.name), seconds=0.5)
        await until(lambda: not c.membership.is_up(a.name), seconds=2.0 + 1.0 + 0.2)
        assert a.send_checked(("anyone", c.name), "x") in (
            runtime.SendStatus.PARTITIONED,
        )
        # b still reaches both.
        assert b.membership.is_up(a.name)
        assert b.membership.is_up(c.name)
        assert a.resolve_partition(ref)
        assert not a.resolve_partition(ref)
        assert a.partitions() == []
        await until(lambda: symmetric_and_connected(nodes))


async def test_partition_ttl_expires(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=8)
    async with cluster(network, 2, "hyparview") as nodes:
        a, b = nodes.values()
        await until(lambda: a.membership.is_up(b.name))
        a.inject_partition([b.name], ttl=5.0)
        await until(lambda: not a.membership.is_up(b.name))
        started = trio.current_time()
        await until(lambda: a.partitions() == [])
        assert trio.current_time() - started <= 5.1
        await until(lambda: a.membership.is_up(b.name) and b.membership.is_up(a.name))


@pytest.mark.parametrize(
    ("direction", "action", "expected"),
    [
        ("send", "drop", ["keep"]),
        ("receive", "drop", ["keep"]),
        ("send", "duplicate", ["dup", "dup", "keep"]),
        ("receive", "duplicate", ["dup", "dup", "keep"]),
    ],
)
async def test_interposition_drops_or_duplicates_matching_messages(
    autojump_clock: trio.testing.MockClock,
    direction: str,
    action: str,
    expected: list[str],
) -> None:
    network = MemoryNetwork(seed=9)
    async with cluster(network, 2, "hyparview") as nodes:
        a, b = nodes.values()
        await until(lambda: a.membership.is_up(b.name) and b.membership.is_up(a.name))
        got: list[object] = []

        async def inbox() -> None:
            while True:
                got.append(await runtime.receive())

        b.spawn(inbox, name="inbox")
        side = a if direction == "send" else b
        ref = side.interpose(direction, lambda node, m: m in ("drop", "dup"), action)
        for message in ("drop", "dup", "keep") if action == "drop" else ("dup", "keep"):
            a.send(("inbox", b.name), message)
        await trio.sleep(1.0)
        assert sorted(got) == sorted(expected)  # type: ignore[type-var]
        assert side.remove_interposition(ref)
        a.send(("inbox", b.name), "dup")
        await until(lambda: len(got) == len(expected) + 1)


async def test_interposition_delays_matching_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=10)
    async with cluster(network, 2, "hyparview") as nodes:
        a, b = nodes.values()
        await until(lambda: a.membership.is_up(b.name))
        got: list[tuple[object, float]] = []

        async def inbox() -> None:
            while True:
                got.append((await runtime.receive(), trio.current_time()))

        b.spawn(inbox, name="inbox")
        a.interpose("send", lambda node, m: m == "slow", "delay", delay=2.0)
        started = trio.current_time()
        a.send(("inbox", b.name), "slow")
        a.send(("inbox", b.name), "fast")
        await until(lambda: len(got) == 2)
        assert [m for m, _ in got] == ["fast", "slow"]
        assert got[1][1] - started >= 2.0 - 1e-9


def all_up(nodes: dict[str, Node]) -> bool:
    return all(len(n.membership.up_nodes()) == len(nodes) - 1 for n in nodes.values())


def listed(node: Node) -> dict[str, tuple[tuple[str, int], ...]]:
    return {spec.name: spec.addresses for spec in node.membership.members()}


async def test_full_mesh_all_see_all_and_a_restart_replaces_the_old_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=31)
    async with cluster(network, 5, "full_mesh") as nodes:
        everyone = set(nodes)
        await until(lambda: all(set(listed(n)) == everyone for n in nodes.values()))
        await until(lambda: all_up(nodes))
        first = nodes[names(5)[0]]
        victim = nodes[names(5)[3]]
        old_address = victim.address
        downs: list[str] = []
        first.membership.on_down(None, downs.append)
        await victim.stop()
        await until(lambda: downs == [victim.name])
        # Restart under the same name: a new address and a new incarnation.
        config = attrs.evolve(victim.config, peers=[first.spec()])
        async with open_node(config, network=network) as again:
            assert again.address != old_address
            await until(
                lambda: all(
                    listed(n).get(victim.name) == (again.address,)
                    for n in [*nodes.values(), again]
                    if n is not victim
                )
            )
            await until(lambda: first.membership.is_up(victim.name))
            for node in nodes.values():
                if node is not victim:
                    names_listed = [s.name for s in node.membership.members()]
                    assert names_listed.count(victim.name) == 1


async def test_full_mesh_leave_reaches_everyone_before_the_links_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=32)
    async with cluster(network, 4, "full_mesh") as nodes:
        a, b, c, d = nodes.values()
        await until(lambda: all_up(nodes))
        await d.membership.leave()
        assert [s.name for s in d.membership.members()] == [d.name]
        await until(lambda: all(d.name not in listed(n) for n in (a, b, c)))
        await until(lambda: all(not n.membership.is_up(d.name) for n in (a, b, c)))
        assert d.membership.up_nodes() == []
        # Remove another node: it is told, resets, and everyone forgets it.
        await a.membership.leave(c.name)
        await until(lambda: all(c.name not in listed(n) for n in (a, b)))
        await until(lambda: [s.name for s in c.membership.members()] == [c.name])


async def test_update_members_and_static_membership(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=33)
    async with cluster(network, 3, "static") as nodes:
        a, b, c = nodes.values()
        for node in nodes.values():
            node.membership.update_members([n.spec() for n in nodes.values()])
        await until(lambda: all_up(nodes))
        a.membership.update_members([b.spec()])
        await until(lambda: sorted(listed(a)) == sorted([a.name, b.name]))
        await until(lambda: not a.membership.is_up(c.name))


async def test_hyparview_refuses_update_members_and_removing_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=35)
    async with cluster(network, 2, "hyparview") as nodes:
        a, b = nodes.values()
        with pytest.raises(ValueError, match="update_members"):
            a.membership.update_members([b.spec()])
        with pytest.raises(ValueError, match="cannot remove"):
            await a.membership.leave(b.name)


async def test_client_server_clients_link_only_to_servers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=34)
    roles = {
        "n0@sim": "server",
        "n1@sim": "server",
        "n2@sim": "client",
        "n3@sim": "client",
    }
    async with cluster(network, 4, "client_server", roles=roles) as nodes:
        servers = {"n0@sim", "n1@sim"}
        await until(
            lambda: (
                all(len(listed(n)) == 4 for n in nodes.values())
                and all(
                    set(n.membership.up_nodes())
                    == ((set(nodes) - {name}) if name in servers else servers)
                    for name, n in nodes.items()
                )
            )
        )
