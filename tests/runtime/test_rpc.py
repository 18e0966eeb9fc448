"""Goal: rpc runs only exported functions, mirrors erpc's call / cast /
multicall, reports remote errors safely, bounds inbound concurrency with an
``overloaded`` refusal, and fails promptly when a node is down or cut off.

Method: nodes on the in-memory network under MockClock (autojump); each test
names the promise. Error descriptions crafted by hand check that no class is
ever built from a name off the wire except builtins and registered ones. The
real-TCP rpc test lives in tests/runtime/behaviours/test_behaviours_tcp.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio

import runtime
from runtime import (
    FailureDetectorConfig,
    MembershipConfig,
    Node,
    NodeConfig,
    RemoteError,
    open_node,
    rpc,
)
from runtime.behaviours import CallTimeout, NodeDownError, Overloaded
from runtime.shell.node import _current_node
from runtime.testing import MemoryNetwork

SECRET = "test-secret-0123456789"
MEMBERSHIP = MembershipConfig(
    failure_detector=FailureDetectorConfig(
        heartbeat_interval=0.5, heartbeat_timeout=2.0
    )
)


@asynccontextmanager
async def cluster(count: int) -> AsyncIterator[list[Node]]:
    network = MemoryNetwork(seed=7)
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for index in range(count):
            config = NodeConfig(
                name=f"r{index}@sim",
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
                n.membership.is_up(o.name) and n.is_fully_connected(o.name)
                for n in nodes
                for o in nodes
                if o is not n
            )
        )
        yield nodes


@contextmanager
def at(node: Node) -> Iterator[Node]:
    token = _current_node.set(node)
    try:
        yield node
    finally:
        _current_node.reset(token)


async def until(predicate: Callable[[], object], seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


def add(x: int, y: int) -> int:
    return x + y


async def slow(seconds: float) -> str:
    await trio.sleep(seconds)
    return "done"


def fail(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad value")
    if kind == "custom":
        raise Custom("custom failure")
    if kind == "registered":
        raise Registered("registered failure")


class Custom(Exception):
    pass


class Registered(Exception):
    pass


async def whoami() -> list[object]:
    return [runtime.self(), runtime.node()]


async def test_call_runs_exported_functions_locally_and_remotely(
    autojump_clock: Any,
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("add", add)
            await rpc.export("whoami", whoami)
            assert rpc.exported() == ["add", "whoami"]
            assert await rpc.call(b.name, "add", [1, 2]) == 3  # this node
        with at(a):
            assert await rpc.call(b.name, "add", (2, 3)) == 5
            pid, node = await rpc.call(b.name, "whoami")  # type: ignore[misc]
            assert isinstance(pid, runtime.Pid)
            assert node == b.name
        # Each call ran in a process of its own, now gone.
        assert not b.is_process_alive(pid)


async def test_only_exported_names_run(autojump_clock: Any) -> None:
    async with cluster(2) as [a, b]:
        # Nothing exported on b: its router answers for the missing service.
        with at(a), pytest.raises(rpc.NotExported):
            await rpc.call(b.name, "add", [1, 2], timeout=30)
        with at(b):
            await rpc.export("add", add)
        with at(a):
            for name in ("os.system", "eval", "__import__", "add.__globals__"):
                with pytest.raises(rpc.NotExported):
                    await rpc.call(b.name, name, ["x"], timeout=30)
        with at(b):
            assert rpc.statistics().refused_undef_count == 4
            assert rpc.unexport("add")
            assert not rpc.unexport("add")
        with at(a), pytest.raises(rpc.NotExported):
            await rpc.call(b.name, "add", [1, 2])
        with at(b):
            await rpc.export("x", add)
            with pytest.raises(ValueError, match="already exported"):
                await rpc.export("x", add)
            with pytest.raises(TypeError):
                await rpc.export("y", 42)  # type: ignore[arg-type]


async def test_remote_errors_keep_type_message_and_traceback(
    autojump_clock: Any,
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("fail", fail)
        with at(a):
            with pytest.raises(ValueError, match="bad value") as builtin:
                await rpc.call(b.name, "fail", ["value"])
            cause = builtin.value.__cause__
            assert isinstance(cause, RemoteError)
            assert cause.type_name == "ValueError"
            assert "Traceback" in cause.remote_traceback
            with pytest.raises(RemoteError) as custom:
                await rpc.call(b.name, "fail", ["custom"])
            assert custom.value.type_name == "Custom"
            assert custom.value.message == "custom failure"
            rpc.register_error(Registered)
            with pytest.raises(Registered, match="registered failure"):
                await rpc.call(b.name, "fail", ["registered"])
        # A result that is not plain data is an error, not a crash.
        with at(b):
            await rpc.export("object", lambda: object())
        with at(a), pytest.raises(TypeError, match="cannot send"):
            await rpc.call(b.name, "object")


def test_no_class_is_built_from_a_name_off_the_wire() -> None:
    cases: list[object] = [
        {"error": "SystemExit", "module": "builtins", "message": "x"},
        {"error": "KeyboardInterrupt", "module": "builtins", "message": "x"},
        {"error": "print", "module": "builtins", "message": "x"},
        {"error": "Popen", "module": "subprocess", "message": "ls"},
        {"error": "Custom", "module": __name__, "message": "x"},
        "not even a dict",
    ]
    for description in cases:
        assert type(rpc._remote_exception(description)) is RemoteError
    built = rpc._remote_exception(
        {"error": "KeyError", "module": "builtins", "message": "k", "traceback": "tb"}
    )
    assert type(built) is KeyError
    assert isinstance(built.__cause__, RemoteError)


async def test_each_call_runs_in_its_own_process_so_a_slow_one_blocks_none(
    autojump_clock: Any,
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("slow", slow)
            await rpc.export("add", add)
        done: list[object] = []

        async def slow_call() -> None:
            done.append(await rpc.call(b.name, "slow", [10], timeout=None))

        with at(a):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                await trio.sleep(0.5)
                started = trio.current_time()
                assert await rpc.call(b.name, "add", [1, 1]) == 2
                assert trio.current_time() - started < 0.5
                assert done == []
            assert done == ["done"]


async def test_inbound_concurrency_is_bounded_and_excess_refused(
    autojump_clock: Any,
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("slow", slow)
            rpc.configure(concurrency_max=2)
        outcomes: list[object] = []

        async def one() -> None:
            try:
                outcomes.append(await rpc.call(b.name, "slow", [5], timeout=30))
            except Overloaded:
                outcomes.append(("refused", trio.current_time() - started))

        with at(a):
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(one)
                    await trio.sleep(0.1)
        assert outcomes[0][0] == "refused"  # type: ignore[index]
        assert outcomes[0][1] < 1  # type: ignore[index]
        assert outcomes[1:] == ["done", "done"]
        with at(b):
            stats = rpc.statistics()
        assert stats.refused_overloaded_count == 1
        assert stats.in_flight_count == 0
        assert stats.calls_count == 3


async def test_cast_runs_without_an_answer(autojump_clock: Any) -> None:
    async with cluster(2) as [a, b]:
        seen: list[object] = []
        with at(b):
            await rpc.export("note", seen.append)
        with at(a):
            rpc.cast(b.name, "note", ["hello"])
            rpc.cast(b.name, "missing", [])
        await until(lambda: seen)
        assert seen == ["hello"]
        with at(b):
            assert rpc.statistics().casts_count == 2


async def test_multicall_gives_one_outcome_per_node(autojump_clock: Any) -> None:
    async with cluster(3) as [a, b, c]:
        for node in (a, b):
            with at(node):
                await rpc.export("whoami", lambda: runtime.node())
        with at(c):
            await rpc.export("other", add)
        with at(a):
            outcomes = await rpc.multicall(
                [a.name, b.name, c.name, "ghost@sim"], "whoami", timeout=5
            )
        assert [o.node for o in outcomes] == [a.name, b.name, c.name, "ghost@sim"]
        assert outcomes[0].unwrap() == a.name
        assert outcomes[1].value == b.name
        assert isinstance(outcomes[2].error, rpc.NotExported)
        assert isinstance(outcomes[3].error, NodeDownError)
        assert [o.ok for o in outcomes] == [True, True, False, False]


async def test_rpc_travels_on_the_rpc_channel(autojump_clock: Any) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("add", add)

        def sent(node: Node, channel: str) -> int:
            return sum(
                s.frames_sent_count
                for s in node.statistics().slots
                if s.channel == channel
            )

        before = sent(a, "rpc"), sent(b, "rpc")
        with at(a):
            for _ in range(10):
                await rpc.call(b.name, "add", [1, 2])
        assert sent(a, "rpc") - before[0] >= 10
        assert sent(b, "rpc") - before[1] >= 10


@pytest.mark.parametrize("cut_on", ["caller", "callee"])
async def test_a_call_to_a_partitioned_node_fails_promptly(
    autojump_clock: Any, cut_on: str
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("slow", slow)
        failed: list[float] = []

        async def caller() -> None:
            with pytest.raises(NodeDownError):
                await rpc.call(b.name, "slow", [100], timeout=60)
            failed.append(trio.current_time())

        with at(a):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                await trio.sleep(0.5)
                started = trio.current_time()
                if cut_on == "caller":
                    a.inject_partition([b.name])
                else:
                    b.inject_partition([a.name])
            assert failed[0] - started < (0.5 if cut_on == "caller" else 3.0)
            with pytest.raises(NodeDownError):
                await rpc.call(b.name, "slow", [1])


async def test_timeout_and_the_late_answer_is_dropped(autojump_clock: Any) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("slow", slow)
        with at(a):
            dropped = a.statistics().dropped_no_target_count
            with pytest.raises(CallTimeout):
                await rpc.call(b.name, "slow", [3], timeout=1)
            await until(lambda: a.statistics().dropped_no_target_count == dropped + 1)


async def test_the_service_runs_under_the_root_supervisor_and_restarts(
    autojump_clock: Any,
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            await rpc.export("add", add)
            children = await runtime.behaviours.which_children("partisan_sup")
        assert [c.id for c in children] == [rpc.SERVICE_NAME]
        service = b.whereis(rpc.SERVICE_NAME)
        assert service is not None
        b.exit(service, "kill")
        await until(lambda: b.whereis(rpc.SERVICE_NAME) not in (None, service))
        with at(a):
            assert await rpc.call(b.name, "add", [2, 2]) == 4  # exports survive
