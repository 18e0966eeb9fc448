"""Goal: processes on one node behave as Erlang's do. Method: one node, real trio.

Spawn, send by pid / name / URI / tuple, selective receive, receive timeouts,
registered names, exit, crashes, the bounded mailbox policy, and that local sends
neither encode nor block.
"""

import logging

import pytest
import trio

import runtime
from runtime import NodeConfig, open_node

SECRET = "test-secret-0123456789"


def config(name: str = "a@127.0.0.1", **kw: object) -> NodeConfig:
    return NodeConfig(name=name, secret=SECRET, **kw)  # type: ignore[arg-type]


async def test_send_and_receive_by_every_target_form() -> None:
    async with open_node(config()) as node:
        got: list[object] = []
        done = trio.Event()

        async def sink() -> None:
            for _ in range(4):
                got.append(await runtime.receive())
            done.set()

        pid = runtime.spawn(sink, name="sink")
        runtime.send(pid, 1)
        runtime.send(pid.uri, 2)
        runtime.send(("sink", node.name), 3)
        runtime.send(runtime.Name(node=node.name, name="sink").uri, 4)
        with trio.fail_after(5):
            await done.wait()
        assert got == [1, 2, 3, 4]


async def test_local_send_passes_the_object_itself() -> None:
    """A local target gets the very object: no encoding, so no copy (documented)."""
    async with open_node(config()):
        received: list[object] = []
        marker = object()  # not even encodable: proves no codec on the local path

        async def sink() -> None:
            received.append(await runtime.receive())

        pid = runtime.spawn(sink)
        assert runtime.send_checked(pid, marker) is runtime.SendStatus.OK
        with trio.fail_after(5):
            while not received:
                await trio.sleep(0.001)
        assert received[0] is marker


async def test_selective_receive_keeps_order_of_the_rest() -> None:
    async with open_node(config()):
        result: list[object] = []
        done = trio.Event()

        async def proc() -> None:
            first = await runtime.receive(
                match=lambda m: isinstance(m, tuple) and m[0] == "b"
            )
            result.append(first)
            result.append(await runtime.receive())
            result.append(await runtime.receive())
            done.set()

        pid = runtime.spawn(proc)
        runtime.send(pid, ("a", 1))
        runtime.send(pid, ("c", 3))
        await trio.sleep(0.01)
        runtime.send(pid, ("b", 2))
        with trio.fail_after(5):
            await done.wait()
        assert result == [("b", 2), ("a", 1), ("c", 3)]


async def test_receive_timeout_raises_and_leaves_mailbox_intact() -> None:
    async with open_node(config()):
        outcome: list[object] = []
        done = trio.Event()

        async def proc() -> None:
            try:
                await runtime.receive(match=lambda m: m == "never", timeout=0.05)
            except runtime.ReceiveTimeout:
                outcome.append("timeout")
            outcome.append(await runtime.receive(timeout=1))
            done.set()

        pid = runtime.spawn(proc)
        runtime.send(pid, "kept")
        with trio.fail_after(5):
            await done.wait()
        assert outcome == ["timeout", "kept"]


async def test_receive_batch_drains_everything_queued() -> None:
    async with open_node(config()):
        batches: list[list[object]] = []
        done = trio.Event()

        async def proc() -> None:
            await trio.sleep(0.01)
            batches.append(await runtime.receive_batch())
            for i in range(5, 8):
                runtime.send(runtime.self(), i)
            batches.append(await runtime.receive_batch(limit=2))
            batches.append(await runtime.receive_batch())
            done.set()

        pid = runtime.spawn(proc)
        for i in range(5):
            runtime.send(pid, i)
        with trio.fail_after(5):
            await done.wait()
        assert batches == [[0, 1, 2, 3, 4], [5, 6], [7]]


async def test_send_to_dead_pid_or_unknown_name_is_silent_and_counted() -> None:
    async with open_node(config()) as node:

        async def quick() -> None:
            return None

        pid = runtime.spawn(quick)
        with trio.fail_after(5):
            while runtime.is_process_alive(pid):
                await trio.sleep(0.001)
        runtime.send(pid, "lost")
        runtime.send(("nobody", node.name), "lost")
        assert runtime.send_checked(pid, "x") is runtime.SendStatus.NO_ROUTE
        assert node.statistics().dropped_no_target_count == 3


async def test_pid_of_an_older_incarnation_reaches_nothing() -> None:
    async with open_node(config()) as node:

        async def sink() -> None:
            await runtime.receive()

        pid = runtime.spawn(sink)
        stale = runtime.Pid(node=node.name, creation=node.creation + 1, id=pid.id)
        assert runtime.send_checked(stale, "x") is runtime.SendStatus.NO_ROUTE
        assert runtime.is_process_alive(pid)
        runtime.exit(pid)


async def test_exit_kills_a_process_and_frees_its_name() -> None:
    async with open_node(config()):

        async def forever() -> None:
            await trio.sleep_forever()

        pid = runtime.spawn(forever, name="worker")
        assert runtime.whereis("worker") == pid
        runtime.exit(pid, "stop")
        with trio.fail_after(5):
            while runtime.is_process_alive(pid):
                await trio.sleep(0.001)
        assert runtime.whereis("worker") is None
        runtime.spawn(forever, name="worker")  # the name is free again


async def test_crashing_process_is_logged_and_node_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_node(config()):

        async def boom() -> None:
            raise ValueError("kaput")

        with caplog.at_level(logging.ERROR, logger="runtime.node"):
            pid = runtime.spawn(boom)
            with trio.fail_after(5):
                while runtime.is_process_alive(pid):
                    await trio.sleep(0.001)
        assert any("crashed" in r.message for r in caplog.records)
        assert runtime.spawn(boom)  # the node still spawns


async def test_register_rejects_taken_names() -> None:
    async with open_node(config()):

        async def forever() -> None:
            await trio.sleep_forever()

        runtime.spawn(forever, name="x")
        with pytest.raises(ValueError, match="already registered"):
            runtime.spawn(forever, name="x")


async def test_bounded_mailbox_refuses_without_blocking_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_node(config(mailbox_length_max=3)) as node:

        async def idle() -> None:
            await trio.sleep_forever()

        pid = runtime.spawn(idle)
        with caplog.at_level(logging.WARNING, logger="runtime.node"):
            statuses = [runtime.send_checked(pid, i) for i in range(5)]
        assert [r.message for r in caplog.records if "is full" in r.message] == [
            f"mailbox of {pid.uri} is full (3 messages): 1 dropped so far"
        ]
        assert statuses.count(runtime.SendStatus.OK) == 3
        assert node.statistics().mailbox_overflow_count == 2
        runtime.exit(pid)


async def test_process_functions_outside_a_process_raise() -> None:
    with pytest.raises(runtime.NotInProcess):
        runtime.self()
    async with open_node(config()):
        with pytest.raises(runtime.NotInProcess):
            await runtime.receive()


async def test_spawn_after_stop_raises() -> None:
    async with open_node(config()) as node:
        pass

    async def noop() -> None:
        return None

    with pytest.raises(runtime.RuntimeStopped):
        node.spawn(noop)


async def test_bad_target_raises_bad_reference() -> None:
    async with open_node(config()):
        with pytest.raises(runtime.BadReference):
            runtime.send("not-a-uri", 1)
        with pytest.raises(runtime.BadReference):
            runtime.send(42, 1)
