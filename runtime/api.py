"""Process-facing functions, Erlang style: ``spawn``, ``send``, ``self``, ``receive``.

They find the current node and process through context variables, so process
code does not thread a node object around::

    async def echo():
        while True:
            sender, text = await runtime.receive()
            runtime.send(sender, text)

    async with runtime.open_node(config) as node:
        pid = runtime.spawn(echo)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runtime.ref import Pid, Ref, parse_target
from runtime.shell.connection import SendStatus
from runtime.shell.node import current_node, current_process

__all__ = [
    "exit",
    "is_process_alive",
    "make_ref",
    "node",
    "nodes",
    "receive",
    "receive_batch",
    "register",
    "self",
    "send",
    "send_checked",
    "spawn",
    "whereis",
]


def spawn(
    fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
) -> Pid:
    """Start ``fn(*args)`` as a process on the current node; returns its pid."""
    return current_node().spawn(fn, *args, name=name)


def send(
    target: object, message: object, *, channel: str = "default", key: object = None
) -> None:
    """Send *message* to a pid, a registered name on a node, or a URI (best effort).

    Sending to a dead pid or an unknown name is silent, as in Erlang.
    """
    current_node().send(target, message, channel=channel, key=key)


def send_checked(
    target: object, message: object, *, channel: str = "default", key: object = None
) -> SendStatus:
    """As :func:`send`, returning why a message could not be handed over."""
    return current_node().send_checked(target, message, channel=channel, key=key)


def self() -> Pid:
    """The running process's pid.

    Raises:
        NotInProcess: outside a process.
    """
    return current_process().pid


def node() -> str:
    """The current node's name."""
    return current_node().name


def nodes() -> list[str]:
    """The peers the current node is connected to."""
    return current_node().nodes()


async def receive(
    match: Callable[[object], bool] | None = None, timeout: float | None = None
) -> object:
    """The first message in this process's mailbox that *match* accepts.

    Raises:
        ReceiveTimeout: nothing matched within *timeout* seconds.
        NotInProcess: outside a process.
    """
    return await current_process().mailbox.receive(match, timeout)


async def receive_batch(
    limit: int | None = None, timeout: float | None = None
) -> list[object]:
    """Every queued message (up to *limit*), waiting for at least one."""
    return await current_process().mailbox.receive_batch(limit, timeout)


def is_process_alive(pid: object) -> bool:
    """Whether a local pid is alive (ValueError for a remote pid)."""
    ref = parse_target(pid)
    if not isinstance(ref, Pid):
        raise ValueError(f"not a pid: {pid!r}")
    return current_node().is_process_alive(ref)


def exit(pid: object, reason: object = "killed") -> None:
    """End a process (local or remote) with *reason*; silent if it is gone."""
    ref = parse_target(pid)
    if not isinstance(ref, Pid):
        raise ValueError(f"not a pid: {pid!r}")
    current_node().exit(ref, reason)


def register(name: str, pid: Pid | None = None) -> None:
    """Register *name* for *pid* (default: the running process)."""
    current_node().register(name, pid if pid is not None else current_process().pid)


def whereis(name: str) -> Pid | None:
    """The local pid registered as *name*, or None."""
    return current_node().whereis(name)


def make_ref() -> Ref:
    """A new reference, unique to this node incarnation."""
    return current_node().make_ref()
