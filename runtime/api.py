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

from collections.abc import Awaitable, Callable, Iterable

from runtime.core.spec import NodeSpec
from runtime.ref import Pid, Ref, parse_target
from runtime.shell.connection import SendStatus
from runtime.shell.faults import FaultAction, Partition
from runtime.shell.membership import Subscription
from runtime.shell.node import current_node, current_process

__all__ = [
    "demonitor",
    "exit",
    "inject_partition",
    "interpose",
    "is_process_alive",
    "join",
    "leave",
    "link",
    "make_ref",
    "member",
    "members",
    "monitor",
    "monitor_node",
    "monitor_nodes",
    "node",
    "nodes",
    "on_down",
    "on_up",
    "partitions",
    "remove_interposition",
    "resolve_partition",
    "update_members",
    "receive",
    "receive_batch",
    "register",
    "self",
    "send",
    "send_checked",
    "spawn",
    "spawn_link",
    "trap_exit",
    "unlink",
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
    """Send a process (local or remote) an exit signal; silent if it is gone.

    As Erlang's ``exit/2``: ``"kill"`` always ends it (reason ``"killed"``);
    a process that traps exits gets an ``Exit`` message instead; a
    ``"normal"`` signal does not end a process that does not trap exits.
    """
    ref = parse_target(pid)
    if not isinstance(ref, Pid):
        raise ValueError(f"not a pid: {pid!r}")
    current_node().exit(ref, reason)


def _pid(target: object) -> Pid:
    ref = parse_target(target)
    if not isinstance(ref, Pid):
        raise ValueError(f"not a pid: {target!r}")
    return ref


def spawn_link(fn: Callable[..., Awaitable[object]], *args: object) -> Pid:
    """Start ``fn(*args)`` as a process linked to the calling one (atomically).

    Raises:
        NotInProcess: outside a process.
    """
    return current_node().spawn(fn, *args, link=True)


def link(pid: object) -> None:
    """Link the calling process with *pid* (any node): when either ends, the
    other gets an exit signal. A dead *pid* gives an exit signal ``noproc``."""
    current_node().link(_pid(pid))


def unlink(pid: object) -> None:
    """Remove the calling process's link with *pid*, if any."""
    current_node().unlink(_pid(pid))


def trap_exit(flag: bool) -> bool:  # noqa: FBT001
    """Whether exit signals reach the calling process as ``Exit`` messages
    instead of ending it (``"kill"`` still ends it); returns the old flag."""
    return current_node().trap_exit(flag)


def register(name: str, pid: Pid | None = None) -> None:
    """Register *name* for *pid* (default: the running process)."""
    current_node().register(name, pid if pid is not None else current_process().pid)


def whereis(name: str) -> Pid | None:
    """The local pid registered as *name*, or None."""
    return current_node().whereis(name)


def make_ref() -> Ref:
    """A new reference, unique to this node incarnation."""
    return current_node().make_ref()


# -- monitors ------------------------------------------------------------------


def monitor(target: object) -> Ref:
    """Monitor a process (pid or name, any form): a ``Down`` arrives when it ends."""
    return current_node().monitor(target)


def demonitor(ref: Ref, *, flush: bool = False) -> bool:
    """Cancel a monitor; *flush* also removes its ``Down`` if already received."""
    return current_node().demonitor(ref, flush=flush)


def monitor_node(node: str, flag: bool = True) -> None:  # noqa: FBT001, FBT002
    """Get a ``NodeDown`` when *node* goes down (at once if it is not up)."""
    current_node().monitor_node(node, flag)


def monitor_nodes(flag: bool = True) -> None:  # noqa: FBT001, FBT002
    """Subscribe the calling process to every ``NodeUp`` / ``NodeDown``."""
    current_node().monitor_nodes(flag)


# -- membership ------------------------------------------------------------------


def members() -> list[NodeSpec]:
    """The cluster's members as this node knows them (itself included)."""
    return current_node().membership.members()


def member(name: str) -> NodeSpec | None:
    """The spec of member *name*, or None."""
    return current_node().membership.member(name)


def join(spec: NodeSpec) -> None:
    """Join the cluster through the node *spec*."""
    current_node().membership.join(spec)


async def leave(node: str | None = None) -> None:
    """Leave the cluster (no argument), or remove *node* from it."""
    await current_node().membership.leave(node)


def update_members(specs: Iterable[NodeSpec]) -> None:
    """Make the membership exactly *specs* plus this node."""
    current_node().membership.update_members(specs)


def on_up(node: str | None, fn: Callable[[str], object]) -> Subscription:
    """Call ``fn(node)`` when *node* (any node if None) comes up."""
    return current_node().membership.on_up(node, fn)


def on_down(node: str | None, fn: Callable[[str], object]) -> Subscription:
    """Call ``fn(node)`` when *node* (any node if None) goes down."""
    return current_node().membership.on_down(node, fn)


# -- fault injection ---------------------------------------------------------------


def inject_partition(nodes: Iterable[str], ttl: float | None = None) -> Ref:
    """Cut the current node off from *nodes* for *ttl* seconds (or until resolved)."""
    return current_node().inject_partition(nodes, ttl)


def resolve_partition(ref: Ref) -> bool:
    """End an injected partition; False if it had already ended."""
    return current_node().resolve_partition(ref)


def partitions() -> list[Partition]:
    """The partitions injected on the current node."""
    return current_node().partitions()


def interpose(
    direction: str,
    predicate: Callable[[str, object], bool],
    action: FaultAction | str,
    *,
    delay: float = 0.0,
) -> Ref:
    """Drop, delay or duplicate matching user messages (``send`` / ``receive``)."""
    return current_node().interpose(direction, predicate, action, delay=delay)


def remove_interposition(ref: Ref) -> bool:
    """Remove an interposition; False if unknown."""
    return current_node().remove_interposition(ref)
