"""Goal: links and trap_exit on real nodes behave as Erlang's, locally and
across nodes, and leave no link behind.

Method: processes on one node and on two nodes of the in-memory network under
MockClock; exit signals are observed as ``Exit`` messages of trapping
processes and as the exit reasons monitors report. Node loss is a partition
injected on one node (its peer is declared down after the 2 s heartbeat
timeout).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import runtime
from runtime import Exit, LinkCounts, Node, ProcessExit


async def until(predicate: Any, seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def sleeper() -> None:
    await trio.sleep_forever()


async def crasher(delay: float) -> None:
    await trio.sleep(delay)
    raise ValueError("crash")


def quiet(*nodes: Node) -> bool:
    return all(node.link_counts() == LinkCounts(0, 0) for node in nodes)


async def test_an_abnormal_exit_kills_a_linked_process(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:

        async def body() -> object:
            victim = runtime.spawn(sleeper)
            ref = runtime.monitor(victim)

            async def linker() -> None:
                runtime.link(victim)
                await trio.sleep(0.1)
                raise ProcessExit("bad")

            runtime.spawn(linker)
            down = await runtime.receive(timeout=5)
            assert isinstance(down, runtime.Down)
            assert down.ref == ref
            return down.reason

        assert await in_process(a, body) == "bad"
        assert quiet(a)


async def test_a_normal_exit_does_not_kill_a_linked_process(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:

        async def body() -> bool:
            async def short() -> None:
                await trio.sleep(0.1)

            child = runtime.spawn_link(short)
            ref = runtime.monitor(child)
            await runtime.receive(
                lambda m: isinstance(m, runtime.Down) and m.ref == ref, timeout=5
            )
            await trio.sleep(0.1)
            return True

        assert await in_process(a, body)
        assert quiet(a)


async def test_trap_exit_turns_exit_signals_into_messages(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:

        async def body() -> list[object]:
            assert runtime.trap_exit(True) is False
            child = runtime.spawn_link(crasher, 0.1)
            normal = runtime.spawn_link(trio.sleep, 0.2)
            got = [await runtime.receive(timeout=5), await runtime.receive(timeout=5)]
            assert got[0] == Exit(pid=child, reason=got[0].reason)  # type: ignore[union-attr]
            assert got[1] == Exit(pid=normal, reason="normal")
            return [type(got[0].reason).__name__]  # type: ignore[union-attr]

        assert await in_process(a, body) == ["ValueError"]
        assert quiet(a)


async def test_exit_signal_semantics(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    """exit(pid, reason) as Erlang's exit/2: normal is ignored by a process
    that does not trap, kill cannot be trapped, others are trappable."""
    async with cluster(1) as [a]:

        async def body() -> list[object]:
            reasons: list[object] = []

            async def trapper() -> None:
                runtime.trap_exit(True)
                while True:
                    await runtime.receive()

            plain = runtime.spawn(sleeper)
            runtime.exit(plain, "normal")
            await trio.sleep(0.1)
            assert runtime.is_process_alive(plain)

            trapping = runtime.spawn(trapper)
            await trio.sleep(0.1)  # it traps exits from its first step
            ref = runtime.monitor(trapping)
            runtime.exit(trapping, "shutdown")
            await trio.sleep(0.1)
            assert runtime.is_process_alive(trapping)
            runtime.exit(trapping, "kill")
            down = await runtime.receive(timeout=5)
            assert isinstance(down, runtime.Down)
            assert down.ref == ref
            reasons.append(down.reason)

            ref = runtime.monitor(plain)
            runtime.exit(plain, "stop")
            down = await runtime.receive(timeout=5)
            assert isinstance(down, runtime.Down)
            reasons.append(down.reason)
            return reasons

        assert await in_process(a, body) == ["killed", "stop"]


async def test_killed_propagates_as_trappable_killed(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:

        async def body() -> object:
            runtime.trap_exit(True)
            child = runtime.spawn_link(sleeper)
            runtime.exit(child, "kill")
            return await runtime.receive(timeout=5)

        got = await in_process(a, body)
        assert isinstance(got, Exit)
        assert got.reason == "killed"


async def test_link_to_a_dead_process_gives_noproc(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(2) as [a, b]:

        async def body(remote: runtime.Pid) -> list[object]:
            runtime.trap_exit(True)
            dead = runtime.spawn(trio.sleep, 0)
            await trio.sleep(0.1)
            runtime.link(dead)
            runtime.link(remote)
            first = await runtime.receive(timeout=5)
            second = await runtime.receive(timeout=5)
            return [first, second]

        remote_dead = b.spawn(trio.sleep, 0)
        await trio.sleep(0.1)
        got = await in_process(a, body, remote_dead)
        assert [m.reason for m in got] == ["noproc", "noproc"]
        assert got[1].pid == remote_dead
        assert quiet(a, b)


async def test_remote_link_propagates_both_ways(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(2) as [a, b]:
        # b's process crashes: the linked process on a gets the reason.
        remote = b.spawn(crasher, 0.5)

        async def watch_remote() -> object:
            runtime.trap_exit(True)
            runtime.link(remote)
            return await runtime.receive(timeout=5)

        got = await in_process(a, watch_remote)
        assert isinstance(got, Exit)
        assert got.pid == remote
        assert isinstance(got.reason, runtime.RemoteError)
        assert got.reason.type_name == "ValueError"

        # a's process ends abnormally: b's linked (non-trapping) process dies.
        victim = b.spawn(sleeper)
        watcher_down: list[object] = []

        async def watch_victim() -> None:
            ref = runtime.monitor(victim)
            down = await runtime.receive(
                lambda m: isinstance(m, runtime.Down) and m.ref == ref
            )
            watcher_down.append(down.reason)  # type: ignore[attr-defined]

        b.spawn(watch_victim)

        async def doomed() -> None:
            runtime.link(victim)
            await trio.sleep(0.5)
            raise ProcessExit(["shutdown", "bye"])

        a.spawn(doomed)
        await until(lambda: watcher_down)
        assert watcher_down == [["shutdown", "bye"]]
        await until(lambda: quiet(a, b))


async def test_unlink_stops_propagation(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(2) as [a, b]:
        remote = b.spawn(crasher, 1.0)

        async def body() -> bool:
            runtime.link(remote)
            await trio.sleep(0.2)
            runtime.unlink(remote)
            await trio.sleep(2.0)
            return True

        assert await in_process(a, body)
        assert quiet(a, b)


async def test_node_loss_gives_noconnection(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(2) as [a, b]:
        remote = b.spawn(sleeper)

        async def body() -> object:
            runtime.trap_exit(True)
            runtime.link(remote)
            await trio.sleep(0.2)
            a.inject_partition([b.name])
            return await runtime.receive(timeout=10)

        started = trio.current_time()
        got = await in_process(a, body)
        assert got == Exit(pid=remote, reason="noconnection")
        assert trio.current_time() - started < 3
        # b sees a go silent and drops its end after the heartbeat timeout.
        await until(lambda: quiet(a, b))

        async def after() -> object:
            runtime.trap_exit(True)
            runtime.link(remote)  # node down now: at once
            return await runtime.receive(timeout=1)

        got = await in_process(a, after)
        assert got == Exit(pid=remote, reason="noconnection")


async def test_remote_exit_signal_carries_the_sender(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(2) as [a, b]:
        got: list[object] = []

        async def trapper() -> None:
            runtime.trap_exit(True)
            got.append(await runtime.receive())

        target = b.spawn(trapper)
        await trio.sleep(0.1)

        async def body() -> runtime.Pid:
            runtime.exit(target, "please")
            return runtime.self()

        sender = await in_process(a, body)
        await until(lambda: got)
        assert got == [Exit(pid=sender, reason="please")]


async def test_stopping_a_node_leaves_no_links(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(2) as [a, b]:
        remote = b.spawn(sleeper)

        async def linked() -> None:
            runtime.link(remote)
            await trio.sleep_forever()

        for _ in range(3):
            a.spawn(linked)
        await until(lambda: b.link_counts().remote == 3)
        await b.stop()
        await until(lambda: quiet(a))


async def test_spawn_link_outside_a_process_raises(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        with pytest.raises(runtime.NotInProcess):
            a.spawn(sleeper, link=True)
        with pytest.raises(runtime.NotInProcess):
            runtime.trap_exit(True)
