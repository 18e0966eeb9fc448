"""Goal: bad input closes that one connection with a logged reason; the node keeps
serving everyone else and loses nothing it had accepted.

Method: a real node on 127.0.0.1 and a raw TCP peer written in the test, which
drives the handshake core by hand and then misbehaves: garbage, truncated and
oversized frames, an unknown CBOR tag, a frame that is no envelope, a wrong secret,
a wrong version, silence during the hello, and a peer that stops reading.
"""

import functools
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cbor2
import pytest
import trio
import trio.lowlevel

import runtime
from runtime import ChannelSpec, Node, NodeConfig, NodeSpec, SendStatus, open_node
from runtime.core.framing import FrameDecoder
from runtime.core.handshake import (
    NONCE_BYTES,
    Established,
    Handshake,
    Keyring,
    Role,
    SendBody,
)
from runtime.errors import HandshakeError
from runtime.wire import Decoder, Kind, encode_envelope, encode_frame

SECRET = "test-secret-0123456789"
DEADLINE = 10.0
CHANNELS = frozenset({"default", "membership", "broadcast", "rpc"})


def config(name: str = "a@127.0.0.1", **kw: object) -> NodeConfig:
    return NodeConfig(name=name, secret=SECRET, **kw)  # type: ignore[arg-type]


async def drive(
    stream: trio.abc.Stream, handshake: Handshake, effects: list[object]
) -> None:
    """Run a handshake core over a raw stream until it is done (or raises)."""
    decoder = FrameDecoder(4096)
    while True:
        for effect in effects:
            if isinstance(effect, SendBody):
                await stream.send_all(encode_frame(effect.body))
        if handshake.done or any(isinstance(e, Established) for e in effects):
            return
        data = await stream.receive_some(4096)
        if not data:
            raise ConnectionError("closed during handshake")
        effects = []
        for body in decoder.feed(data):
            effects += handshake.on_body(Decoder().decode(body))


async def raw_peer(
    node: Node, *, secret: str = SECRET, channel: str = "default"
) -> trio.SocketStream:
    """A raw connection to *node*, handshaken as initiator x@127.0.0.1."""
    assert node.address is not None
    stream = await trio.open_tcp_stream(*node.address)
    handshake = Handshake(
        role=Role.INITIATOR,
        node="x@127.0.0.1",
        creation=1,
        keyring=Keyring.from_secret(secret),
        nonce=secrets.token_bytes(NONCE_BYTES),
        channel=channel,
        expected_peer=node.name,
    )
    try:
        await drive(stream, handshake, list(handshake.start()))
    except BaseException:
        await stream.aclose()
        raise
    return stream


async def sink(node: Node, name: str = "sink") -> list[object]:
    got: list[object] = []

    async def run() -> None:
        while True:
            got.extend(await runtime.receive_batch())

    node.spawn(run, name=name)
    return got


async def wait_closed(stream: trio.abc.Stream) -> None:
    """The node must close the connection: EOF or reset, within the deadline."""
    with trio.fail_after(DEADLINE):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    await stream.aclose()


def frame(kind: int, target: str, payload: object) -> bytes:
    return encode_envelope(kind, target, None, None, payload)


async def still_serves(node: Node) -> None:
    """A fresh, well-behaved connection still delivers."""
    got = await sink(node, name=f"probe-{secrets.token_hex(4)}")
    name = node._names and [n for n in node._names if n.startswith("probe-")][-1]
    stream = await raw_peer(node)
    await stream.send_all(frame(Kind.SEND_NAME, name, "still here"))
    with trio.fail_after(DEADLINE):
        while got != ["still here"]:
            await trio.sleep(0.002)
    await stream.aclose()


async def test_garbage_before_handshake_closes_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_node(config()) as node:
        assert node.address is not None
        stream = await trio.open_tcp_stream(*node.address)
        with caplog.at_level(logging.WARNING, logger="runtime.transport"):
            await stream.send_all(b"\x00\x00\x00\x03\xff\xfe\xfd")
            await wait_closed(stream)
        assert node.statistics().protocol_errors_count == 1
        assert any("closing inbound" in r.message for r in caplog.records)
        await still_serves(node)


async def test_oversized_frame_during_handshake_closes_before_body() -> None:
    async with open_node(config()) as node:
        assert node.address is not None
        stream = await trio.open_tcp_stream(*node.address)
        # Only the header: the node must not wait for 4 GiB of body.
        await stream.send_all(b"\xff\xff\xff\xff")
        await wait_closed(stream)
        assert node.statistics().protocol_errors_count == 1
        await still_serves(node)


async def test_oversized_frame_after_handshake_keeps_earlier_messages() -> None:
    async with open_node(config(frame_bytes_max=1024)) as node:
        got = await sink(node)
        stream = await raw_peer(node)
        ok = frame(Kind.SEND_NAME, "sink", "before")
        too_big = frame(Kind.SEND_NAME, "sink", "x" * 2000)
        await stream.send_all(ok + too_big)
        await wait_closed(stream)
        assert got == ["before"]
        assert node.statistics().protocol_errors_count == 1
        await still_serves(node)


async def test_truncated_frame_delivers_whole_frames_only() -> None:
    async with open_node(config()) as node:
        got = await sink(node)
        stream = await raw_peer(node)
        whole = frame(Kind.SEND_NAME, "sink", "whole")
        cut = frame(Kind.SEND_NAME, "sink", "cut")[:-3]
        await stream.send_all(whole + cut)
        await stream.aclose()
        with trio.fail_after(DEADLINE):
            while got != ["whole"]:
                await trio.sleep(0.002)
        await trio.sleep(0.05)
        assert got == ["whole"]
        await still_serves(node)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(cbor2.dumps(42), id="not-an-envelope"),
        pytest.param(cbor2.dumps([99, "t", None, None, 1]), id="unknown-kind"),
        pytest.param(cbor2.dumps([0, ["unhashable"], None, None, 1]), id="bad-target"),
        pytest.param(b"\xff\xfe\xfd", id="garbage"),
    ],
)
async def test_bad_frame_after_handshake_closes_that_connection(body: bytes) -> None:
    async with open_node(config()) as node:
        got = await sink(node)
        stream = await raw_peer(node)
        before = frame(Kind.SEND_NAME, "sink", "accepted")
        await stream.send_all(before + encode_frame(body))
        await wait_closed(stream)
        assert got[0] == "accepted"
        assert node.statistics().protocol_errors_count == 1
        await still_serves(node)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(cbor2.CBORTag(999, "x"), id="unknown-tag"),
        pytest.param(cbor2.CBORTag(35, "(a+)+$"), id="regex-tag"),
        pytest.param(cbor2.CBORTag(1, 1700000000), id="datetime-tag"),
        pytest.param(cbor2.CBORTag(40401, "partisan:pid:nonode:1.2"), id="bad-pid-uri"),
    ],
)
async def test_refused_payload_drops_only_that_message(payload: object) -> None:
    """A foreign tag is refused as one message: the stream is still in step, so
    the connection lives and the messages around it are delivered."""
    async with open_node(config()) as node:
        got = await sink(node)
        stream = await raw_peer(node)
        bad = encode_frame(
            cbor2.dumps([int(Kind.SEND_NAME), "sink", None, None, payload])
        )
        await stream.send_all(
            frame(Kind.SEND_NAME, "sink", 1) + bad + frame(Kind.SEND_NAME, "sink", 2)
        )
        with trio.fail_after(DEADLINE):
            while got != [1, 2]:
                await trio.sleep(0.002)
        stats = node.statistics()
        assert stats.refused_messages_count == 1
        assert stats.protocol_errors_count == 0
        await stream.aclose()


async def test_wrong_secret_is_refused_before_any_message() -> None:
    async with open_node(config()) as node:
        got = await sink(node)
        with pytest.raises(HandshakeError, match="secret mismatch"):
            await raw_peer(node, secret="another-secret-0123456789")
        # A forger who skips verification and answers with junk proofs.
        assert node.address is not None
        stream = await trio.open_tcp_stream(*node.address)
        forger = Handshake(
            role=Role.INITIATOR,
            node="x@127.0.0.1",
            creation=1,
            keyring=Keyring.from_secret("forger-secret-0123456789"),
            nonce=secrets.token_bytes(NONCE_BYTES),
            channel="default",
        )
        (hello,) = forger.start()
        assert isinstance(hello, SendBody)
        await stream.send_all(encode_frame(hello.body))
        await stream.receive_some(4096)  # the welcome
        auth = cbor2.dumps({"t": "auth", "proofs": [[b"\x00" * 8, b"\x00" * 32]]})
        await stream.send_all(
            encode_frame(auth) + frame(Kind.SEND_NAME, "sink", "smuggled")
        )
        reply = await _read_all(stream)
        assert b"secret mismatch" in reply
        assert got == []
        assert node.statistics().handshake_failures_count == 1
        await still_serves(node)


async def _read_all(stream: trio.abc.Stream) -> bytes:
    data = b""
    with trio.fail_after(DEADLINE):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return data


async def test_nodes_with_different_secrets_never_connect() -> None:
    async with (
        open_node(config("a@127.0.0.1")) as a,
        open_node(
            NodeConfig(name="b@127.0.0.1", secret="other-secret-0123456789")
        ) as b,
    ):
        a.add_peer(b.spec())
        b.add_peer(a.spec())
        with trio.fail_after(DEADLINE):
            while not (
                a.statistics().handshake_failures_count
                and b.statistics().handshake_failures_count
            ):
                await trio.sleep(0.01)
        assert not a.is_connected(b.name)
        assert not b.is_connected(a.name)
        assert a.send_checked(("x", b.name), 1) is SendStatus.NOT_CONNECTED


async def test_wrong_version_is_refused_with_a_reason() -> None:
    async with open_node(config()) as node:
        assert node.address is not None
        stream = await trio.open_tcp_stream(*node.address)
        hello = {
            "t": "hello",
            "versions": [99],
            "node": "x@127.0.0.1",
            "creation": 1,
            "channel": "default",
            "index": 0,
            "nonce": b"\x01" * NONCE_BYTES,
        }
        await stream.send_all(encode_frame(cbor2.dumps(hello)))
        reply = await _read_all(stream)
        (body,) = FrameDecoder().feed(reply)
        assert cbor2.loads(body)["t"] == "reject"
        assert "no common protocol version" in cbor2.loads(body)["reason"]
        await still_serves(node)


async def test_silent_peer_is_dropped_after_handshake_timeout() -> None:
    async with open_node(config(handshake_timeout=0.2)) as node:
        assert node.address is not None
        stream = await trio.open_tcp_stream(*node.address)
        await wait_closed(stream)
        assert node.statistics().inbound_connections_open == 0
        await still_serves(node)


@asynccontextmanager
async def deaf_peer(name: str) -> AsyncIterator[tuple[NodeSpec, list[int]]]:
    """A listener that completes handshakes as *name* and then never reads."""
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        handshake = Handshake(
            role=Role.ACCEPTOR,
            node=name,
            creation=7,
            keyring=Keyring.from_secret(SECRET),
            nonce=secrets.token_bytes(NONCE_BYTES),
            channels=CHANNELS,
        )
        await drive(stream, handshake, [])
        accepted.append(1)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield NodeSpec(name=name, addresses=[("127.0.0.1", port)]), accepted
        nursery.cancel_scope.cancel()


async def test_peer_that_stops_reading_gets_backpressure_then_disconnect() -> None:
    bound = 256 * 1024
    channels = (ChannelSpec(name="default", send_queue_bytes_max=bound),)
    async with (
        open_node(config(channels=channels, write_timeout=0.5)) as node,
        deaf_peer("deaf@127.0.0.1") as (spec, _accepted),
    ):
        node.add_peer(spec)
        with trio.fail_after(DEADLINE):
            await node.wait_connected(spec.name)
        target = runtime.Name(node=spec.name, name="sink")
        payload = b"x" * 65536
        statuses: list[SendStatus] = []
        peak = 0
        with trio.fail_after(DEADLINE):
            while SendStatus.OVERLOADED not in statuses:
                statuses.append(node.send_checked(target, payload))
                peak = max(peak, _queued(node, spec.name))
                await trio.lowlevel.checkpoint()
        # Memory stays bounded: the bound plus the one frame that crossed it,
        # plus (at most) the batch in flight.
        assert peak <= 2 * bound + 2 * len(payload)
        # The write timeout then drops the peer; sends are refused, not queued.
        with trio.fail_after(DEADLINE):
            while node.is_connected(spec.name, "default"):
                await trio.sleep(0.01)
        slot = next(s for s in node.statistics().slots if s.channel == "default")
        assert slot.last_disconnect_reason == "timed out"
        assert slot.refused_overloaded_count >= 1
        assert node.send_checked(target, payload) in (
            SendStatus.DISCONNECTED,
            SendStatus.OK,  # already redialled and reconnected
        )


def _queued(node: Node, peer: str) -> int:
    return sum(
        s.queued_bytes
        for s in node.statistics().slots
        if s.peer == peer and s.channel == "default"
    )
