"""Goal: MemoryNetwork behaves as TCP between named nodes, plus the faults it promises.

Method: every test runs under pytest-trio's ``autojump_clock`` (a MockClock that
jumps whenever all tasks are blocked), so delays and timeouts cost no real time,
and ``trio.current_time()`` shows how much virtual time an operation took. Stream
semantics are checked with trio's own conformance kit
(``trio.testing.check_two_way_stream``); the rest send length-prefixed frames
between two nodes, ``a@host`` (the connector) and ``b@host`` (the listener), and
decode them with the runtime's FrameDecoder, under each fault in turn: backpressure
from a reader that stops, partitions (blackholing, unreachable connects, heal),
disconnect, and per-frame drop, duplicate, delay and jitter, with their seeds.
"""

from __future__ import annotations

import errno
import itertools

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from runtime.core.framing import FrameDecoder
from runtime.shell.network import Network
from runtime.testing import MemoryNetwork, MemoryStream

A = "a@host"
B = "b@host"
C = "c@host"


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def numbered(count: int) -> list[bytes]:
    return [b"frame-%03d" % i for i in range(count)]


async def pair(net: MemoryNetwork) -> tuple[MemoryStream, MemoryStream]:
    """A connection from A (returned first) to a listener on B."""
    listener, address = await net.listen(("host", 0), local_name=B)
    client = await net.connect(address, local_name=A)
    server = await listener.accept()
    await listener.aclose()
    return client, server


async def read_frames(stream: MemoryStream, count: int) -> list[bytes]:
    decoder = FrameDecoder()
    bodies: list[bytes] = []
    while len(bodies) < count:
        data = await stream.receive_some()
        assert data, "EOF before the expected frames"
        bodies += decoder.feed(data)
    return bodies


async def read_all_frames(stream: MemoryStream) -> list[bytes]:
    """Frames until EOF."""
    decoder = FrameDecoder()
    bodies: list[bytes] = []
    while data := await stream.receive_some():
        bodies += decoder.feed(data)
    return bodies


async def test_memory_network_is_a_network(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network: Network = MemoryNetwork()
    listener, address = await network.listen(("host", 0), local_name=B)
    stream = await network.connect(address, local_name=A)
    await stream.aclose()
    await listener.aclose()


async def test_streams_pass_trio_conformance_kit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stream_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        return await pair(MemoryNetwork())

    async def clogged_stream_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        client, server = await pair(MemoryNetwork(receive_buffer_bytes_max=64))
        await client.send_all(b"x" * 64)
        await server.send_all(b"y" * 64)
        return client, server

    await trio.testing.check_two_way_stream(stream_maker, clogged_stream_maker)


async def test_round_trip_knows_both_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    assert (client.local_name, client.peer_name) == (A, B)
    assert (server.local_name, server.peer_name) == (B, A)
    await client.send_all(frame(b"ping"))
    assert await read_frames(server, 1) == [b"ping"]
    await server.send_all(frame(b"pong") + frame(b"again"))
    assert await read_frames(client, 2) == [b"pong", b"again"]
    assert trio.current_time() == 0.0
    stats = net.statistics()
    assert stats.frames_delivered == 3
    assert stats.connections_opened == 1


async def test_receive_returns_eof_after_peer_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = await pair(MemoryNetwork())
    await client.send_all(frame(b"last words"))
    await client.aclose()
    assert await read_all_frames(server) == [b"last words"]
    assert await server.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(frame(b"anyone?"))
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()


async def test_listen_allocates_ports_and_refuses_taken_addresses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    first, first_address = await net.listen(("host", 0), local_name=A)
    _second, second_address = await net.listen(("host", 0), local_name=B)
    assert first_address != second_address
    assert first_address == (
        "host",
        (await MemoryNetwork().listen(("host", 0), local_name=A))[1][1],
    )
    with pytest.raises(OSError, match="in use") as taken:
        await net.listen(first_address, local_name=C)
    assert taken.value.errno == errno.EADDRINUSE
    await first.aclose()
    again, _ = await net.listen(first_address, local_name=C)
    await again.aclose()


async def test_connect_refused_without_listener_and_after_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    with pytest.raises(OSError, match="nobody listens") as refused:
        await net.connect(("host", 1), local_name=A)
    assert refused.value.errno == errno.ECONNREFUSED
    listener, address = await net.listen(("host", 0), local_name=B)
    await (await net.connect(address, local_name=A)).aclose()
    await listener.aclose()
    with pytest.raises(OSError, match="nobody listens") as closed:
        await net.connect(address, local_name=A)
    assert closed.value.errno == errno.ECONNREFUSED
    assert net.statistics().connections_refused == 2


async def test_closing_listener_breaks_unaccepted_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    listener, address = await net.listen(("host", 0), local_name=B)
    client = await net.connect(address, local_name=A)
    await listener.aclose()
    assert await client.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_reader_that_stops_blocks_writer_until_it_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = await pair(MemoryNetwork())  # the default 1 MiB buffer
    body = b"x" * (64 * 1024 - 4)
    sent = 0

    async def writer() -> None:
        nonlocal sent
        while True:
            await client.send_all(frame(body))
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        # Sixteen 64 KiB frames fill 1 MiB; the seventeenth send blocks.
        assert sent == 16
        await trio.sleep(3600)
        assert sent == 16
        assert await read_frames(server, 4) == [body] * 4
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 20
        nursery.cancel_scope.cancel()


async def test_partition_blackholes_and_heal_delivers_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    await client.send_all(frame(b"before"))
    pid = net.partition([A], [B])
    assert net.is_partitioned(A, B)
    assert net.is_partitioned(B, A)
    await client.send_all(frame(b"during-1") + frame(b"during-2"))
    assert await read_frames(server, 1) == [b"before"]
    with trio.move_on_after(60) as waited:
        await server.receive_some()
    assert waited.cancelled_caught, "bytes crossed a partition"
    assert net.statistics().bytes_blackholed == 2 * len(frame(b"during-1"))
    net.heal(pid)
    await client.send_all(frame(b"after"))
    assert await read_frames(server, 3) == [b"during-1", b"during-2", b"after"]
    with pytest.raises(KeyError):
        net.heal(pid)


async def test_one_way_partition_cuts_one_direction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.partition([A], [B], one_way=True)
    await server.send_all(frame(b"b to a flows"))
    assert await read_frames(client, 1) == [b"b to a flows"]
    await client.send_all(frame(b"a to b is held"))
    with trio.move_on_after(60) as waited:
        await server.receive_some()
    assert waited.cancelled_caught
    net.heal()
    assert await read_frames(server, 1) == [b"a to b is held"]


async def test_connect_across_partition_is_unreachable_after_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(connect_timeout=5.0)
    listener, address = await net.listen(("host", 0), local_name=B)
    net.partition([A], [B, C])
    start = trio.current_time()
    with pytest.raises(OSError, match="unreachable") as unreachable:
        await net.connect(address, local_name=A)
    assert unreachable.value.errno == errno.EHOSTUNREACH
    assert trio.current_time() - start == 5.0
    assert net.statistics().connections_unreachable == 1
    # A node on the same side connects at once.
    await (await net.connect(address, local_name=C)).aclose()
    await listener.aclose()


async def test_connect_waiting_on_partition_succeeds_when_healed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(connect_timeout=5.0)
    listener, address = await net.listen(("host", 0), local_name=B)
    pid = net.partition([A], [B])
    async with trio.open_nursery() as nursery:

        async def heal_soon() -> None:
            await trio.sleep(2.0)
            net.heal(pid)

        nursery.start_soon(heal_soon)
        client = await net.connect(address, local_name=A)
    assert trio.current_time() == 2.0
    assert (await listener.accept()).peer_name == A
    await client.aclose()


async def test_connect_across_partition_fails_at_once_by_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    _listener, address = await net.listen(("host", 0), local_name=B)
    net.partition([B], [A])
    with pytest.raises(OSError, match="unreachable"):
        await net.connect(address, local_name=A)
    assert trio.current_time() == 0.0


async def test_disconnect_breaks_both_ends_and_wakes_a_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    other_client, other_server = await pair(net)
    await server.send_all(frame(b"lost in flight"))
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def blocked_reader() -> None:
            got.append(await other_server.receive_some())

        nursery.start_soon(blocked_reader)
        await trio.testing.wait_all_tasks_blocked()
        assert net.disconnect(B, A) == 2
    assert got == [b""]
    assert await client.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(frame(b"x"))
    with pytest.raises(trio.BrokenResourceError):
        await other_client.send_all(frame(b"x"))
    assert net.statistics().frames_discarded == 1
    # A broken stream still closes cleanly, and new connections work.
    for stream in (client, server, other_client, other_server):
        await stream.aclose()
    new_client, new_server = await pair(net)
    await new_client.send_all(frame(b"fresh"))
    assert await read_frames(new_server, 1) == [b"fresh"]


async def test_drop_one_drops_every_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.set_link(A, B, drop=1.0)
    await client.send_all(b"".join(frame(body) for body in numbered(10)))
    net.clear_link(A, B)
    await client.send_all(frame(b"through"))
    await client.aclose()
    assert await read_all_frames(server) == [b"through"]
    assert net.statistics().frames_dropped == 10


async def test_duplicate_one_doubles_every_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.set_link(A, B, duplicate=1.0)
    bodies = numbered(5)
    await client.send_all(b"".join(frame(body) for body in bodies))
    await client.aclose()
    assert await read_all_frames(server) == [b for body in bodies for b in (body, body)]
    stats = net.statistics()
    assert stats.frames_duplicated == 5
    assert stats.frames_delivered == 10


async def test_faults_wait_for_a_frame_sent_in_pieces(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.set_link(A, B, duplicate=1.0)
    whole = frame(b"sent in three pieces")
    for piece in (whole[:2], whole[2:9], whole[9:]):
        await client.send_all(piece)
    await client.aclose()
    assert await read_all_frames(server) == [b"sent in three pieces"] * 2


async def test_frame_partly_sent_before_duplicate_is_set_goes_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    first = frame(b"first")
    await client.send_all(first[:6])
    net.set_link(A, B, duplicate=1.0)
    await client.send_all(first[6:] + frame(b"second"))
    await client.aclose()
    assert await read_all_frames(server) == [b"first", b"second", b"second"]


async def test_frame_held_for_drop_goes_when_drop_is_lifted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.set_link(A, B, drop=1.0)
    whole = frame(b"held, then let go")
    await client.send_all(whole[:6])
    net.clear_link()
    await client.send_all(whole[6:])
    await client.aclose()
    assert await read_all_frames(server) == [b"held, then let go"]
    assert net.statistics().frames_dropped == 0


@given(
    bodies=st.lists(st.binary(max_size=40), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12),
    mode=st.sampled_from(["clean", "delay", "duplicate", "drop"]),
)
def test_frames_split_anyhow_arrive_as_the_link_says(
    bodies: list[bytes], cuts: list[int], mode: str
) -> None:
    """However the sender splits its frames across writes, faults act on frames."""
    data = b"".join(frame(body) for body in bodies)
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    writes = [data[i:j] for i, j in itertools.pairwise([0, *points, len(data)])]
    expected = {
        "clean": bodies,
        "delay": bodies,
        "duplicate": [copy for body in bodies for copy in (body, body)],
        "drop": [],
    }[mode]

    async def run() -> list[bytes]:
        net = MemoryNetwork(seed=1)
        client, server = await pair(net)
        if mode == "delay":
            net.set_link(A, B, delay=0.1, jitter=0.3)
        elif mode == "duplicate":
            net.set_link(A, B, duplicate=1.0)
        elif mode == "drop":
            net.set_link(A, B, drop=1.0)

        async def send() -> None:
            for write in writes:
                await client.send_all(write)
                await trio.sleep(0.05)
            await client.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            return await read_all_frames(server)

    got = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == expected


async def test_faults_apply_per_direction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.set_link(B, A, drop=1.0)
    await client.send_all(frame(b"a to b"))
    assert await read_frames(server, 1) == [b"a to b"]
    await server.send_all(frame(b"b to a"))
    await server.aclose()
    assert await read_all_frames(client) == []


async def test_delay_takes_virtual_time_and_keeps_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=3)
    client, server = await pair(net)
    net.set_link(A, B, delay=0.5, jitter=0.25)
    bodies = numbered(20)
    for body in bodies:
        await client.send_all(frame(body))
        await trio.sleep(0.01)
    sent_at = trio.current_time()
    net.set_link(A, B)  # no delay: still behind the delayed frames
    await client.send_all(frame(b"undelayed"))
    await client.aclose()
    first = await server.receive_some()
    assert trio.current_time() >= 0.5
    rest = await read_all_frames(server)
    # Jitter (0.25 s) is far wider than the spacing (0.01 s), yet order holds.
    assert FrameDecoder().feed(first) + rest == [*bodies, b"undelayed"]
    # The last frame, sent 0.01 s before sent_at, arrived 0.5 to 0.75 s later
    # and held back the undelayed one.
    last_sent = sent_at - 0.01
    assert last_sent + 0.5 - 1e-9 <= trio.current_time() <= last_sent + 0.75 + 1e-9


async def test_same_seed_gives_same_drop_pattern(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def survivors(seed: int) -> list[bytes]:
        net = MemoryNetwork(seed=seed)
        client, server = await pair(net)
        net.set_link(A, B, drop=0.5)
        await client.send_all(b"".join(frame(body) for body in numbered(64)))
        await client.aclose()
        return await read_all_frames(server)

    first = await survivors(7)
    assert 0 < len(first) < 64
    assert await survivors(7) == first
    assert await survivors(8) != first


async def test_unframed_bytes_pass_through_untouched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """TLS records do not parse as our frames: they must not be cut or dropped."""
    net = MemoryNetwork()
    client, server = await pair(net)
    net.set_link(A, B, drop=1.0, delay=1.0)
    record = b"\x16\x03\x01\x00\x05hello"
    await client.send_all(record[:3])
    await client.send_all(record[3:])
    await client.aclose()
    received = bytearray()
    while data := await server.receive_some():
        received += data
    assert received == record
    assert trio.current_time() == 1.0
    assert net.statistics().frames_dropped == 0


def test_link_faults_are_validated() -> None:
    net = MemoryNetwork()
    with pytest.raises(ValueError, match="drop"):
        net.set_link(A, B, drop=1.5)
    with pytest.raises(ValueError, match="delay"):
        net.set_link(A, B, delay=-1.0)
    with pytest.raises(ValueError, match="both sides"):
        net.partition([A, B], [B])
    net.set_link(A, B, delay=1.0)
    net.set_link(A, C, delay=2.0)
    assert net.link(A, B).delay == 1.0
    net.clear_link(src=A)
    assert net.link(A, C).delay == 0.0
