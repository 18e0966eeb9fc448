"""What the runtime itself puts in a process's mailbox: monitor and exit notifications.

These are local values, built by the watcher's own node (a remote DOWN travels
as a protocol message and becomes a :class:`Down` here), so they are objects
rather than plain data. Match on them in ``receive``::

    ref = runtime.monitor(pid)
    down = await runtime.receive(lambda m: isinstance(m, Down) and m.ref == ref)
"""

from __future__ import annotations

from typing import final

import attrs

from runtime.ref import Name, Pid, Ref

__all__ = ["Down", "Exit", "NodeDown", "NodeUp"]


@final
@attrs.frozen
class Down:
    """The monitored process ended (Erlang's ``{'DOWN', Ref, process, Pid, Reason}``).

    Attributes:
        ref: the monitor's ref, as ``monitor`` returned it.
        target: what was monitored: a Pid, or a Name.
        reason: ``"normal"``; the exception (local) or a ``RemoteError``
            (remote) it crashed with; the exit reason it was killed with;
            ``"noproc"`` if there was no such process; ``"noconnection"`` if
            its node was lost.
    """

    ref: Ref
    target: Pid | Name
    reason: object


@final
@attrs.frozen
class NodeDown:
    """A monitored node went down (``monitor_node`` / ``monitor_nodes``)."""

    node: str
    reason: str


@final
@attrs.frozen
class NodeUp:
    """A node came up (``monitor_nodes`` subscribers only)."""

    node: str


@final
@attrs.frozen
class Exit:
    """An exit signal, received as a message because the process traps exits
    (Erlang's ``{'EXIT', Pid, Reason}``; see ``runtime.trap_exit``).

    Attributes:
        pid: the sender: the linked process that ended, or the process that
            called ``exit(pid, reason)``; None when ``exit`` was called from
            outside any process.
        reason: ``"normal"``; the exception (local) or a ``RemoteError``
            (remote) a linked process crashed with; the reason given to
            ``exit``; ``"killed"``; ``"noproc"`` when a link found no such
            process; ``"noconnection"`` when the linked process's node was
            lost.
    """

    pid: Pid | None
    reason: object
