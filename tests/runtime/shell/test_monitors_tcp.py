"""Goal: monitors and injected partitions work between nodes over real TCP, and
no monitor is ever left behind on either side.

Method: two or three nodes in this process on 127.0.0.1 (full-mesh membership,
short heartbeats). Watchers and targets on both sides end in every way a
monitor can end (target exits normally or crashes, watcher exits, demonitor,
node lost); after each, ``monitor_counts()`` must be zero on both nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

import runtime
from runtime import Node, NodeConfig, open_node
from runtime.config import FailureDetectorConfig, MembershipConfig

SECRET = "tcp-monitor-secret-0123456789"
ZERO = runtime.MonitorCounts(0, 0, 0, 0, 0)


@asynccontextmanager
async def nodes(count: int) -> AsyncIterator[list[Node]]:
    membership = MembershipConfig(
        failure_detector=FailureDetectorConfig(
            heartbeat_interval=0.2, heartbeat_timeout=1.0
        )
    )
    async with AsyncExitStack() as stack:
        started: list[Node] = []
        for i in range(count):
            config = NodeConfig(
                name=f"m{i}@127.0.0.1",
                secret=SECRET,
                membership=membership,
                peers=[started[0].spec()] if started else [],
            )
            started.append(await stack.enter_async_context(open_node(config)))
        with trio.fail_after(20):
            for node in started:
                while len(node.membership.up_nodes()) < count - 1:
                    await trio.sleep(0.01)
        yield started


async def until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_remote_down_reasons_and_no_leaks() -> None:
    async with nodes(2) as (a, b):
        got: list[runtime.Down] = []
        release = trio.Event()

        async def target(how: str) -> None:
            await release.wait()
            if how == "crash":
                raise KeyError("boom")

        async def watcher(pid: runtime.Pid) -> None:
            runtime.monitor(pid)
            message = await runtime.receive(lambda m: isinstance(m, runtime.Down))
            assert isinstance(message, runtime.Down)
            got.append(message)

        normal = b.spawn(target, "normal")
        crash = b.spawn(target, "crash")
        a.spawn(watcher, normal)
        a.spawn(watcher, crash)
        a.spawn(watcher, runtime.Pid(node=b.name, creation=b.creation, id=999_999))
        await until(lambda: b.monitor_counts().incoming == 2)
        release.set()
        await until(lambda: len(got) == 3)
        reasons = {str(d.target): d.reason for d in got}
        assert reasons[str(normal)] == "normal"
        error = reasons[str(crash)]
        assert isinstance(error, runtime.RemoteError)
        assert error.type_name == "KeyError"
        assert "boom" in error.message
        assert "Traceback" in error.remote_traceback
        assert "noproc" in reasons.values()
        await until(lambda: a.monitor_counts() == ZERO and b.monitor_counts() == ZERO)


async def test_watcher_exit_and_demonitor_clean_both_sides() -> None:
    async with nodes(2) as (a, b):

        async def forever() -> None:
            await trio.sleep_forever()

        target = b.spawn(forever)

        async def leaves_early() -> None:
            runtime.monitor(target)

        async def demonitors() -> None:
            ref = runtime.monitor(target)
            await trio.sleep(0.2)
            assert runtime.demonitor(ref, flush=True)
            assert not runtime.demonitor(ref)

        a.spawn(leaves_early)
        a.spawn(demonitors)
        await trio.sleep(0.5)
        await until(lambda: a.monitor_counts() == ZERO and b.monitor_counts() == ZERO)


async def test_node_loss_gives_noconnection_and_drops_remote_monitors() -> None:
    async with nodes(3) as (a, _b, c):
        got: list[object] = []

        async def forever() -> None:
            await trio.sleep_forever()

        on_c = c.spawn(forever)
        on_a = a.spawn(forever)

        async def watcher() -> None:
            runtime.monitor(on_c)
            runtime.monitor_node(c.name)
            got.append(await runtime.receive())
            got.append(await runtime.receive())

        async def remote_watcher() -> None:  # c watches a
            runtime.monitor(on_a)
            await trio.sleep_forever()

        a.spawn(watcher)
        c.spawn(remote_watcher)
        await until(lambda: a.monitor_counts().incoming == 1)
        await until(lambda: c.monitor_counts().incoming == 1)
        # Cut c off from a (injected on a): a sees c down at once.
        ref = a.inject_partition([c.name])
        await until(lambda: len(got) == 2, seconds=5)
        assert {type(m) for m in got} == {runtime.Down, runtime.NodeDown}
        down = next(m for m in got if isinstance(m, runtime.Down))
        assert down.reason == "noconnection"
        await until(lambda: a.monitor_counts() == ZERO)
        # c notices a's silence within its heartbeat timeout and drops a's
        # monitor on it (and its own on a gives DOWN noconnection).
        await until(lambda: c.monitor_counts().incoming == 0, seconds=5)
        assert a.resolve_partition(ref)
        await until(lambda: a.membership.is_up(c.name) and c.membership.is_up(a.name))


@pytest.mark.parametrize("bad", ["partisan:ref:x@h:1.1", 42, "nonsense"])
async def test_monitor_refuses_what_is_not_a_process(bad: object) -> None:
    async with nodes(1) as (a,):
        errors: list[Exception] = []

        async def watcher() -> None:
            try:
                runtime.monitor(bad)
            except (runtime.BadReference, TypeError) as exc:
                errors.append(exc)

        a.spawn(watcher)
        await until(lambda: len(errors) == 1)


async def test_monitor_outside_a_process_is_an_error() -> None:
    async with nodes(1) as (a,):
        with pytest.raises(runtime.NotInProcess):
            a.monitor(("x", a.name))
