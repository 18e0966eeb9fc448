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
    "ProcessExit",
    "ProtocolError",
    "ReceiveTimeout",
    "RemoteError",
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


class RemoteError(Exception):
    """An exception raised on another node, as plain data (DESIGN.md, Decisions).

    No class is ever instantiated by a name taken from the wire: the remote
    exception's type name, message and formatted traceback travel as strings.

    Attributes:
        type_name: the remote exception's qualified class name.
        message: ``str()`` of the remote exception.
        remote_traceback: the formatted remote traceback (may be empty).
    """

    def __init__(
        self, type_name: str, message: str, remote_traceback: str = ""
    ) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteError) and (
            self.type_name,
            self.message,
            self.remote_traceback,
        ) == (other.type_name, other.message, other.remote_traceback)

    def __hash__(self) -> int:
        return hash((self.type_name, self.message))


class ProcessExit(Exception):
    """Raised inside a process to end it with *reason* (Erlang's ``exit/1``).

    The process ends quietly (no crash log) and its links and monitors see
    *reason*: ``"normal"``, ``"shutdown"``, or any value (plain data if it
    must cross nodes).

    Attributes:
        reason: the exit reason.
    """

    def __init__(self, reason: object = "normal") -> None:
        super().__init__(reason)
        self.reason = reason
