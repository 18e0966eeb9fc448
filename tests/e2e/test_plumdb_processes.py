"""Goal: PlumDB replicates between real OS processes, and a node killed with
SIGKILL comes back with its durable data and catches up on what it missed.

Method: three ``plumdb node`` processes (``python -m plumdb.cli``) on
127.0.0.1, full-mesh membership, each with its SQLite file in ``tmp_path``
(``synchronous=FULL``), driven through the JSON-line control protocol by the
runtime's harness (``start_node_process(module="plumdb.cli")``). Writes on
each reach all. Then one is killed with SIGKILL; the others write and delete
while it is down; it is restarted on the same data file *without* peers, where
it must already hold everything it had acknowledged (its own writes and the
replicated ones), then joins, and must catch up: new keys, and the deletes.
Conditions are polled with generous deadlines, never fixed sleeps; every
process is stopped by the fixture.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime.cli import DEFAULT_SECRET_ENV, NodeProcess, start_node_process

pytestmark = pytest.mark.e2e

DEADLINE = 60.0
NAMES = [f"db{i}@127.0.0.1" for i in range(1, 4)]
PREFIX = {"prefix": "app", "subprefix": "kv"}


class Cluster:
    def __init__(self, nursery: trio.Nursery, data: Path) -> None:
        self.nursery = nursery
        self.data = data
        self.secret = secrets.token_urlsafe(32)
        self.nodes: dict[str, NodeProcess] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.retired: list[NodeProcess] = []

    async def start(self, name: str, seed: str | None) -> NodeProcess:
        args = [
            "--membership",
            "full_mesh",
            "--heartbeat-interval",
            "0.2",
            "--heartbeat-timeout",
            "1.0",
            "--log-level",
            "warning",
            "--data",
            str(self.data / f"{name.split('@')[0]}.sqlite"),
            "--exchange-interval",
            "0.5",
        ]
        if seed is not None:
            host, port = self.addresses[seed]
            args += ["--peer", f"{seed}={host}:{port}"]
        environ = {k: v for k, v in os.environ.items() if k != DEFAULT_SECRET_ENV}
        node = await start_node_process(
            self.nursery,
            name,
            secret=self.secret,
            args=args,
            env=environ,
            module="plumdb.cli",
        )
        self.nodes[name] = node
        self.addresses[name] = await node.listening(timeout=DEADLINE)
        return node

    async def aclose(self) -> None:
        for node in [*self.nodes.values(), *self.retired]:
            await node.aclose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        nodes = Cluster(nursery, tmp_path)
        try:
            yield nodes
        finally:
            await nodes.aclose()
            nursery.cancel_scope.cancel()


async def poll(
    node: NodeProcess,
    command: dict[str, Any],
    accept: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Send *command* until its reply is accepted (or fail at the deadline)."""
    reply: dict[str, Any] = {}
    with trio.move_on_after(DEADLINE):
        while True:
            reply = await node.request(command)
            if accept(reply):
                return reply
            await trio.sleep(0.1)
    pytest.fail(f"{node.name}: {command} never gave what was expected: {reply}")


async def count(node: NodeProcess) -> int:
    reply = await node.request({"cmd": "keys", **PREFIX, "limit": 0})
    return int(reply["count"])


async def get(node: NodeProcess, key: object) -> dict[str, Any]:
    return await node.request({"cmd": "get", **PREFIX, "key": key, "allow_put": False})


async def put(node: NodeProcess, key: object, value: object) -> None:
    await node.request({"cmd": "put", **PREFIX, "key": key, "value": value})


async def test_three_processes_replicate_and_a_killed_one_catches_up(
    cluster: Cluster,
) -> None:
    seed = NAMES[0]
    await cluster.start(seed, None)
    for name in NAMES[1:]:
        await cluster.start(name, seed)
    for node in cluster.nodes.values():
        await poll(node, {"cmd": "members"}, lambda r: len(r["up"]) == 2)

    for i, node in enumerate(cluster.nodes.values()):
        for n in range(15):
            await put(node, [f"w{i}", n], {"writer": i, "n": n})
    for node in cluster.nodes.values():
        await poll(
            node, {"cmd": "keys", **PREFIX, "limit": 0}, lambda r: r["count"] == 45
        )

    victim_name = NAMES[2]
    victim = cluster.nodes.pop(victim_name)
    cluster.retired.append(victim)
    victim.kill()
    assert await victim.wait_exit(timeout=DEADLINE) is not None
    survivors = list(cluster.nodes.values())
    for node in survivors:
        await poll(node, {"cmd": "members"}, lambda r: len(r["up"]) == 1)
    # Missed while down: new keys on both survivors, and deletes of the
    # victim's own keys.
    for i, node in enumerate(survivors):
        for n in range(10):
            await put(node, [f"missed{i}", n], n)
    for n in range(5):
        await survivors[n % 2].request({"cmd": "delete", **PREFIX, "key": ["w2", n]})

    # Back on the same data file, alone: everything it acknowledged is there.
    returned = await cluster.start(victim_name, None)
    assert await count(returned) == 45
    assert (await get(returned, ["w2", 14]))["value"] == {"writer": 2, "n": 14}
    assert (await get(returned, ["w0", 3]))["value"] == {"writer": 0, "n": 3}
    assert not (await get(returned, ["missed0", 0]))["found"]

    host, port = cluster.addresses[seed]
    await returned.request({"cmd": "join", "name": seed, "host": host, "port": port})
    await poll(returned, {"cmd": "members"}, lambda r: len(r["up"]) == 2)
    expected = 45 + 20 - 5
    await poll(
        returned,
        {"cmd": "keys", **PREFIX, "limit": 0},
        lambda r: r["count"] == expected,
    )
    assert (await get(returned, ["missed1", 9]))["value"] == 9
    for n in range(5):
        assert not (await get(returned, ["w2", n]))["found"]
    # The survivors converge too (broadcast, and anti-entropy for anything a
    # broadcast lost while connections churned around the restart).
    for node in survivors:
        await poll(
            node,
            {"cmd": "keys", **PREFIX, "limit": 0},
            lambda r: r["count"] == expected,
        )
    stats = await returned.request({"cmd": "plumdb_stats"})
    assert stats["anti_entropy"]["exchanges_completed_count"] > 0
