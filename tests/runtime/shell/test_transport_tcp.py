"""Goal: the channelled transport over real TCP on 127.0.0.1. Method: two or three
nodes in this process, each with its own listening socket; wait on conditions with
deadlines, never fixed sleeps.

Covers: sends by every target form across nodes, per-sender ordering with
parallelism > 1, channels as separate connections, monotonic channels keeping the
newest message per key, reconnect after a peer restarts (with a new incarnation
whose old pids reach nothing), refs in payloads as objects or URIs, and
send_checked's reasons.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.lowlevel

import runtime
from runtime import ChannelSpec, Node, NodeConfig, SendStatus, open_node

SECRET = "test-secret-0123456789"
DEADLINE = 10.0


def config(name: str, **kw: object) -> NodeConfig:
    return NodeConfig(name=name, secret=SECRET, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def pair(
    a_kw: dict[str, object] | None = None, b_kw: dict[str, object] | None = None
) -> AsyncIterator[tuple[Node, Node]]:
    async with (
        open_node(config("a@127.0.0.1", **(a_kw or {}))) as a,
        open_node(config("b@127.0.0.1", **(b_kw or {}))) as b,
    ):
        a.add_peer(b.spec())
        b.add_peer(a.spec())
        with trio.fail_after(DEADLINE):
            await a.wait_connected(b.name)
            await b.wait_connected(a.name)
        yield a, b


async def collect(node: Node, count: int, name: str = "sink") -> list[object]:
    """Spawn a registered sink on *node*; returns the list it fills."""
    got: list[object] = []

    async def sink() -> None:
        while len(got) < count:
            got.extend(await runtime.receive_batch())

    node.spawn(sink, name=name)
    return got


async def wait_for(predicate: object, deadline: float = DEADLINE) -> None:
    assert callable(predicate)
    with trio.fail_after(deadline):
        while not predicate():
            await trio.sleep(0.002)


async def test_remote_send_by_pid_name_uri_and_tuple() -> None:
    async with pair() as (a, b):
        got = await collect(b, 4)
        pid = b.whereis("sink")
        assert pid is not None
        assert a.nodes() == [b.name]
        a.send(pid, "by-pid")
        a.send(pid.uri, "by-uri")
        a.send(("sink", b.name), "by-tuple")
        a.send(runtime.Name(node=b.name, name="sink"), "by-name")
        await wait_for(lambda: len(got) == 4)
        assert got == ["by-pid", "by-uri", "by-tuple", "by-name"]


async def test_refs_inside_payloads_arrive_as_objects_or_uris() -> None:
    async with pair(b_kw={"refs_as_uri": True}) as (a, b):
        got_b = await collect(b, 1)
        got_a = await collect(a, 1)
        ref = a.make_ref()
        a.send(("sink", b.name), {"ref": ref, "list": [ref]})
        b.send(("sink", a.name), {"ref": b.make_ref()})
        await wait_for(lambda: got_a and got_b)
        assert got_b[0] == {"ref": ref.uri, "list": [ref.uri]}
        assert isinstance(got_a[0], dict)
        assert isinstance(got_a[0]["ref"], runtime.Ref)


async def test_one_senders_messages_stay_in_order_with_parallelism() -> None:
    channels = (ChannelSpec(name="default", parallelism=4),)
    async with pair(a_kw={"channels": channels}, b_kw={"channels": channels}) as (
        a,
        b,
    ):
        per_sender = 2000
        senders = 8
        got = await collect(b, per_sender * senders)

        async def sender(tag: int) -> None:
            for i in range(per_sender):
                runtime.send(("sink", b.name), (tag, i))
                if i % 100 == 0:
                    await trio.lowlevel.checkpoint()

        for tag in range(senders):
            a.spawn(sender, tag)
        await wait_for(lambda: len(got) == per_sender * senders)
        for tag in range(senders):
            seq = [i for (t, i) in got if t == tag]  # type: ignore[misc]
            assert seq == list(range(per_sender))
        used = [
            s
            for s in a.statistics().slots
            if s.peer == b.name and s.channel == "default" and s.frames_sent_count
        ]
        assert len(used) > 1, "partition keys should spread senders over connections"


async def test_channels_are_separate_connections() -> None:
    channels = (ChannelSpec(name="bulk", parallelism=2),)
    async with pair(a_kw={"channels": channels}, b_kw={"channels": channels}) as (
        a,
        b,
    ):
        slots = [s for s in a.statistics().slots if s.peer == b.name]
        assert sorted({s.channel for s in slots}) == [
            "broadcast",
            "bulk",
            "default",
            "membership",
            "rpc",
        ]
        assert len([s for s in slots if s.channel == "bulk"]) == 2
        assert a.is_connected(b.name, "bulk")
        assert a.is_fully_connected(b.name)
        got = await collect(b, 2)
        a.send(("sink", b.name), "bulk", channel="bulk")
        a.send(("sink", b.name), "default")
        await wait_for(lambda: len(got) == 2)
        assert sorted(got) == ["bulk", "default"]  # type: ignore[type-var]


async def test_unknown_channel_or_node_gives_no_route() -> None:
    async with pair() as (a, b):
        pid = runtime.Pid(node=b.name, creation=b.creation, id=1)
        assert a.send_checked(pid, 1, channel="nope") is SendStatus.NO_ROUTE
        stranger = runtime.Pid(node="c@127.0.0.1", creation=1, id=1)
        assert a.send_checked(stranger, 1) is SendStatus.NO_ROUTE
        assert a.statistics().refused["no_route"] == 2


async def test_monotonic_channel_keeps_newest_per_key_under_backlog() -> None:
    channels = (ChannelSpec(name="positions", monotonic=True),)
    async with pair(a_kw={"channels": channels}, b_kw={"channels": channels}) as (
        a,
        b,
    ):
        got = await collect(b, 200)
        # All sends happen before the writer task runs: a backlog by construction.
        # (A frame may leave at once by a direct write while the writer is idle.)
        for i in range(100):
            a.send(("sink", b.name), ["truck-1", i], channel="positions", key="t1")
            a.send(("sink", b.name), ["truck-2", i], channel="positions", key="t2")
        await wait_for(lambda: ["truck-2", 99] in got and ["truck-1", 99] in got)
        await trio.sleep(0.05)
        assert got[-2:] == [["truck-1", 99], ["truck-2", 99]]
        slot = next(s for s in a.statistics().slots if s.channel == "positions")
        # Every message was either delivered or superseded by a newer one.
        assert len(got) + slot.superseded_count == 200
        assert slot.superseded_count >= 190


async def test_reconnects_after_peer_restart_and_old_pids_reach_nothing() -> None:
    async with open_node(config("a@127.0.0.1")) as a:
        async with open_node(config("b@127.0.0.1")) as b1:
            a.add_peer(b1.spec())
            b1.add_peer(a.spec())
            with trio.fail_after(DEADLINE):
                await a.wait_connected(b1.name)
            port = b1.address[1] if b1.address else 0
            old_creation = b1.creation
            await collect(b1, 10**9)
            old_pid = b1.whereis("sink")
        # b is gone: a notices and refuses sends with DISCONNECTED.
        await wait_for(lambda: not a.is_connected("b@127.0.0.1"))
        assert old_pid is not None
        assert a.send_checked(old_pid, "x") is SendStatus.DISCONNECTED
        # b restarts on the same port with a new incarnation; a redials by itself.
        async with open_node(config("b@127.0.0.1", listen=("127.0.0.1", port))) as b2:
            assert b2.creation != old_creation
            with trio.fail_after(DEADLINE):
                await a.wait_connected(b2.name)
            got = await collect(b2, 1)
            a.send(old_pid, "to-the-old-incarnation")
            a.send(("sink", b2.name), "to-the-new-one")
            await wait_for(lambda: got == ["to-the-new-one"])
            await wait_for(lambda: b2.statistics().dropped_no_target_count == 1)


async def test_remote_exit_kills_the_process() -> None:
    async with pair() as (a, b):

        async def forever() -> None:
            await trio.sleep_forever()

        pid = b.spawn(forever)
        a.exit(pid, "because")
        await wait_for(lambda: not b.is_process_alive(pid))


async def test_many_messages_are_coalesced_into_few_writes() -> None:
    async with pair() as (a, b):
        n = 5000
        got = await collect(b, n)
        for i in range(n):
            a.send(("sink", b.name), i)
        await wait_for(lambda: len(got) == n)
        assert got == list(range(n))
        slot = next(
            s
            for s in a.statistics().slots
            if s.channel == "default" and s.peer == b.name
        )
        assert slot.frames_sent_count == n
        assert slot.batches_sent_count < n // 10
        # User messages only: heartbeats and membership travel as control.
        assert b.statistics().received_remote_count == n
