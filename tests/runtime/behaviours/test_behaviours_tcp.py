"""Goal: calls, rpc and links work over real TCP, not only the in-memory
network (DESIGN.md: each capability has at least one real-TCP test).

Method: two nodes in this process on 127.0.0.1, full-mesh membership; wait for
conditions under generous deadlines, never fixed sleeps. Covers a GenServer
call by name and its failures (crash, missing name, stopped node), rpc with a
remote error, and a link across the connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio

import runtime
from runtime import Node, NodeConfig, open_node, rpc
from runtime.behaviours import (
    From,
    GenServer,
    NodeDownError,
    NoProcessError,
    Reply,
    ServerExited,
    call,
)
from runtime.shell.node import _current_node

SECRET = "test-secret-0123456789"
DEADLINE = 10.0


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    async with open_node(
        NodeConfig(name="a@127.0.0.1", secret=SECRET, listen=("127.0.0.1", 0))
    ) as a:
        config = NodeConfig(
            name="b@127.0.0.1",
            secret=SECRET,
            listen=("127.0.0.1", 0),
            peers=[a.spec()],
        )
        async with open_node(config) as b:
            with trio.fail_after(DEADLINE):
                while not (a.membership.is_up(b.name) and b.membership.is_up(a.name)):
                    await trio.sleep(0.01)
                await a.wait_connected(b.name)
                await b.wait_connected(a.name)
            yield a, b


@contextmanager
def at(node: Node) -> Iterator[None]:
    token = _current_node.set(node)
    try:
        yield
    finally:
        _current_node.reset(token)


class Echo(GenServer[int]):
    async def handle_call(self, request: Any, from_: From, count: int) -> Any:
        if request == "crash":
            raise ZeroDivisionError("over tcp")
        return Reply([request, count], count + 1)


def divide(x: int, y: int) -> float:
    return x / y


async def test_calls_rpc_and_links_over_tcp() -> None:
    async with pair() as (a, b):
        with at(b):
            server = await runtime.behaviours.start(Echo(), 0, name="echo")
            await rpc.export("divide", divide)
        with at(a), trio.fail_after(DEADLINE):
            assert await call(("echo", b.name), "hi") == ["hi", 0]
            assert await call(server, {"k": [1, 2]}) == [{"k": [1, 2]}, 1]
            with pytest.raises(NoProcessError):
                await call(("nobody", b.name), "hi")
            assert await rpc.call(b.name, "divide", [6, 3]) == 2.0
            with pytest.raises(ZeroDivisionError) as info:
                await rpc.call(b.name, "divide", [1, 0])
            assert "Traceback" in info.value.__cause__.remote_traceback  # type: ignore[union-attr]

            got: list[object] = []

            async def linked() -> None:
                runtime.trap_exit(True)
                runtime.link(server)  # type: ignore[arg-type]
                got.append(await runtime.receive())

            a.spawn(linked)
            while b.link_counts().remote != 1:
                await trio.sleep(0.002)
            with pytest.raises(ServerExited) as crashed:
                await call(server, "crash")
            assert isinstance(crashed.value.reason, runtime.RemoteError)
            while not got:
                await trio.sleep(0.002)
            exit_message = got[0]
            assert isinstance(exit_message, runtime.Exit)
            assert exit_message.pid == server
            assert exit_message.reason.type_name == "ZeroDivisionError"  # type: ignore[attr-defined]


async def test_a_call_fails_when_the_servers_node_stops_over_tcp() -> None:
    async with pair() as (a, b):
        with at(b):
            await rpc.export("sleep", trio.sleep)
        outcome: list[object] = []

        async def caller() -> None:
            try:
                await rpc.call(b.name, "sleep", [60], timeout=30)
            except (NodeDownError, ServerExited) as exc:
                # Either the connection closed first, or the call's process
                # was ended ("shutdown") and its answer left before it did.
                outcome.append(exc)

        with at(a), trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                while b.statistics().processes_count < 3:  # root, rpc, the call
                    await trio.sleep(0.002)
                await b.stop()
            assert len(outcome) == 1
