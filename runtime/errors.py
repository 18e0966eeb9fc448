"""The runtime's exceptions.

Errors a *peer* can cause (bad frames, bad handshakes) derive from
:class:`ProtocolError`; they close that one connection and nothing else. Errors our
*caller* causes are ``TypeError`` / ``ValueError`` subclasses raised at the call.
"""

from __future__ import annotations

__all__ = [
    "FrameTooLarge",
    "HandshakeError",
    "MessageRefused",
    "NotInProcess",
    "ProtocolError",
    "ReceiveTimeout",
    "RuntimeStopped",
]


class ProtocolError(Exception):
    """A peer sent something we do not accept: the connection is closed."""


class FrameTooLarge(ProtocolError):
    """A frame header announced more bytes than the current limit allows.

    Attributes:
        bodies: whole frames decoded before the oversized header, in order.
    """

    bodies: list[bytes] = []  # noqa: RUF012 - replaced per instance, never mutated


class MessageRefused(ProtocolError):
    """One message held something we do not accept (a foreign CBOR tag).

    Only that message is dropped (logged and counted); the connection lives,
    since the rest of the stream is intact.
    """


class HandshakeError(ProtocolError):
    """The hello / challenge-response failed (wrong secret, version, or shape).

    Attributes:
        reply: a Reject body to send the peer before closing (so it can log why),
            or ``None`` when the peer itself refused us.
    """

    reply: bytes | None = None


class NotInProcess(RuntimeError):
    """A process-only function (``self()``, ``receive()``) was called outside one."""


class RuntimeStopped(RuntimeError):
    """The node has stopped; no more processes can be spawned on it."""


class ReceiveTimeout(TimeoutError):
    """``receive`` found no matching message within its timeout (Erlang's after)."""
