"""Goal: the outgoing connection's queue keeps every frame, in order, whether a
frame leaves by a direct write (idle writer), partially, or through the writer.

Method: an OutboundConnection over a real socket pair; the test reads the other
end and compares the byte stream with what was enqueued.
"""

import trio

from runtime.shell.connection import (
    BATCH_BYTES_MAX,
    OutboundConnection,
    SendStatus,
)


def _slot(*, monotonic: bool = False, bound: int = 64 << 20) -> OutboundConnection:
    return OutboundConnection(
        peer="b@h",
        channel="default",
        index=0,
        monotonic=monotonic,
        queued_bytes_max=bound,
    )


async def _read_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    with trio.fail_after(10):
        while len(data) < size:
            data += await stream.receive_some(1 << 20)
    return bytes(data)


async def test_direct_partial_and_batched_writes_keep_order() -> None:
    left, right = trio.socket.socketpair()
    sender, receiver = trio.SocketStream(left), trio.SocketStream(right)
    slot = _slot()
    slot.attach(direct_fd=left.fileno())
    frames = [bytes([i % 251]) * size for i, size in enumerate([3 << 20, 10, 7, 9])]
    frames += [bytes([i]) * 100 for i in range(200)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slot.run_writer, sender, 30.0)
        await trio.testing.wait_all_tasks_blocked()
        # The writer is idle: the first frame goes by a direct write, but 3 MiB
        # exceed the socket buffer, so its rest is queued for the writer, and
        # the frames after it queue behind.
        assert slot.enqueue(frames[0]) is SendStatus.OK
        assert 0 < slot.statistics().queued_bytes < len(frames[0])
        for frame in frames[1:]:
            assert slot.enqueue(frame) is SendStatus.OK
        expected = b"".join(frames)
        assert await _read_exactly(receiver, len(expected)) == expected
        await trio.testing.wait_all_tasks_blocked()
        stats = slot.statistics()
        assert stats.queued_bytes == 0
        assert stats.bytes_sent == len(expected)
        assert stats.frames_sent_count == len(frames)
        # A later lone frame leaves directly again once the writer is idle.
        assert slot.enqueue(b"late") is SendStatus.OK
        assert await _read_exactly(receiver, 4) == b"late"
        nursery.cancel_scope.cancel()
    slot.detach("test over")
    await sender.aclose()
    await receiver.aclose()


async def test_large_backlog_is_written_in_bounded_batches() -> None:
    left, right = trio.socket.socketpair()
    sender, receiver = trio.SocketStream(left), trio.SocketStream(right)
    slot = _slot()
    slot.attach()  # no direct writes: everything through the writer
    frames = [b"x" * 1000 for _ in range(2000)]  # about 8 batches' worth
    for frame in frames:
        slot.enqueue(frame)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slot.run_writer, sender, 30.0)
        expected = b"".join(frames)
        assert await _read_exactly(receiver, len(expected)) == expected
        await trio.testing.wait_all_tasks_blocked()
        assert slot.statistics().batches_sent_count >= len(expected) // BATCH_BYTES_MAX
        nursery.cancel_scope.cancel()
    slot.detach("test over")
    await sender.aclose()
    await receiver.aclose()


async def test_queue_bound_refuses_with_overloaded_and_disconnect_drops_counted() -> (
    None
):
    slot = _slot(bound=1000)
    assert slot.enqueue(b"a") is SendStatus.NOT_CONNECTED
    slot.attach()
    assert slot.enqueue(b"x" * 600) is SendStatus.OK
    assert slot.enqueue(b"x" * 600) is SendStatus.OK  # crosses the bound
    assert slot.enqueue(b"x") is SendStatus.OVERLOADED
    slot.detach("gone")
    stats = slot.statistics()
    assert stats.refused_overloaded_count == 1
    assert stats.dropped_on_disconnect_count == 2
    assert stats.queued_bytes == 0
    assert slot.enqueue(b"x") is SendStatus.DISCONNECTED
