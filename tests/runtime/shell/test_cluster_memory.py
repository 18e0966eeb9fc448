"""Goal: whole clusters of real nodes in one trio process, on virtual time, with
faults. Method: three nodes over ``runtime.testing.MemoryNetwork`` under
``trio.testing.MockClock`` (autojump): the same node code as over TCP, with the
network dropping, delaying, duplicating and partitioning frames between named
nodes. Nothing here sleeps for real.
"""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio.testing

import runtime
from runtime import Node, NodeConfig, SendStatus, open_node
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"
NAMES = ("a@sim", "b@sim", "c@sim")


@asynccontextmanager
async def cluster(
    network: MemoryNetwork, **kw: object
) -> AsyncIterator[dict[str, Node]]:
    async with AsyncExitStack() as stack:
        nodes: dict[str, Node] = {}
        for name in NAMES:
            config = NodeConfig(
                name=name,
                secret=SECRET,
                listen=("sim", 0),
                **kw,  # type: ignore[arg-type]
            )
            nodes[name] = await stack.enter_async_context(
                open_node(config, network=network)
            )
        for node in nodes.values():
            for other in nodes.values():
                node.add_peer(other.spec())
        with trio.fail_after(60):
            for node in nodes.values():
                for other in NAMES:
                    if other != node.name:
                        await node.wait_connected(other)
        yield nodes


async def inbox(node: Node, name: str = "inbox") -> list[object]:
    got: list[object] = []

    async def run() -> None:
        while True:
            got.extend(await runtime.receive_batch())

    node.spawn(run, name=name)
    return got


async def until(predicate: object, seconds: float = 120) -> None:
    assert callable(predicate)
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_every_node_reaches_every_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=1)
    async with cluster(network) as nodes:
        boxes = {name: await inbox(node) for name, node in nodes.items()}
        for sender in nodes.values():
            for receiver in NAMES:
                if receiver != sender.name:
                    sender.send(("inbox", receiver), f"{sender.name}->{receiver}")
        await until(lambda: all(len(box) == 2 for box in boxes.values()))
        assert sorted(boxes["a@sim"]) == ["b@sim->a@sim", "c@sim->a@sim"]  # type: ignore[type-var]


async def test_delay_takes_virtual_time_and_keeps_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=2)
    async with cluster(network) as nodes:
        box = await inbox(nodes["b@sim"])
        network.set_link("a@sim", "b@sim", delay=0.5, jitter=0.2)
        start = trio.current_time()
        for i in range(50):
            nodes["a@sim"].send(("inbox", "b@sim"), i)
            await trio.sleep(0.01)
        await until(lambda: len(box) == 50)
        assert box == list(range(50))
        assert trio.current_time() - start >= 0.5


async def test_partition_refuses_nothing_silently_and_heals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A partition longer than the write timeout drops the connection; sends are
    then refused with a reason; after healing the nodes reconnect by themselves."""
    network = MemoryNetwork(seed=3)
    async with cluster(network, write_timeout=5.0) as nodes:
        a, b = nodes["a@sim"], nodes["b@sim"]
        box = await inbox(b)
        partition = network.partition(["a@sim"], ["b@sim", "c@sim"])
        # Fill the pipe so the writer blocks and the write timeout fires.
        payload = b"x" * 65536
        statuses: set[SendStatus] = set()
        with trio.fail_after(600):
            while a.is_connected("b@sim", "default"):
                statuses.add(a.send_checked(("inbox", "b@sim"), payload))
                await trio.sleep(0.01)
        assert SendStatus.OK in statuses
        assert a.send_checked(("inbox", "b@sim"), "during") in (
            SendStatus.DISCONNECTED,
            SendStatus.NOT_CONNECTED,
        )
        slot = next(
            s
            for s in a.statistics().slots
            if s.peer == "b@sim" and s.channel == "default"
        )
        assert slot.last_disconnect_reason == "timed out"
        network.heal(partition)
        with trio.fail_after(600):
            await a.wait_connected("b@sim")
        box.clear()
        a.send(("inbox", "b@sim"), "after")
        await until(lambda: "after" in box)


async def test_dropped_frames_are_lost_not_corrupting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Loss on a link loses whole messages (a best-effort send, as in Erlang);
    what arrives is intact and in order."""
    network = MemoryNetwork(seed=4)
    async with cluster(network) as nodes:
        box = await inbox(nodes["c@sim"])
        network.set_link("a@sim", "c@sim", drop=0.3)
        for i in range(300):
            nodes["a@sim"].send(("inbox", "c@sim"), i)
            await trio.sleep(0.001)
        await trio.sleep(5)
        assert 0 < len(box) < 300
        assert box == sorted(box)  # type: ignore[type-var]
        assert network.statistics().frames_dropped > 0


async def test_duplicated_frames_are_delivered_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The transport does not deduplicate: a network that duplicates (none does
    under TCP) shows as duplicate deliveries; higher layers must be idempotent."""
    network = MemoryNetwork(seed=5)
    async with cluster(network) as nodes:
        box = await inbox(nodes["b@sim"])
        network.set_link("a@sim", "b@sim", duplicate=1.0)
        nodes["a@sim"].send(("inbox", "b@sim"), "once")
        await until(lambda: len(box) == 2)
        assert box == ["once", "once"]


async def test_disconnect_is_noticed_and_redialled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=6)
    async with cluster(network) as nodes:
        a = nodes["a@sim"]
        box = await inbox(nodes["b@sim"])
        assert network.disconnect("a@sim", "b@sim") > 0

        def redialled() -> bool:
            slots = [s for s in a.statistics().slots if s.peer == "b@sim"]
            return a.is_fully_connected("b@sim") and all(
                s.connects_count >= 2 for s in slots
            )

        await until(redialled, seconds=60)
        a.send(("inbox", "b@sim"), "back")
        await until(lambda: box == ["back"])
