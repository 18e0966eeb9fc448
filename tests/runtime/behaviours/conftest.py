"""Fixtures for the behaviour tests: nodes on the in-memory network under
MockClock (autojump), and a helper to run code inside a process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio

from runtime import (
    FailureDetectorConfig,
    MembershipConfig,
    Node,
    NodeConfig,
    open_node,
)
from runtime.shell.node import _current_node
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"
# Short heartbeats, so a silent (partitioned) peer is declared down after 2 s
# of virtual time.
MEMBERSHIP = MembershipConfig(
    failure_detector=FailureDetectorConfig(
        heartbeat_interval=0.5, heartbeat_timeout=2.0
    )
)


@asynccontextmanager
async def _cluster(
    count: int = 2, *, seed: int = 1, network: MemoryNetwork | None = None
) -> AsyncIterator[list[Node]]:
    network = network if network is not None else MemoryNetwork(seed=seed)
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for index in range(count):
            config = NodeConfig(
                name=f"n{index}@sim",
                secret=SECRET,
                listen=("sim", 0),
                membership=MEMBERSHIP,
                peers=[nodes[0].spec()] if nodes else [],
            )
            nodes.append(
                await stack.enter_async_context(open_node(config, network=network))
            )
        await until(
            lambda: all(
                node.membership.is_up(other.name)
                and node.is_fully_connected(other.name)
                for node in nodes
                for other in nodes
                if other is not node
            )
        )
        yield nodes


@pytest.fixture
def cluster() -> Callable[..., Any]:
    """``async with cluster(2) as [a, b]``: nodes that see each other up."""
    return _cluster


async def until(predicate: Callable[[], object], seconds: float = 60) -> None:
    """Wait (virtual time under MockClock) until *predicate* holds."""
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def _in_process(node: Node, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``fn(*args)`` as a process on *node*; its result, or its exception."""
    outcome: list[Any] = []
    done = trio.Event()

    async def body() -> None:
        try:
            outcome.append(("ok", await fn(*args)))
        except BaseException as exc:
            outcome.append(("error", exc))
            raise
        finally:
            done.set()

    node.spawn(body)
    await done.wait()
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


@pytest.fixture
def in_process() -> Callable[..., Awaitable[Any]]:
    """``await in_process(node, fn, *args)``: run *fn* inside a process."""
    return _in_process


@contextmanager
def _at(node: Node) -> Iterator[Node]:
    """Make *node* the current node of the test's own task (``open_node``
    leaves the last node opened there)."""
    token = _current_node.set(node)
    try:
        yield node
    finally:
        _current_node.reset(token)


@pytest.fixture
def at() -> Callable[[Node], Any]:
    """``with at(a): await call(...)``: code in the test task runs on *a*."""
    return _at
