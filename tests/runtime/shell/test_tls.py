"""Goal: the peer plane over TLS with mutual authentication, over real TCP.

Method: certificates from ``trustme`` (a private CA per test). Two nodes with
certificates from the same CA connect and exchange messages; a node whose client
certificate another CA signed is refused by the server; a server whose
certificate the client's CA did not sign is refused by the client; a plaintext
peer cannot talk to a TLS node. The HMAC handshake still runs inside TLS.
"""

import ssl

import trio
import trustme

import runtime
from runtime import NodeConfig, TLSConfig, open_node

SECRET = "test-secret-0123456789"
DEADLINE = 10.0


def tls_for(ca: trustme.CA, issuer: trustme.CA | None = None) -> TLSConfig:
    """Contexts trusting *ca*, with a leaf for 127.0.0.1 signed by *issuer*."""
    leaf = (issuer or ca).issue_cert("127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    leaf.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    leaf.configure_cert(client)
    return TLSConfig(server=server, client=client, handshake_timeout=2.0)


def config(name: str, tls: TLSConfig | None) -> NodeConfig:
    return NodeConfig(name=name, secret=SECRET, tls=tls)


async def test_mutual_tls_nodes_connect_and_exchange_messages() -> None:
    ca = trustme.CA()
    async with (
        open_node(config("a@127.0.0.1", tls_for(ca))) as a,
        open_node(config("b@127.0.0.1", tls_for(ca))) as b,
    ):
        a.add_peer(b.spec())
        with trio.fail_after(DEADLINE):
            await a.wait_connected(b.name)
        got: list[object] = []

        async def sink() -> None:
            got.append(await runtime.receive())

        b.spawn(sink, name="sink")
        a.send(("sink", b.name), {"over": "tls"})
        with trio.fail_after(DEADLINE):
            while not got:
                await trio.sleep(0.002)
        assert got == [{"over": "tls"}]


async def _refused(a_tls: TLSConfig | None, b_tls: TLSConfig | None) -> None:
    async with (
        open_node(config("a@127.0.0.1", a_tls)) as a,
        open_node(config("b@127.0.0.1", b_tls)) as b,
    ):
        a.add_peer(b.spec())
        # Several dial attempts fail; none may connect.
        with trio.fail_after(DEADLINE):
            while b.statistics().accepted_connections_count < 8:
                await trio.sleep(0.01)
        assert not a.is_connected(b.name)
        assert b.statistics().inbound_connections_open <= 4


async def test_client_certificate_from_another_ca_is_refused() -> None:
    ca, rogue = trustme.CA(), trustme.CA()
    # a trusts the right CA but presents a leaf the rogue CA signed.
    await _refused(tls_for(ca, issuer=rogue), tls_for(ca))


async def test_server_certificate_the_client_does_not_trust_is_refused() -> None:
    ca, rogue = trustme.CA(), trustme.CA()
    await _refused(tls_for(ca), tls_for(ca, issuer=rogue))


async def test_plaintext_peer_cannot_reach_a_tls_node() -> None:
    await _refused(None, tls_for(trustme.CA()))
