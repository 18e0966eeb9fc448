"""Goal: GenServer keeps OTP gen_server's promises, on one node and across two.

Method: servers on nodes of the in-memory network under MockClock (autojump),
so timeouts and heartbeats cost no real time; one test runs over real TCP
(tests/runtime/behaviours/test_behaviours_tcp.py). Each test names the promise
it checks: callbacks and their return values, deferred replies, stop,
timeouts and continues, and that a call to a server that dies, a node that
goes away or a name that does not exist fails at once with its own exception,
and that a late reply never reaches the caller.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import runtime
from runtime import behaviours
from runtime.behaviours import (
    IGNORE,
    TIMEOUT,
    AlreadyStarted,
    CallTimeout,
    From,
    GenServer,
    NodeDownError,
    NoProcessError,
    NoReply,
    Reply,
    ServerExited,
    StartError,
    Stop,
    call,
    cast,
    reply,
)


async def until(predicate: Any, seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


class Counter(GenServer[int]):
    """Adds, reports, crashes, sleeps and defers on request."""

    def __init__(self, log: list[object] | None = None) -> None:
        self.log = log if log is not None else []
        self.deferred: list[From] = []

    async def init(self, start: int) -> int:
        return start

    async def handle_call(self, request: Any, from_: From, count: int) -> Any:
        match request:
            case ["add", n]:
                return Reply(count + n, count + n)
            case "get":
                return Reply(count, count)
            case "crash":
                raise ValueError("boom")
            case ["sleep", seconds]:
                await trio.sleep(seconds)
                return Reply("slept", count)
            case "defer":
                self.deferred.append(from_)
                return NoReply(count)
            case "release":
                for waiting in self.deferred:
                    reply(waiting, count)
                self.deferred.clear()
                return Reply(True, count)
            case ["stop", reason]:
                return Stop(reason, count, reply="stopping")
            case "caller":
                return Reply(from_.pid, count)
            case "self":
                with pytest.raises(behaviours.CallError, match="itself"):
                    await call(runtime.self(), "get")
                return Reply("refused", count)
        return Reply(["unknown", request], count)

    async def handle_cast(self, request: Any, count: int) -> Any:
        match request:
            case ["add", n]:
                return NoReply(count + n)
            case "crash":
                raise RuntimeError("cast crash")
        return NoReply(count)

    async def handle_info(self, message: Any, count: int) -> Any:
        self.log.append(("info", message))
        return NoReply(count)

    async def terminate(self, reason: object, count: int) -> None:
        self.log.append(("terminate", reason, count))


# -- one node --------------------------------------------------------------------


async def test_call_cast_and_info_by_every_target_form(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[object] = []
        pid = await behaviours.start(Counter(log), 1, name="counter")
        assert pid is not None
        assert await call(pid, ["add", 1]) == 2
        assert await call("counter", ["add", 1]) == 3
        assert await call(("counter", a.name), ["add", 1]) == 4
        assert await call(runtime.Name(node=a.name, name="counter"), ["add", 1]) == 5
        assert await call(pid.uri, "get") == 5
        cast("counter", ["add", 10])
        runtime.send(pid, "hello")
        assert await call(pid, "get") == 15
        assert log == [("info", "hello")]


async def test_cast_then_call_from_one_process_stay_in_order(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:
        pid = await behaviours.start(Counter(), 0)

        async def body() -> object:
            for _ in range(100):
                cast(pid, ["add", 1])
            return await call(pid, "get")

        assert await in_process(a, body) == 100


async def test_deferred_reply_from_another_process(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        pid = await behaviours.start(Counter(), 7)
        results: list[object] = []

        async def waiter() -> None:
            results.append(await call(pid, "defer"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.sleep(1)
            assert results == []
            assert await call(pid, "release") is True
        assert results == [7, 7]


async def test_from_carries_the_calling_process(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:
        pid = await behaviours.start(Counter(), 0)

        async def body() -> bool:
            return await call(pid, "caller") == runtime.self()

        assert await in_process(a, body)
        assert await call(pid, "caller") is None  # not called from a process
        assert await call(pid, "self") == "refused"


async def test_stop_runs_terminate_with_the_reason(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[object] = []
        pid = await behaviours.start(Counter(log), 3)
        await behaviours.stop(pid, "shutdown")
        assert log == [("terminate", "shutdown", 3)]
        assert not a.is_process_alive(pid)
        with pytest.raises(NoProcessError):
            await behaviours.stop(pid)


async def test_stop_result_replies_before_terminating(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[object] = []
        pid = await behaviours.start(Counter(log), 3)
        assert await call(pid, ["stop", "normal"]) == "stopping"
        await until(lambda: not a.is_process_alive(pid))
        assert log == [("terminate", "normal", 3)]


async def test_timeout_and_continue_return_values(
    autojump_clock: Any, cluster: Any
) -> None:
    events: list[object] = []

    class Ticker(GenServer[int]):
        async def init(self, _: object) -> Any:
            return NoReply(0, continue_="setup")

        async def handle_continue(self, continue_: Any, state: int) -> Any:
            events.append(("continue", continue_, trio.current_time() >= 0))
            return NoReply(state, timeout=1.0)

        async def handle_info(self, message: Any, state: int) -> Any:
            events.append(("info", message))
            if message is TIMEOUT and state < 2:
                return NoReply(state + 1, timeout=1.0)
            return NoReply(state)

        async def handle_call(self, request: Any, from_: From, state: int) -> Any:
            return Reply(state, state, timeout=0.5)

    async with cluster(1):
        pid = await behaviours.start(Ticker())
        await trio.sleep(3.5)
        assert events == [
            ("continue", "setup", True),
            ("info", TIMEOUT),
            ("info", TIMEOUT),
            ("info", TIMEOUT),
        ]
        # A message before the timeout cancels it.
        events.clear()
        assert await call(pid, "get") == 2
        runtime.send(pid, "ping")
        await trio.sleep(0.1)
        assert events == [("info", "ping")]


async def test_a_crash_in_handle_call_fails_the_call_at_once(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        log: list[object] = []
        pid = await behaviours.start(Counter(log), 0)
        started = trio.current_time()
        with pytest.raises(ServerExited) as info:
            await call(pid, "crash", timeout=30)
        assert trio.current_time() - started < 0.1
        assert isinstance(info.value.reason, ValueError)
        assert log[-1][0] == "terminate"  # type: ignore[index]
        assert isinstance(log[-1][1], ValueError)  # type: ignore[index]
        # The server is gone: a call now is noproc, known at once.
        with pytest.raises(NoProcessError):
            await call(pid, "get", timeout=30)
        assert trio.current_time() - started < 0.1


async def test_queued_and_deferred_calls_fail_when_the_server_dies(
    autojump_clock: Any,
    cluster: Any,
) -> None:
    async with cluster(1):
        pid = await behaviours.start(Counter(), 0)
        outcomes: list[object] = []

        async def caller(request: object) -> None:
            try:
                outcomes.append(await call(pid, request, timeout=30))
            except ServerExited as exc:
                outcomes.append(("exited", exc.reason))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, "defer")
            await trio.sleep(0.1)
            nursery.start_soon(caller, ["sleep", 5])
            await trio.sleep(0.1)
            nursery.start_soon(caller, "get")  # queued behind the sleeping call
            await trio.sleep(0.1)
            runtime.exit(pid, "kill")
        assert sorted(map(repr, outcomes)) == [repr(("exited", "killed"))] * 3


async def test_a_call_to_a_missing_name_fails_at_once(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        with pytest.raises(NoProcessError):
            await call("nobody", "get", timeout=30)


async def test_timeout_then_the_late_reply_is_dropped(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:
        pid = await behaviours.start(Counter(), 0)

        async def body() -> int:
            with pytest.raises(CallTimeout):
                await call(pid, ["sleep", 2], timeout=1)
            await trio.sleep(2)  # the reply comes now, to a closed address
            return len(a._processes[runtime.self().uri].mailbox)

        dropped = a.statistics().dropped_no_target_count
        assert await in_process(a, body) == 0
        assert a.statistics().dropped_no_target_count == dropped + 1
        assert await call(pid, "get") == 0  # the server lives on


async def test_a_cancelled_call_closes_its_reply_address(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        pid = await behaviours.start(Counter(), 0)
        targets = len(a._targets)
        with trio.move_on_after(0.5):
            await call(pid, ["sleep", 1], timeout=None)
        assert len(a._targets) == targets
        await trio.sleep(1)
        assert await call(pid, "get") == 0
        assert a.monitor_counts() == runtime.MonitorCounts(0, 0, 0, 0, 0)


async def test_init_failures_and_ignore(autojump_clock: Any, cluster: Any) -> None:
    class Failing(GenServer[None]):
        async def init(self, how: str) -> Any:
            if how == "raise":
                raise KeyError("no")
            if how == "stop":
                return Stop("refused")
            return IGNORE

    async with cluster(1) as [a]:
        with pytest.raises(StartError) as info:
            await behaviours.start(Failing(), "raise")
        assert isinstance(info.value.__cause__, KeyError)
        with pytest.raises(StartError) as info:
            await behaviours.start(Failing(), "stop")
        assert info.value.reason == "refused"
        assert await behaviours.start(Failing(), "ignore") is None
        await behaviours.start(Counter(), 0, name="taken")
        with pytest.raises(AlreadyStarted):
            await behaviours.start(Counter(), 0, name="taken")
        await trio.sleep(0.1)
        assert len(a.processes()) == 1


async def test_start_timeout_kills_the_server(
    autojump_clock: Any, cluster: Any
) -> None:
    class Slow(GenServer[None]):
        async def init(self, _: object) -> None:
            await trio.sleep(10)

    async with cluster(1) as [a]:
        with pytest.raises(StartError) as info:
            await behaviours.start(Slow(), timeout=1)
        assert info.value.reason == "timeout"
        await trio.sleep(0.1)
        assert a.processes() == []


async def test_a_failed_init_does_not_kill_the_linked_starter(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    class Failing(GenServer[None]):
        async def init(self, _: object) -> None:
            raise ValueError("init")

    async with cluster(1) as [a]:

        async def body() -> bool:
            with pytest.raises(StartError):
                await behaviours.start_link(Failing())
            await trio.sleep(0.5)
            return True

        assert await in_process(a, body)


async def test_a_trapping_server_terminates_when_its_parent_exits(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    log: list[object] = []

    class Trapping(Counter):
        async def init(self, start: int) -> int:
            runtime.trap_exit(True)
            return start

    async with cluster(1) as [a]:
        pids: list[runtime.Pid] = []

        async def parent() -> None:
            pid = await behaviours.start_link(Trapping(log), 1)
            assert pid is not None
            pids.append(pid)
            raise runtime.ProcessExit("shutdown")

        a.spawn(parent)
        await until(lambda: log)
        assert log == [("terminate", "shutdown", 1)]
        assert not a.is_process_alive(pids[0])

        # Not trapping: killed by the parent's exit signal, no terminate.
        log.clear()
        pids.clear()

        async def parent2() -> None:
            pid = await behaviours.start_link(Counter(log), 1)
            assert pid is not None
            pids.append(pid)
            raise runtime.ProcessExit("shutdown")

        a.spawn(parent2)
        await until(lambda: pids and not a.is_process_alive(pids[0]))
        assert log == []


async def test_bad_return_values_crash_the_server(
    autojump_clock: Any, cluster: Any
) -> None:
    class Bad(GenServer[None]):
        async def handle_cast(self, request: Any, state: None) -> Any:
            return Reply(1, state)

    async with cluster(1) as [a]:
        pid = await behaviours.start(Bad())
        ref_pid = pid

        async def watch() -> object:
            ref = runtime.monitor(ref_pid)
            cast(ref_pid, "x")
            down = await runtime.receive(lambda m: getattr(m, "ref", None) == ref)
            return down.reason  # type: ignore[attr-defined]

        reasons: list[object] = []

        async def body() -> None:
            reasons.append(await watch())

        a.spawn(body)
        await until(lambda: reasons)
        assert isinstance(reasons[0], TypeError)


# -- two nodes ---------------------------------------------------------------------


async def test_remote_calls_by_name_and_uri(
    autojump_clock: Any, cluster: Any, in_process: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            remote = await behaviours.start(Counter(), 10, name="counter")
        with at(a):
            assert await call(("counter", b.name), ["add", 1]) == 11
            assert await call(f"partisan:name:{b.name}:counter", "get") == 11
            assert await call(remote, "get") == 11
            cast(("counter", b.name), ["add", 1])
            assert await call(remote, "get") == 12
            caller = await in_process(a, lambda: call(remote, "caller"))
            assert isinstance(caller, runtime.Pid)
            assert caller.node == a.name


async def test_remote_crash_comes_back_as_remote_error(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            remote = await behaviours.start(Counter(), 0)
        with at(a):
            started = trio.current_time()
            with pytest.raises(ServerExited) as info:
                await call(remote, "crash", timeout=30)
            assert trio.current_time() - started < 1
        reason = info.value.reason
        assert isinstance(reason, runtime.RemoteError)
        assert reason.type_name == "ValueError"
        assert "boom" in reason.message
        assert "Traceback" in reason.remote_traceback


async def test_remote_missing_name_fails_in_one_round_trip(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        with at(a):
            started = trio.current_time()
            with pytest.raises(NoProcessError):
                await call(("nobody", b.name), "get", timeout=30)
            assert trio.current_time() - started < 1


async def test_a_call_to_a_node_that_is_not_up_fails_at_once(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        with pytest.raises(NodeDownError):
            await call(("counter", "ghost@sim"), "get", timeout=30)


@pytest.mark.parametrize("cut_on", ["caller", "server"])
async def test_a_partition_fails_the_call_once_the_node_is_known_down(
    autojump_clock: Any, cluster: Any, at: Any, cut_on: str
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            remote = await behaviours.start(Counter(), 0)
        failed_at: list[float] = []

        async def caller() -> None:
            with pytest.raises(NodeDownError):
                await call(remote, ["sleep", 100], timeout=60)
            failed_at.append(trio.current_time())

        with at(a):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                await trio.sleep(0.5)
                started = trio.current_time()
                if cut_on == "caller":
                    a.inject_partition([b.name])
                else:
                    b.inject_partition([a.name])
            # On the caller's side the connections close at once; from the
            # server's side the caller hears silence for the heartbeat timeout.
            assert failed_at[0] - started < (0.5 if cut_on == "caller" else 3.0)
            with pytest.raises(NodeDownError):
                await call(remote, "get", timeout=60)


async def test_a_remote_late_reply_is_dropped_by_the_callers_node(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            remote = await behaviours.start(Counter(), 0)
        with at(a):
            dropped = a.statistics().dropped_no_target_count
            with pytest.raises(CallTimeout):
                await call(remote, ["sleep", 2], timeout=1)
            await until(lambda: a.statistics().dropped_no_target_count == dropped + 1)
            assert await call(remote, "get") == 0


async def test_remote_stop_and_deferred_reply(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        log: list[object] = []
        with at(b):
            remote = await behaviours.start(Counter(log), 5, name="c")
        got: list[object] = []

        async def waiter() -> None:
            got.append(await call(remote, "defer"))

        with at(a):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.5)
                assert await call(remote, "release") is True
            assert got == [5]
            await behaviours.stop(("c", b.name), ["shutdown", "test"])
        assert log == [("terminate", ["shutdown", "test"], 5)]


async def test_a_remote_server_that_is_killed_fails_its_callers(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        with at(b):
            remote = await behaviours.start(Counter(), 0)
        reasons: list[object] = []

        async def caller(request: object) -> None:
            with pytest.raises(ServerExited) as info:
                await call(remote, request, timeout=60)
            reasons.append(info.value.reason)

        with at(a):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller, "defer")
                nursery.start_soon(caller, ["sleep", 30])
                await trio.sleep(0.5)
                started = trio.current_time()
                b.exit(remote, "kill")
        assert reasons == ["killed", "killed"]
        assert trio.current_time() - started < 1
