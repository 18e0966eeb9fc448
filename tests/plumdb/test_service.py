"""Goal: PlumDB replicates. Writes on any node reach every node; concurrent
writes on both sides of a network partition resolve to one state everywhere
after it heals; a node added later gets everything by anti-entropy alone;
subscribers see local and replicated changes without slowing replication.

Method: clusters of three to five real nodes (full-mesh membership) in one trio
process over ``runtime.testing.MemoryNetwork`` under ``MockClock`` (autojump),
each with an in-memory :class:`PlumDB` whose wall clock is derived from the
virtual clock. Convergence is checked on the stored bytes of every key (and on
every partition's Merkle root), not only on values read, and polled under a
deadline in virtual time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from plumdb import ANY, PlumDB, PlumDBConfig, StoreConfig, open_plumdb
from plumdb.anti_entropy import PROTOCOL
from plumdb.core.object import encode_object
from runtime import Node, NodeConfig, NodeSpec, open_node
from runtime.config import FailureDetectorConfig, MembershipConfig
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"
FP = ("app", "users")
BASE_NS = 1_700_000_000 * 10**9
MEMBERSHIP = MembershipConfig(
    strategy="full_mesh",
    failure_detector=FailureDetectorConfig(
        heartbeat_interval=0.5, heartbeat_timeout=2.0
    ),
    join_retry_interval=1.0,
)
FAST = PlumDBConfig(
    store=StoreConfig(partition_count=4),
    exchange_interval=2.0,
    exchange_timeout=5.0,
)


def wall_clock() -> int:
    """Virtual wall time: the MockClock's, in ns after a fixed epoch."""
    return BASE_NS + round(trio.current_time() * 1e9)


@attrs.define
class Cluster:
    network: MemoryNetwork
    stack: AsyncExitStack
    config: PlumDBConfig
    nodes: list[Node] = attrs.field(factory=list)
    dbs: list[PlumDB] = attrs.field(factory=list)
    seed: NodeSpec | None = None

    async def add(self, config: PlumDBConfig | None = None) -> PlumDB:
        name = f"p{len(self.nodes)}@sim"
        node_config = NodeConfig(
            name=name,
            secret=SECRET,
            listen=("sim", 0),
            membership=MEMBERSHIP,
            peers=[self.seed] if self.seed is not None else [],
        )
        node = await self.stack.enter_async_context(
            open_node(node_config, network=self.network)
        )
        db = await self.stack.enter_async_context(
            open_plumdb(node, config=config or self.config, clock=wall_clock)
        )
        if self.seed is None:
            self.seed = node.spec()
        self.nodes.append(node)
        self.dbs.append(db)
        return db

    def names(self, *indices: int) -> list[str]:
        return [self.nodes[i].name for i in indices]


@asynccontextmanager
async def cluster(
    count: int, *, seed: int = 1, config: PlumDBConfig = FAST
) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        group = Cluster(MemoryNetwork(seed=seed), stack, config)
        for _ in range(count):
            await group.add()
        yield group


async def until(predicate: Callable[[], bool], seconds: float = 600) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.1)


def everyone_up(group: Cluster) -> bool:
    count = len(group.nodes)
    return all(len(n.membership.up_nodes()) == count - 1 for n in group.nodes)


def contents(db: PlumDB) -> list[tuple[bytes, bytes]]:
    """Every stored key and object (tombstones too), as bytes."""
    store = db.store
    return [
        (key, encode_object(obj))
        for p in range(store.partition_count)
        for key, obj in store.partition_objects(p)
    ]


def converged(dbs: list[PlumDB]) -> bool:
    first = contents(dbs[0])
    return all(contents(db) == first for db in dbs[1:])


async def test_writes_on_any_node_reach_every_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(4) as group:
        await until(lambda: everyone_up(group))
        dbs = group.dbs
        for i, db in enumerate(dbs):
            for n in range(10):
                db.put(FP, (f"n{i}", n), {"from": i, "n": n})
        await until(lambda: converged(dbs), 30)
        dbs[2].delete(FP, ("n0", 3))
        dbs[3].put(("other", b"sub"), 7, [1, 2, 3])

        def everywhere() -> bool:
            return all(len(db.to_list(FP)) == 39 for db in dbs) and converged(dbs)

        await until(everywhere, 30)
        for db in dbs:
            assert db.get(FP, ("n1", 4)) == {"from": 1, "n": 4}
            assert db.get(FP, ("n0", 3), default="gone") == "gone"
            assert db.get(("other", b"sub"), 7) == [1, 2, 3]
            assert db.match(FP, ("n3", ANY))[0] == (("n3", 0), {"from": 3, "n": 0})
        # Plumtree carried them: every node merged what the others wrote.
        stats = [db.statistics() for db in dbs]
        assert sum(s.broadcasts_count for s in stats) == 42
        assert all(s.broadcast_merged_count >= 30 for s in stats)


async def test_broadcast_alone_replicates_when_anti_entropy_is_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(FAST, anti_entropy_enabled=False)
    async with cluster(3, config=config) as group:
        await until(lambda: everyone_up(group))
        for n in range(20):
            group.dbs[n % 3].put(FP, n, n * n)
        await until(lambda: converged(group.dbs), 30)
        for db in group.dbs:
            assert db.statistics().anti_entropy.exchanges_started_count == 0


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "aae-only"])
async def test_a_partition_with_concurrent_writes_heals_to_one_state(
    autojump_clock: trio.testing.MockClock, broadcast: bool
) -> None:
    config = attrs.evolve(FAST, broadcast_enabled=broadcast)
    async with cluster(5, seed=2, config=config) as group:
        await until(lambda: everyone_up(group))
        dbs = group.dbs
        for n in range(20):
            dbs[0].put(FP, n, "before")
        await until(lambda: converged(dbs), 60)
        left, right = group.names(0, 1), group.names(2, 3, 4)
        group.network.partition(left, right)
        await until(
            lambda: (
                not group.nodes[0].membership.is_up(right[0])
                and not group.nodes[2].membership.is_up(left[0])
            ),
            30,
        )
        # Several minutes of virtual time, writes on both sides throughout.
        for minute in range(4):
            dbs[0].put(FP, "contested", f"left {minute}")
            dbs[3].put(FP, "contested", f"right {minute}")
            dbs[1].put(FP, ("left", minute), minute)
            dbs[4].put(FP, ("right", minute), minute)
            dbs[minute % 2].delete(FP, minute)
            dbs[2 + minute % 3].put(FP, 10 + minute, "changed on the right")
            await trio.sleep(60)
        assert dbs[0].get(FP, "contested", allow_put=False) == "left 3"
        assert dbs[2].get(FP, "contested", allow_put=False) == "right 3"
        group.network.heal()
        await until(lambda: everyone_up(group), 60)
        await until(lambda: converged(dbs), 120)
        values = {db.get(FP, "contested", allow_put=False) for db in dbs}
        assert len(values) == 1
        obj = dbs[0].get_object(FP, "contested")
        assert obj is not None
        assert obj.sibling_count == 2
        for p in range(dbs[0].store.partition_count):
            roots = {db.store.tree(p).root() for db in dbs}
            assert len(roots) == 1
        assert dbs[4].get(FP, ("left", 3)) == 3
        assert dbs[0].get(FP, ("right", 3)) == 3
        assert dbs[2].get(FP, 0) is None
        if not broadcast:
            # Anti-entropy alone carried everything across the healed cut.
            assert all(db.statistics().broadcast_delivered_count == 0 for db in dbs)
            assert sum(db.statistics().anti_entropy.keys_repaired_count for db in dbs)
        # Resolving on one node collapses the siblings everywhere.
        resolved = dbs[1].get(FP, "contested")
        await until(
            lambda: all(
                (o := db.get_object(FP, "contested")) is not None
                and o.sibling_count == 1
                for db in dbs
            ),
            60,
        )
        assert {db.get(FP, "contested") for db in dbs} == {resolved}


async def test_a_node_added_later_gets_everything_by_anti_entropy_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(FAST, broadcast_enabled=False)
    async with cluster(3, config=config) as group:
        await until(lambda: everyone_up(group))
        dbs = group.dbs
        for n in range(300):
            dbs[n % 3].put(FP, n, {"n": n})
        for n in range(0, 300, 7):
            dbs[(n + 1) % 3].delete(FP, n)
        await until(lambda: converged(dbs), 120)
        assert all(db.broadcast_group is None for db in dbs)
        late = await group.add()
        await until(lambda: everyone_up(group), 60)
        await until(lambda: converged(group.dbs), 120)
        assert len(late.to_list(FP)) == 300 - len(range(0, 300, 7))
        stats = late.statistics()
        assert stats.broadcast is None
        assert stats.broadcast_delivered_count == 0
        assert stats.anti_entropy.full_syncs_count >= 1
        assert stats.anti_entropy.keys_repaired_count >= 300


async def test_subscribers_see_local_and_replicated_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(3) as group:
        await until(lambda: everyone_up(group))
        a, b, _ = group.dbs
        with b.subscribe((FP[0], ANY), key=("x", ANY)) as changes:
            a.put(FP, ("x", 1), "one")
            a.put(FP, ("y", 1), "not matched")
            b.put(FP, ("x", 2), "two")
            a.delete(FP, ("x", 1))
            seen = []
            with trio.fail_after(30):
                while len(seen) < 3:
                    change = await changes.receive()
                    seen.append(
                        (change.key, change.value, change.deleted, change.origin)
                    )
            assert sorted(seen, key=repr) == sorted(
                [
                    (("x", 1), "one", False, "remote"),
                    (("x", 2), "two", False, "local"),
                    (("x", 1), None, True, "remote"),
                ],
                key=repr,
            )
        assert b.statistics().subscriptions_count == 0


async def test_a_slow_subscriber_drops_the_oldest_and_never_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(2) as group:
        await until(lambda: everyone_up(group))
        a, b = group.dbs
        slow = b.subscribe((ANY, ANY), queue_length_max=10)
        for n in range(100):
            a.put(FP, n, n)
        await until(lambda: converged(group.dbs), 30)
        assert len(slow) == 10
        assert slow.dropped_count == 90
        assert b.statistics().subscription_dropped_count == 90
        first = await slow.receive()
        assert first.key == 90
        slow.close()
        rest = [change.key async for change in slow]
        assert rest == list(range(91, 100))


async def test_exchange_bytes_follow_the_difference_not_the_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = attrs.evolve(FAST, broadcast_enabled=False, exchange_interval=3600.0)
    async with cluster(2, config=config) as group:
        await until(lambda: everyone_up(group))
        a, b = group.dbs
        for n in range(5000):
            obj = a.put(FP, n, n)
            b.store.merge(FP, n, obj)
        equal = await a.synchronize(b.node.name)
        assert sum(o.difference_count for o in equal) == 0
        equal_bytes = sum(o.bytes_sent_count + o.bytes_received_count for o in equal)
        assert equal_bytes < 1000
        for n in range(5):
            a.put(FP, n, "changed")
        b.put(FP, "new", 1)
        changed = await a.synchronize(b.node.name)
        assert sum(o.difference_count for o in changed) == 6
        assert sum(o.keys_repaired_count for o in changed) == 1
        changed_bytes = sum(
            o.bytes_sent_count + o.bytes_received_count for o in changed
        )
        assert changed_bytes < 20_000
        assert converged(group.dbs)


async def test_a_malformed_anti_entropy_message_is_refused_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(2) as group:
        await until(lambda: everyone_up(group))
        a, b = group.dbs
        for payload in ([1], [2, [99]], "junk", [3, [0, "x"]]):
            frame = a.node.control_frame(PROTOCOL, payload)
            slot = a.node.transport.slot(b.node.name, "broadcast", PROTOCOL)
            slot.enqueue(frame, PROTOCOL)  # type: ignore[union-attr]
        await until(lambda: b.statistics().anti_entropy.messages_refused_count == 4, 10)
        a.put(FP, 1, 1)
        await until(lambda: converged(group.dbs), 30)


async def test_a_sqlite_replica_survives_a_restart_and_resync_discards_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "node.sqlite"
    network = MemoryNetwork(seed=9)
    config = NodeConfig(name="solo@sim", secret=SECRET, listen=("sim", 0))
    actors = []
    for resync in (False, False, True):
        async with (
            open_node(config, network=network) as node,
            open_plumdb(
                node,
                path=path,
                config=attrs.evolve(FAST, resync=resync),
                clock=wall_clock,
            ) as db,
        ):
            actors.append(db.actor)
            if not actors[:-1]:
                db.put(FP, "kept", {"v": 1})
                db.delete(FP, "gone")
            elif not resync:
                assert db.get(FP, "kept") == {"v": 1}
                assert db.get_object(FP, "gone") is not None
            else:
                assert db.get(FP, "kept") is None
                assert db.store.tree(0).root() == db.store.tree(1).root()
    # A new actor at every start: the store's requirement.
    assert len(set(actors)) == 3
