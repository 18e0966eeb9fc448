"""Goal: Supervisor keeps OTP supervisor's promises: the three strategies,
permanent / transient / temporary children, restart intensity (a supervisor
that exceeds it stops and its own supervisor sees it), ordered shutdown with
timeouts, dynamic children, the node's root supervisor; and no link is left
behind.

Method: GenServer workers on an in-memory node under MockClock (autojump),
which log their starts and terminates (workers that trap exits get
``terminate`` on shutdown, as in OTP), so each test checks which children were
restarted, in which order things happened, and how long shutdowns took.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import runtime
from runtime import LinkCounts, behaviours
from runtime.behaviours import (
    ChildSpec,
    From,
    GenServer,
    NoReply,
    Reply,
    StartError,
    Stop,
    Supervisor,
    SupervisorError,
    SupervisorSpec,
    call,
)
from runtime.behaviours import supervisor as sup


async def until(predicate: Any, seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


class Worker(GenServer[None]):
    def __init__(
        self,
        name: str,
        log: list[tuple[object, ...]],
        *,
        trap: bool = False,
        stubborn: bool = False,
        fail_init: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        self.trap = trap
        self.stubborn = stubborn
        self.fail_init = fail_init

    async def init(self, _: object) -> None:
        if self.fail_init:
            raise RuntimeError(f"{self.name} cannot start")
        if self.trap:
            runtime.trap_exit(True)
        self.log.append(("start", self.name))

    async def handle_call(self, request: Any, from_: From, state: None) -> Any:
        match request:
            case "crash":
                raise ValueError(f"{self.name} crashed")
            case ["stop", reason]:
                return Stop(reason, reply="ok")
        return Reply(runtime.self(), state)

    async def handle_cast(self, request: Any, state: None) -> Any:
        return NoReply(state)

    async def terminate(self, reason: object, state: None) -> None:
        self.log.append(("terminate", self.name, reason))
        if self.stubborn:
            await trio.sleep_forever()


def child(
    name: str, log: list[tuple[object, ...]], *, restart: str = "permanent", **kw: Any
) -> ChildSpec:
    shutdown = kw.pop("shutdown", 5.0)
    return ChildSpec(
        id=name,
        start=lambda: behaviours.start_link(Worker(name, log, **kw)),
        restart=restart,
        shutdown=shutdown,
    )


async def pids(supervisor: object) -> dict[str, runtime.Pid | None]:
    return {c.id: c.pid for c in await sup.which_children(supervisor)}


async def crash(pid: object) -> None:
    with pytest.raises(behaviours.ServerExited):
        await call(pid, "crash")


async def start_sup(spec: SupervisorSpec, **kw: Any) -> runtime.Pid:
    pid = await behaviours.start(Supervisor(spec), **kw)
    assert pid is not None
    return pid


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        ("one_for_one", {"b"}),
        ("one_for_all", {"a", "b", "c"}),
        ("rest_for_one", {"b", "c"}),
    ],
)
async def test_strategies_restart_the_right_children_in_order(
    autojump_clock: Any, cluster: Any, strategy: str, restarted: set[str]
) -> None:
    async with cluster(1):
        log: list[tuple[object, ...]] = []
        spec = SupervisorSpec(
            strategy=strategy,
            intensity=5,
            children=[child(name, log, trap=True) for name in "abc"],
        )
        supervisor = await start_sup(spec)
        before = await pids(supervisor)
        assert log == [("start", "a"), ("start", "b"), ("start", "c")]
        log.clear()
        await crash(before["b"])
        await until(lambda: len([e for e in log if e[0] == "start"]) == len(restarted))
        after = await pids(supervisor)
        changed = {name for name in "abc" if after[name] != before[name]}
        assert changed == restarted
        assert all(pid is not None for pid in after.values())
        # Others are shut down in reverse start order, then all restart in order.
        shut = [e[1] for e in log if e[0] == "terminate" and e[2] == "shutdown"]
        assert shut == sorted(restarted - {"b"}, reverse=True)
        assert [e[1] for e in log if e[0] == "start"] == sorted(restarted)


async def test_restart_types(autojump_clock: Any, cluster: Any) -> None:
    async with cluster(1):
        log: list[tuple[object, ...]] = []
        spec = SupervisorSpec(
            intensity=10,
            children=[
                child("perm", log),
                child("trans", log, restart="transient"),
                child("temp", log, restart="temporary"),
            ],
        )
        supervisor = await start_sup(spec)
        first = await pids(supervisor)
        # A normal exit: only the permanent child comes back.
        for name in ("perm", "trans", "temp"):
            assert await call(first[name], ["stop", "normal"]) == "ok"
        await until(lambda: log.count(("start", "perm")) == 2)
        await trio.sleep(1)
        now = await pids(supervisor)
        assert set(now) == {"perm", "trans"}  # the temporary spec is gone
        assert now["trans"] is None
        assert await sup.restart_child(supervisor, "trans") is not None
        # A crash: the transient child comes back too; ("shutdown", x) does not.
        await crash((await pids(supervisor))["trans"])
        await until(lambda: log.count(("start", "trans")) == 3)
        trans = (await pids(supervisor))["trans"]
        assert await call(trans, ["stop", ("shutdown", "done")]) == "ok"
        await trio.sleep(1)
        assert (await pids(supervisor))["trans"] is None


async def test_exceeding_the_intensity_stops_the_supervisor(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[tuple[object, ...]] = []
        spec = SupervisorSpec(
            intensity=2, period=10, children=[child("w", log), child("x", log)]
        )
        supervisor = await start_sup(spec)

        async def watch() -> object:
            ref = runtime.monitor(supervisor)
            for _ in range(3):
                await crash((await pids(supervisor))["w"])
                await trio.sleep(1)
            down = await runtime.receive(lambda m: getattr(m, "ref", None) == ref)
            return down.reason  # type: ignore[attr-defined]

        assert await in_process(a, watch) == "shutdown"
        await trio.sleep(0.1)
        assert a.processes() == []
        assert a.link_counts() == LinkCounts(0, 0)

        # Spaced beyond the period, as many crashes as you like.
        log.clear()
        supervisor = await start_sup(spec)
        for _ in range(5):
            await crash((await pids(supervisor))["w"])
            await trio.sleep(6)
        assert a.is_process_alive(supervisor)


async def test_escalation_to_the_parent_supervisor(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1):
        log: list[tuple[object, ...]] = []
        inner = SupervisorSpec(intensity=1, children=[child("w", log)])
        outer = SupervisorSpec(
            intensity=3,
            children=[
                ChildSpec(
                    id="inner",
                    start=lambda: behaviours.start_link(Supervisor(inner)),
                    type="supervisor",
                )
            ],
        )
        top = await start_sup(outer)
        assert (await sup.which_children(top))[0].type == "supervisor"
        inner_pid = (await pids(top))["inner"]
        for _ in range(2):
            await crash((await pids(inner_pid))["w"])
        # The inner supervisor gave up; the outer one restarted it.
        await until(lambda: log.count(("start", "w")) == 3)
        new_inner = (await pids(top))["inner"]
        assert new_inner is not None
        assert new_inner != inner_pid
        assert (await pids(new_inner))["w"] is not None


async def test_ordered_shutdown_with_timeouts(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[tuple[object, ...]] = []
        spec = SupervisorSpec(
            children=[
                child("first", log, trap=True),
                child("stubborn", log, trap=True, stubborn=True, shutdown=3.0),
                child("brutal", log, trap=True, shutdown="brutal_kill"),
                child("last", log, trap=True),
            ]
        )
        supervisor = await start_sup(spec)
        started = trio.current_time()
        await behaviours.stop(supervisor, "shutdown")
        elapsed = trio.current_time() - started
        assert [e[1] for e in log if e[0] == "terminate"] == [
            "last",
            "stubborn",
            "first",
        ]
        assert 3.0 <= elapsed < 3.5  # the stubborn child was killed at its timeout
        assert a.processes() == []
        assert a.link_counts() == LinkCounts(0, 0)


async def test_a_child_that_does_not_trap_is_just_ended(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[tuple[object, ...]] = []
        supervisor = await start_sup(SupervisorSpec(children=[child("plain", log)]))
        await behaviours.stop(supervisor)
        assert [e[0] for e in log] == ["start"]  # no terminate, as in OTP
        assert a.processes() == []


async def test_dynamic_children(autojump_clock: Any, cluster: Any) -> None:
    async with cluster(1):
        log: list[tuple[object, ...]] = []
        supervisor = await start_sup(SupervisorSpec(intensity=5))
        pid = await sup.start_child(supervisor, child("d1", log))
        assert pid is not None
        with pytest.raises(SupervisorError) as info:
            await sup.start_child(supervisor, child("d1", log))
        assert info.value.reason == ("already_started", pid)
        await sup.start_child(supervisor, child("d2", log, restart="temporary"))
        assert await sup.count_children(supervisor) == {
            "specs": 2,
            "active": 2,
            "supervisors": 0,
            "workers": 2,
        }
        await sup.terminate_child(supervisor, "d1")
        assert (await pids(supervisor)) == {
            "d1": None,
            "d2": (await pids(supervisor))["d2"],
        }
        with pytest.raises(SupervisorError) as info:
            await sup.start_child(supervisor, child("d1", log))
        assert info.value.reason == "already_present"
        await sup.terminate_child(supervisor, "d2")  # temporary: spec removed
        assert list(await pids(supervisor)) == ["d1"]
        new = await sup.restart_child(supervisor, "d1")
        assert new is not None
        assert new != pid
        with pytest.raises(SupervisorError) as info:
            await sup.restart_child(supervisor, "d1")
        assert info.value.reason == "running"
        with pytest.raises(SupervisorError) as info:
            await sup.delete_child(supervisor, "d1")
        assert info.value.reason == "running"
        await sup.terminate_child(supervisor, "d1")
        await sup.delete_child(supervisor, "d1")
        assert await pids(supervisor) == {}
        with pytest.raises(SupervisorError) as info:
            await sup.terminate_child(supervisor, "nope")
        assert info.value.reason == "not_found"
        with pytest.raises(SupervisorError) as info:
            await sup.start_child(supervisor, child("bad", log, fail_init=True))
        assert isinstance(info.value.reason, StartError)


async def test_a_child_failing_at_start_fails_the_supervisor_start(
    autojump_clock: Any, cluster: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[tuple[object, ...]] = []
        spec = SupervisorSpec(
            children=[child("ok", log, trap=True), child("bad", log, fail_init=True)]
        )
        with pytest.raises(StartError) as info:
            await behaviours.start(Supervisor(spec))
        assert info.value.reason[:2] == ("failed_to_start_child", "bad")
        assert log == [("start", "ok"), ("terminate", "ok", "shutdown")]
        await trio.sleep(0.1)
        assert a.processes() == []


async def test_a_restart_that_fails_is_retried_until_the_intensity(
    autojump_clock: Any, cluster: Any, in_process: Any
) -> None:
    async with cluster(1) as [a]:
        log: list[tuple[object, ...]] = []
        fail = [False]

        async def start() -> Any:
            return await behaviours.start_link(Worker("f", log, fail_init=fail[0]))

        spec = SupervisorSpec(intensity=3, children=[ChildSpec(id="f", start=start)])
        supervisor = await start_sup(spec)

        async def body() -> object:
            ref = runtime.monitor(supervisor)
            fail[0] = True
            await crash((await pids(supervisor))["f"])
            down = await runtime.receive(lambda m: getattr(m, "ref", None) == ref)
            return down.reason  # type: ignore[attr-defined]

        assert await in_process(a, body) == "shutdown"


async def test_the_root_supervisor_and_remote_queries(
    autojump_clock: Any, cluster: Any, at: Any
) -> None:
    async with cluster(2) as [a, b]:
        log: list[tuple[object, ...]] = []
        with at(b):
            root = await sup.root_supervisor()
            assert root == await sup.root_supervisor()
            assert b.whereis(sup.ROOT_NAME) == root
            await sup.start_child(root, child("app", log))
        with at(a):
            children = await sup.which_children((sup.ROOT_NAME, b.name))
            assert [(c.id, c.pid is not None) for c in children] == [("app", True)]
            assert children[0].pid.node == b.name  # type: ignore[union-attr]
            await sup.terminate_child((sup.ROOT_NAME, b.name), "app")
            counts = await sup.count_children((sup.ROOT_NAME, b.name))
            assert counts["active"] == 0


async def test_init_returning_a_bad_spec_fails_the_start(
    autojump_clock: Any, cluster: Any
) -> None:
    class Bad(Supervisor):
        async def init(self, arg: Any) -> Any:
            return {"strategy": "one_for_one"}

    async with cluster(1):
        with pytest.raises(StartError):
            await behaviours.start(Bad())
        with pytest.raises(ValueError, match="unique"):
            SupervisorSpec(children=[child("x", []), child("x", [])])
        with pytest.raises(ValueError, match="shutdown"):
            ChildSpec(id="x", start=lambda: None, shutdown=-1)
