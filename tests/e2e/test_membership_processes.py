"""Goal: full-mesh membership and failure detection work between real OS processes.

Method: five ``partisan node`` processes on 127.0.0.1 with ``--membership
full_mesh``; the first is the seed of the others (``--peer``). Each reports
``node_up`` / ``node_down`` events (its ``on_up`` / ``on_down`` callbacks) and
answers ``members``. Covered: all see all; one killed with SIGKILL is reported
down by every other within the detection time; restarted on a new port under
the same name it is listed once, with its new address, and up again. Conditions
are polled with generous deadlines; every process is stopped by the fixture.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from runtime.cli import DEFAULT_SECRET_ENV, NodeProcess, start_node_process

pytestmark = pytest.mark.e2e

DEADLINE = 30.0
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.0
NAMES = [f"n{i}@127.0.0.1" for i in range(1, 6)]


class Cluster:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.secret = secrets.token_urlsafe(32)
        self.nodes: dict[str, NodeProcess] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.retired: list[NodeProcess] = []

    async def start(self, name: str, seed: str | None) -> NodeProcess:
        args = [
            "--membership",
            "full_mesh",
            "--heartbeat-interval",
            str(HEARTBEAT_INTERVAL),
            "--heartbeat-timeout",
            str(HEARTBEAT_TIMEOUT),
            "--log-level",
            "warning",
        ]
        if seed is not None:
            host, port = self.addresses[seed]
            args += ["--peer", f"{seed}={host}:{port}"]
        environ = {k: v for k, v in os.environ.items() if k != DEFAULT_SECRET_ENV}
        node = await start_node_process(
            self.nursery, name, secret=self.secret, args=args, env=environ
        )
        self.nodes[name] = node
        self.addresses[name] = await node.listening(timeout=DEADLINE)
        return node

    async def aclose(self) -> None:
        for node in [*self.nodes.values(), *self.retired]:
            await node.aclose()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        nodes = Cluster(nursery)
        try:
            yield nodes
        finally:
            await nodes.aclose()
            nursery.cancel_scope.cancel()


async def members(node: NodeProcess) -> dict[str, Any]:
    return await node.request({"cmd": "members"})


async def until_members(
    node: NodeProcess, expected: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    """Poll until *node* lists exactly *expected* (name -> address), all up."""
    reply: dict[str, Any] = {}
    with trio.move_on_after(DEADLINE):
        while True:
            reply = await members(node)
            listed = {m["name"]: tuple(m["addresses"][0]) for m in reply["members"]}
            up = set(reply["up"])
            if listed == expected and up == set(expected) - {node.name}:
                return reply
            await trio.sleep(0.05)
    pytest.fail(f"{node.name}: members not {expected} within {DEADLINE}s: {reply}")


async def test_five_processes_full_mesh_kill_and_restart(cluster: Cluster) -> None:
    seed = NAMES[0]
    await cluster.start(seed, None)
    for name in NAMES[1:]:
        await cluster.start(name, seed)
    for node in cluster.nodes.values():
        reply = await until_members(node, cluster.addresses)
        assert len(reply["members"]) == len(NAMES)

    victim_name = NAMES[2]
    victim = cluster.nodes.pop(victim_name)
    cluster.retired.append(victim)
    killed_at = trio.current_time()
    victim.kill()
    detected: dict[str, float] = {}
    for name, node in cluster.nodes.items():
        await node.wait_event(
            lambda e: e.get("event") == "node_down" and e.get("node") == victim_name,
            timeout=DEADLINE,
        )
        detected[name] = trio.current_time() - killed_at
    # A killed process's sockets are reset by its kernel: detection is the
    # connection loss, far inside the heartbeat timeout (the fallback bound).
    assert max(detected.values()) < HEARTBEAT_TIMEOUT + 2 * HEARTBEAT_INTERVAL + 1.0

    old_address = cluster.addresses[victim_name]
    await cluster.start(victim_name, NAMES[0])
    assert cluster.addresses[victim_name] != old_address
    for node in cluster.nodes.values():
        reply = await until_members(node, cluster.addresses)
        names = [m["name"] for m in reply["members"]]
        assert names.count(victim_name) == 1
