"""Goal: a broadcast group delivers every message to every live node, over
full-mesh and HyParView membership, prunes itself to a tree, and repairs what a
partition kept from a node.

Method: clusters on ``MemoryNetwork`` under ``MockClock``; each node opens the
same group with a dict-backed handler. Counts of payload copies received tell
whether the tree formed (relative message redundancy near 0 once pruned).
One test runs over real TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from runtime import Node, NodeConfig, open_node
from runtime.config import FailureDetectorConfig, MembershipConfig
from runtime.core.plumtree import MessageId
from runtime.shell.broadcast import BroadcastGroup, open_broadcast_group
from runtime.shell.network import Network
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"


class Store:
    """A handler: message id -> payload."""

    def __init__(self) -> None:
        self.data: dict[MessageId, object] = {}
        self.merges = 0

    def is_stale(self, message_id: MessageId) -> bool:
        return message_id in self.data

    def graft(self, message_id: MessageId) -> object | None:
        return self.data.get(message_id)

    def merge(self, message_id: MessageId, payload: object) -> bool:
        self.merges += 1
        if message_id in self.data:
            return False
        self.data[message_id] = payload
        return True


@asynccontextmanager
async def cluster(
    network: Network, count: int, strategy: str, host: str = "sim"
) -> AsyncIterator[list[tuple[Node, BroadcastGroup, Store]]]:
    membership = MembershipConfig(
        strategy=strategy,
        failure_detector=FailureDetectorConfig(
            heartbeat_interval=0.5, heartbeat_timeout=2.0
        ),
        join_retry_interval=1.0,
    )
    async with AsyncExitStack() as stack:
        members: list[tuple[Node, BroadcastGroup, Store]] = []
        seeds: list[object] = []
        for i in range(count):
            config = NodeConfig(
                name=f"b{i}@{'127.0.0.1' if host != 'sim' else 'sim'}",
                secret=SECRET,
                listen=(host, 0),
                membership=membership,
                peers=seeds,  # type: ignore[arg-type]
            )
            node = await stack.enter_async_context(open_node(config, network=network))
            store = Store()
            members.append((node, open_broadcast_group(node, "test", store), store))
            if not seeds:
                seeds = [node.spec()]
        yield members


async def until(predicate: Callable[[], bool], seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.05)


def everyone_up(members: list[tuple[Node, BroadcastGroup, Store]]) -> bool:
    return all(
        len(node.membership.up_nodes()) == len(members) - 1 for node, _, _ in members
    )


@pytest.mark.parametrize("strategy", ["full_mesh", "hyparview"])
async def test_every_node_delivers_and_the_tree_prunes(
    autojump_clock: trio.testing.MockClock, strategy: str
) -> None:
    network = MemoryNetwork(seed=21)
    async with cluster(network, 6, strategy) as members:
        if strategy == "full_mesh":
            await until(lambda: everyone_up(members))
        else:
            await until(lambda: all(n.membership.up_nodes() for n, _, _ in members))
            await trio.sleep(5)
        _origin, group, store = members[0]
        for i in range(20):
            store.data[("m", i)] = i
            group.broadcast(("m", i), i)
            await trio.sleep(0.1)
        await until(lambda: all(len(s.data) == 20 for _, _, s in members))
        # After the first messages pruned the redundant links, each later one
        # crosses each node once: merges per node stay near one per message.
        before = sum(s.merges for _, _, s in members[1:])
        for i in range(20, 40):
            store.data[("m", i)] = i
            group.broadcast(("m", i), i)
            await trio.sleep(0.1)
        await until(lambda: all(len(s.data) == 40 for _, _, s in members))
        await trio.sleep(3)
        extra = sum(s.merges for _, _, s in members[1:]) - before
        receivers = len(members) - 1
        assert extra <= 20 * receivers * 1.1, f"{extra} merges for {20 * receivers}"


async def test_a_partitioned_node_catches_up_after_heal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=22)
    async with cluster(network, 4, "full_mesh") as members:
        await until(lambda: everyone_up(members))
        origin, group, store = members[0]
        cut, _, cut_store = members[3]
        others = [n.name for n, _, _ in members[:3]]
        network.partition([cut.name], others)
        await until(lambda: not origin.membership.is_up(cut.name))
        for i in range(10):
            store.data[("p", i)] = i
            group.broadcast(("p", i), i)
        await until(lambda: all(len(s.data) == 10 for _, _, s in members[:3]))
        assert len(cut_store.data) == 0
        network.heal()
        # The neighbour-up catch-up announces recent ids; grafts fetch them.
        await until(lambda: len(cut_store.data) == 10)


async def test_broadcast_over_real_tcp() -> None:
    from runtime.shell.network import TcpNetwork

    async with cluster(TcpNetwork(), 3, "full_mesh", host="127.0.0.1") as members:
        await until(lambda: everyone_up(members), seconds=20)
        _, group, store = members[1]
        store.data["hello"] = "world"
        group.broadcast("hello", "world")
        await until(lambda: all("hello" in s.data for _, _, s in members), seconds=20)
