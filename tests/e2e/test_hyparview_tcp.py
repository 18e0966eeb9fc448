"""Goal: a HyParView cluster of 100 nodes over real TCP converges to connected,
symmetric active views.

Method: 100 nodes in this test's process, each with its own listening socket on
127.0.0.1 and its own connections (the issue allows several nodes per OS
process). Each joins through a random earlier node. We poll, with a generous
deadline, until every active view is non-empty and symmetric, the views form
one connected graph, and every node's up list equals its active view.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import pytest
import trio

from runtime import Node, NodeConfig, open_node
from runtime.config import HyParViewConfig, MembershipConfig

pytestmark = pytest.mark.e2e

NODES = 100
DEADLINE = 240.0
SECRET = "e2e-hyparview-secret-0123456789"


def converged(nodes: list[Node]) -> bool:
    views = {n.name: set(n.membership.core.neighbours()) for n in nodes}
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
    if seen != set(views):
        return False
    return all(n.membership.up_nodes() == sorted(views[n.name]) for n in nodes)


async def test_a_hundred_nodes_converge_to_symmetric_connected_views() -> None:
    rng = random.Random(11)
    membership = MembershipConfig(
        strategy="hyparview",
        hyparview=HyParViewConfig(
            active_view_size_max=5, shuffle_interval=10.0, promotion_interval=1.0
        ),
    )
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(NODES):
            seeds = [rng.choice(nodes).spec()] if nodes else []
            config = NodeConfig(
                name=f"h{i}@127.0.0.1",
                secret=SECRET,
                membership=membership,
                peers=seeds,
            )
            nodes.append(await stack.enter_async_context(open_node(config)))
        started = trio.current_time()
        with trio.move_on_after(DEADLINE):
            while not converged(nodes):
                await trio.sleep(0.2)
        views = {n.name: n.membership.core.neighbours() for n in nodes}
        asymmetric = sorted(
            (name, other)
            for name, view in views.items()
            for other in view
            if name not in views[other]
        )
        not_up = {
            n.name: sorted(set(views[n.name]) ^ set(n.membership.up_nodes()))
            for n in nodes
            if n.membership.up_nodes() != views[n.name]
        }
        assert converged(nodes), (
            f"not converged in {DEADLINE}s: asymmetric {asymmetric}, "
            f"up differs from the view {not_up}"
        )
        trio.current_time() - started
        sorted(len(v) for v in views.values())
