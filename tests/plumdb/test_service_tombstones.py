"""Goal: tombstones are collected only by the rule (every current member holds
it, known through anti-entropy, and the grace period has passed), and a
collected tombstone never comes back, nor the value it deleted.

Method: full-mesh clusters of real nodes over ``MemoryNetwork`` under
``MockClock``; each PlumDB's wall clock follows the virtual clock, the grace
period is 60 s and a collection pass runs every 5 s. Covered: collection on
every node once the rule holds and not before; a member cut off by a network
partition blocks collection for as long as it is away, even far past the grace
period, while it holds the deleted value; after the heal the value stays
deleted and the tombstones go; a collectable tombstone is never sent to a peer
that lacks its key, in either direction of an exchange.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from plumdb import PlumDB, PlumDBConfig, Store, StoreConfig, open_plumdb
from plumdb.core.acknowledgement import TombstoneAcknowledgements
from runtime import Node, NodeConfig, NodeSpec, open_node
from runtime.config import FailureDetectorConfig, MembershipConfig
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"
FP = ("app", "things")
BASE_NS = 1_700_000_000 * 10**9
GRACE = 60.0
CONFIG = PlumDBConfig(
    store=StoreConfig(partition_count=4),
    exchange_interval=2.0,
    exchange_timeout=5.0,
    tombstone_grace=GRACE,
    tombstone_collect_interval=5.0,
)
MEMBERSHIP = MembershipConfig(
    strategy="full_mesh",
    failure_detector=FailureDetectorConfig(
        heartbeat_interval=0.5, heartbeat_timeout=2.0
    ),
    join_retry_interval=1.0,
)


def wall_clock() -> int:
    return BASE_NS + round(trio.current_time() * 1e9)


@asynccontextmanager
async def cluster(
    count: int, config: PlumDBConfig = CONFIG
) -> AsyncIterator[tuple[MemoryNetwork, list[Node], list[PlumDB]]]:
    network = MemoryNetwork(seed=5)
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        dbs: list[PlumDB] = []
        seeds: list[NodeSpec] = []
        for i in range(count):
            node = await stack.enter_async_context(
                open_node(
                    NodeConfig(
                        name=f"t{i}@sim",
                        secret=SECRET,
                        listen=("sim", 0),
                        membership=MEMBERSHIP,
                        peers=seeds,
                    ),
                    network=network,
                )
            )
            seeds = seeds or [node.spec()]
            nodes.append(node)
            dbs.append(
                await stack.enter_async_context(
                    open_plumdb(node, config=config, clock=wall_clock)
                )
            )
        with trio.fail_after(30):
            while not all(len(n.membership.up_nodes()) == count - 1 for n in nodes):
                await trio.sleep(0.1)
        yield network, nodes, dbs


async def until(predicate: Callable[[], bool], seconds: float = 600) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.5)


def stored(db: PlumDB) -> int:
    """Keys physically held, tombstones included."""
    return sum(
        len(list(db.store.partition_data(p))) for p in range(db.store.partition_count)
    )


async def test_tombstones_are_collected_everywhere_once_the_rule_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(3) as (_, _, dbs):
        for n in range(10):
            dbs[n % 3].put(FP, n, n)
        await until(lambda: all(stored(db) == 10 for db in dbs), 30)
        deleted_at = trio.current_time()
        for n in range(5):
            dbs[n % 3].delete(FP, n)
        await until(
            lambda: all(len(db.to_list(FP)) == 5 and stored(db) == 10 for db in dbs),
            30,
        )
        # Not before the grace period, whatever the exchanges say.
        assert all(db.collect_tombstones() == 0 for db in dbs)
        await until(lambda: all(stored(db) == 5 for db in dbs))
        assert trio.current_time() - deleted_at >= GRACE
        assert [db.statistics().tombstones_collected_count for db in dbs] == [5] * 3
        # Nothing comes back: many exchanges later the keys are still gone.
        await trio.sleep(120)
        assert all(stored(db) == 5 for db in dbs)
        for db in dbs:
            assert db.to_list(FP) == [(n, n) for n in range(5, 10)]
            assert db.statistics().anti_entropy.exchanges_completed_count > 20


async def test_a_member_away_blocks_collection_and_nothing_resurrects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(3) as (network, nodes, dbs):
        for n in range(6):
            dbs[0].put(FP, n, f"value {n}")
        await until(lambda: all(stored(db) == 6 for db in dbs), 30)
        # Node 2 is cut off, then the others delete what it still holds.
        network.partition([nodes[2].name], [nodes[0].name, nodes[1].name])
        await until(lambda: not nodes[0].membership.is_up(nodes[2].name), 30)
        for n in range(3):
            dbs[n % 2].delete(FP, n)
        # Five grace periods later nobody has collected: a member lacks them.
        await trio.sleep(5 * GRACE)
        assert stored(dbs[0]) == stored(dbs[1]) == 6
        assert dbs[0].collect_tombstones() == 0
        assert dbs[2].get(FP, 0) == "value 0"
        network.heal()
        # The returning member gets the tombstones (its values lose: they are
        # older, causally), then everyone collects and the values stay gone.
        await until(lambda: dbs[2].get(FP, 0) is None, 120)
        await until(lambda: all(stored(db) == 3 for db in dbs))
        await trio.sleep(60)
        for db in dbs:
            assert stored(db) == 3
            assert [key for key, _ in db.to_list(FP)] == [3, 4, 5]


async def test_a_collectable_tombstone_is_never_sent_to_a_peer_that_lacks_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PlumDBConfig(
        store=StoreConfig(partition_count=4),
        broadcast_enabled=False,
        exchange_interval=3600.0,
        tombstone_grace=GRACE,
        tombstone_collect_interval=3600.0,
    )
    async with cluster(2, config) as (_, _, dbs):
        a, b = dbs
        # A tombstone written long ago, that only a holds.
        with Store(actor="old#1", clock=lambda: BASE_NS - 10**12) as old:
            old.put(FP, "k", "v")
            tombstone = old.delete(FP, "k")
        a.store.merge(FP, "k", tombstone)
        a.put(FP, "live", 1)
        # a pushes, then b pulls: the tombstone goes neither way.
        await a.synchronize(b.node.name)
        await b.synchronize(a.node.name)
        assert b.get_object(FP, "k") is None
        assert b.get(FP, "live") == 1
        withheld = a.statistics().anti_entropy.tombstones_withheld_count
        assert withheld >= 2
        # b lacking the key counts as holding it: a may collect it now.
        assert a.collect_tombstones() == 1
        assert a.get_object(FP, "k") is None
        # The same holds when b is the one holding such a tombstone.
        b.store.merge(FP, "k2", tombstone)
        assert b.get_object(FP, "k2") is not None
        await b.synchronize(a.node.name)
        assert a.get_object(FP, "k2") is None


def test_acknowledgements_need_every_member_after_the_grace_period() -> None:
    acks = TombstoneAcknowledgements()
    members = ["a", "b"]
    key = b"k"
    assert not acks.acknowledged(members, 0, key, tombstone_ns=100, grace_ns=50)
    acks.record("a", 0, started_ns=160, different=[])
    assert not acks.acknowledged(members, 0, key, tombstone_ns=100, grace_ns=50)
    acks.record("b", 0, started_ns=140, different=[])
    # b's exchange started before the grace period ended: not evidence.
    assert not acks.acknowledged(members, 0, key, tombstone_ns=100, grace_ns=50)
    acks.record("b", 0, started_ns=170, different=[key])
    assert not acks.acknowledged(members, 0, key, tombstone_ns=100, grace_ns=50)
    acks.record("b", 0, started_ns=180, different=[b"other"])
    assert acks.acknowledged(members, 0, key, tombstone_ns=100, grace_ns=50)
    # An older record never replaces a newer one.
    acks.record("b", 0, started_ns=120, different=[key])
    assert acks.acknowledged(members, 0, key, tombstone_ns=100, grace_ns=50)
    assert not acks.acknowledged(members, 1, key, tombstone_ns=100, grace_ns=50)
    acks.forget("b")
    assert acks.latest("b", 0) is None
    assert acks.acknowledged(["a"], 0, key, tombstone_ns=100, grace_ns=50)


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_lone_node_collects_after_the_grace_period_unless_disabled(
    autojump_clock: trio.testing.MockClock, enabled: bool
) -> None:
    config = CONFIG if enabled else PlumDBConfig(tombstone_collection_enabled=False)
    async with cluster(1, config) as (_, _, dbs):
        (db,) = dbs
        db.delete(FP, 1)
        await trio.sleep(GRACE + 4 * 5 + 10)  # a pass reaches each partition every 20 s
        expected = 1 if enabled else 0
        assert db.statistics().tombstones_collected_count == expected
