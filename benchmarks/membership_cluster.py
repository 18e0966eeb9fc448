"""Real-cluster membership figures: time to converge, time to detect a kill.

Two measurements on this machine, over real TCP on 127.0.0.1:

* **Convergence.** N nodes (10, 50, 100) start in one OS process, each with its
  own listening socket, joining through a random earlier node. Full mesh is
  done when every node lists all N members and has the other N - 1 up;
  HyParView when every active view is non-empty and symmetric, the views form
  one connected graph, and every node's up list equals its active view. Timed
  from the first node's start. One process hosts them all, so the figure
  includes the machine's whole CPU spent on N nodes' handshakes.
* **Detection.** Three ``partisan node`` OS processes in a full mesh; one is
  killed with SIGKILL and we time until both others report it down (their
  ``on_down`` callbacks, through the control protocol's ``node_down`` events).

Used by ``benchmarks/membership.py`` (the ``cluster`` section).
"""

from __future__ import annotations

import os
import random
import secrets
import time
from contextlib import AsyncExitStack
from typing import Any, Final

import trio

from runtime import Node, NodeConfig, open_node
from runtime.cli import DEFAULT_SECRET_ENV, start_node_process
from runtime.config import HyParViewConfig, MembershipConfig

__all__ = ["measure_convergence", "measure_detection"]

SECRET: Final = "benchmark-membership-secret-0123456789"
DEADLINE: Final = 300.0


def _full_mesh_done(nodes: list[Node]) -> bool:
    count = len(nodes)
    return all(
        len(node.membership.members()) == count
        and len(node.membership.up_nodes()) == count - 1
        for node in nodes
    )


def _hyparview_done(nodes: list[Node]) -> bool:
    views = {node.name: set(node.membership.core.neighbours()) for node in nodes}
    if any(not view for view in views.values()):
        return False
    if any(name not in views[other] for name, view in views.items() for other in view):
        return False
    seen = {nodes[0].name}
    frontier = [nodes[0].name]
    while frontier:
        for other in views[frontier.pop()]:
            if other not in seen:
                seen.add(other)
                frontier.append(other)
    return seen == set(views) and all(
        node.membership.up_nodes() == sorted(views[node.name]) for node in nodes
    )


async def measure_convergence(strategy: str, count: int, seed: int = 1) -> float:
    """Seconds for *count* in-process TCP nodes to converge under *strategy*."""
    rng = random.Random(seed)
    membership = MembershipConfig(
        strategy=strategy,
        hyparview=HyParViewConfig(active_view_size_max=5),
    )
    done = _full_mesh_done if strategy == "full_mesh" else _hyparview_done
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        started = time.monotonic()
        for i in range(count):
            config = NodeConfig(
                name=f"c{i}@127.0.0.1",
                secret=SECRET,
                membership=membership,
                peers=[rng.choice(nodes).spec()] if nodes else [],
            )
            nodes.append(await stack.enter_async_context(open_node(config)))
        with trio.fail_after(DEADLINE):
            # A condition over every node's state: polled, nothing to wait on.
            while not done(nodes):  # noqa: ASYNC110
                await trio.sleep(0.05)
        return time.monotonic() - started


async def measure_detection(
    *, heartbeat_interval: float = 1.0, heartbeat_timeout: float = 5.0
) -> dict[str, Any]:
    """Kill one of three node processes; seconds until both others see it down."""
    secret = secrets.token_urlsafe(32)
    environ = {k: v for k, v in os.environ.items() if k != DEFAULT_SECRET_ENV}
    args = [
        "--heartbeat-interval",
        str(heartbeat_interval),
        "--heartbeat-timeout",
        str(heartbeat_timeout),
        "--log-level",
        "error",
    ]
    names = [f"d{i}@127.0.0.1" for i in range(3)]
    async with trio.open_nursery() as nursery:
        processes = []
        try:
            seed_address: tuple[str, int] | None = None
            for name in names:
                extra = (
                    ["--peer", f"{names[0]}={seed_address[0]}:{seed_address[1]}"]
                    if seed_address is not None
                    else []
                )
                process = await start_node_process(
                    nursery, name, secret=secret, args=[*args, *extra], env=environ
                )
                processes.append(process)
                address = await process.listening(timeout=30)
                if seed_address is None:
                    seed_address = address
            with trio.fail_after(60):
                for process in processes:
                    others = {n for n in names if n != process.name}
                    while True:
                        reply = await process.request({"cmd": "members"})
                        if set(reply["up"]) == others:
                            break
                        await trio.sleep(0.05)
            victim = processes[2]
            killed = time.monotonic()
            victim.kill()
            detected = []
            for process in processes[:2]:
                await process.wait_event(
                    lambda e: (
                        e.get("event") == "node_down" and e.get("node") == victim.name
                    ),
                    timeout=60,
                )
                detected.append(time.monotonic() - killed)
            return {
                "detected_s": max(detected),
                "heartbeat_interval_s": heartbeat_interval,
                "heartbeat_timeout_s": heartbeat_timeout,
            }
        finally:
            for process in processes:
                await process.aclose()
            nursery.cancel_scope.cancel()
