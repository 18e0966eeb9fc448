"""The network seam: how a node listens and dials, over TCP or in memory.

The transport above speaks only :class:`Network`, so the same node code runs over
real TCP (:class:`TcpNetwork`) and over ``runtime.testing.memory_network`` under
``trio.testing.MockClock``. TLS is layered by the transport on top of whatever
stream the network returns, so it is tested over both.
"""

from __future__ import annotations

from typing import Protocol, final

import trio

__all__ = ["Address", "Listener", "Network", "TcpNetwork"]

Address = tuple[str, int]
Listener = trio.abc.Listener[trio.abc.Stream]


class Network(Protocol):
    """Opens listeners and outgoing streams for one node.

    ``local_name`` is the node's name; a simulated network uses it to apply
    faults between named nodes, TCP ignores it.
    """

    async def listen(
        self, address: Address, *, local_name: str
    ) -> tuple[Listener, Address]:
        """Bind and listen; return the listener and the address actually bound.

        Raises:
            OSError: the address cannot be bound.
        """
        ...

    async def connect(self, address: Address, *, local_name: str) -> trio.abc.Stream:
        """Open a stream to *address*.

        Raises:
            OSError: the connection is refused or unreachable.
        """
        ...


@final
class TcpNetwork:
    """Real TCP. Listens on exactly the interface given, never on every address."""

    async def listen(
        self, address: Address, *, local_name: str
    ) -> tuple[Listener, Address]:
        host, port = address
        listeners = await trio.open_tcp_listeners(port, host=host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        sockname = listener.socket.getsockname()
        return listener, (host, int(sockname[1]))

    async def connect(self, address: Address, *, local_name: str) -> trio.abc.Stream:
        host, port = address
        return await trio.open_tcp_stream(host, port)
