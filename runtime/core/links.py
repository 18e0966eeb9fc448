"""Links' bookkeeping across nodes, as a sans-IO core.

Theory of operation
-------------------
A *link* is two-way (DESIGN.md, Decisions, "Links and exits"): when either end
of a link ends, the other gets an *exit signal* with the reason. What a signal
does to its receiver is the driver's business (kill it, turn it into an
``Exit`` message if it traps exits, or ignore a ``normal`` one); this core only
decides which signals are due and keeps no link behind. Every link a node takes
part in is held here as a pair ``(local pid, other pid)``, in both directions
when both ends are local, and indexed by the other end's node when it is
remote. The link is symmetric: each node holds its own end.

===============================  ===============================================
event                            what happens
===============================  ===============================================
``link(a, b)``, b local, alive   pair held both ways (idempotent)
``link(a, b)``, b local, gone    a gets an exit signal ``noproc`` from b
``link(a, b)``, b remote         held here at once; the other node is told with
                                 :class:`LinkRequest` (it holds its end, or
                                 answers :class:`LinkExit` ``noproc``)
``link(a, b)``, b's node down    a gets an exit signal ``noconnection``
``unlink(a, b)``                 removed here; the remote end is told
                                 (:class:`Unlink`)
a process ends                   each linked pid gets an exit signal with its
                                 reason: local ones at once, remote ones by a
                                 :class:`LinkExit`; every pair is removed
:class:`LinkExit` for a held     removed; the local end gets the exit signal
link
the other node is lost           every link across it is removed; each local
                                 end gets an exit signal ``noconnection``
a message for a link not held    ignored (it crossed an unlink, or a node loss)
===============================  ===============================================

Messages travel on the ``default`` channel keyed by the local process's pid, so
a :class:`LinkExit` leaves behind every message the dead process sent on that
channel (Erlang's ordering of signals from one process to another; exact with
parallelism 1), and an :class:`Unlink` behind the :class:`LinkRequest` before it.

The driver answers "is this local pid a live process?" through the *is_alive*
function given at construction; the core never sees a process table. Pids are
URI strings (``partisan:pid:NODE:CREATION.ID``); the node of a pid is the part
between the scheme and the last colon.

Effects: ``Send`` of this protocol's messages, and :class:`DeliverExit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias, final

import attrs

from runtime.core.effects import Send

__all__ = [
    "MESSAGE_TYPES",
    "DeliverExit",
    "LinkCounts",
    "LinkExit",
    "LinkRequest",
    "Links",
    "LinksEffect",
    "Unlink",
    "node_of",
]

_str = attrs.validators.instance_of(str)

NOPROC: Final = "noproc"
NOCONNECTION: Final = "noconnection"
_PID_PREFIX: Final = "partisan:pid:"
CHANNEL: Final = "default"


@final
@attrs.frozen(kw_only=True)
class LinkRequest:
    """Process *sender* (a pid on the sending node) links to *target* here."""

    sender: str = attrs.field(validator=_str)
    target: str = attrs.field(validator=_str)


@final
@attrs.frozen(kw_only=True)
class Unlink:
    """Process *sender* (on the sending node) removes its link to *target*."""

    sender: str = attrs.field(validator=_str)
    target: str = attrs.field(validator=_str)


@final
@attrs.frozen(kw_only=True)
class LinkExit:
    """Linked process *sender* ended with *reason* (plain data): an exit signal
    for *target* here."""

    sender: str = attrs.field(validator=_str)
    target: str = attrs.field(validator=_str)
    reason: object


MESSAGE_TYPES: Final[tuple[type, ...]] = (LinkRequest, Unlink, LinkExit)


@final
@attrs.frozen(kw_only=True)
class DeliverExit:
    """Effect: an exit signal from *sender* (a pid URI) with *reason* reaches
    local process *target* (a pid URI)."""

    target: str
    sender: str
    reason: object


LinksEffect: TypeAlias = Send | DeliverExit


@final
@attrs.frozen
class LinkCounts:
    """How many link ends this node holds (both zero when nothing is linked).

    Attributes:
        local: links with both ends on this node (each counted once).
        remote: links with one end on another node.
    """

    local: int
    remote: int


def node_of(pid: str) -> str:
    """The node of a pid URI (``""`` if *pid* is not a pid URI)."""
    if not pid.startswith(_PID_PREFIX):
        return ""
    node, colon, _ = pid[len(_PID_PREFIX) :].rpartition(":")
    return node if colon else ""


@final
class Links:
    """Process links of one node (no I/O).

    Args:
        me: this node's name.
        is_alive: whether a local pid URI is a live process.
    """

    def __init__(self, me: str, *, is_alive: Callable[[str], bool]) -> None:
        self.me = me
        self._is_alive = is_alive
        # Local pid URI -> the pids it is linked with (local or remote).
        # Invariant: for two local pids, a in _links[b] iff b in _links[a].
        self._links: dict[str, dict[str, None]] = {}
        # Remote node -> (local pid, remote pid) pairs across it.
        # Invariant: (a, b) is here iff b is remote and b in _links[a].
        self._by_node: dict[str, dict[tuple[str, str], None]] = {}
        self.ignored_count = 0

    # -- queries ----------------------------------------------------------

    def counts(self) -> LinkCounts:
        remote = sum(len(pairs) for pairs in self._by_node.values())
        ends = sum(len(peers) for peers in self._links.values())
        return LinkCounts(local=(ends - remote) // 2, remote=remote)

    def linked(self, pid: str) -> list[str]:
        """The pids local process *pid* is linked with, in link order."""
        return list(self._links.get(pid, {}))

    def is_linked(self, a: str, b: str) -> bool:
        return b in self._links.get(a, {})

    # -- commands from local processes -------------------------------------

    def link(self, a: str, b: str, *, node_up: bool) -> list[LinksEffect]:
        """Local process *a* links to *b* (a pid URI on any node).

        *node_up* says whether *b*'s node is connected now (ignored for a
        local *b*); if not, *a* gets ``noconnection`` at once, as in Erlang.
        """
        if a == b or self.is_linked(a, b):
            return []
        node = node_of(b)
        if node == self.me:
            if not self._is_alive(b):
                return [DeliverExit(target=a, sender=b, reason=NOPROC)]
            self._add(a, b)
            self._add(b, a)
            return []
        if not node_up:
            return [DeliverExit(target=a, sender=b, reason=NOCONNECTION)]
        self._add(a, b)
        self._by_node.setdefault(node, {})[(a, b)] = None
        return [
            Send(
                to=node,
                message=LinkRequest(sender=a, target=b),
                channel=CHANNEL,
                key=a,
            )
        ]

    def unlink(self, a: str, b: str) -> list[LinksEffect]:
        """Local process *a* removes its link to *b*; nothing if none."""
        if not self.is_linked(a, b):
            return []
        self._remove(a, b)
        node = node_of(b)
        if node == self.me:
            self._remove(b, a)
            return []
        self._unindex(node, a, b)
        return [
            Send(to=node, message=Unlink(sender=a, target=b), channel=CHANNEL, key=a)
        ]

    # -- events -------------------------------------------------------------

    def process_exited(self, pid: str, reason: object) -> list[LinksEffect]:
        """Local process *pid* ended with *reason*: an exit signal to each pid
        it was linked with (the driver converts reasons to plain data for
        remote ones)."""
        out: list[LinksEffect] = []
        for peer in self._links.pop(pid, {}):
            node = node_of(peer)
            if node == self.me:
                self._remove(peer, pid)
                out.append(DeliverExit(target=peer, sender=pid, reason=reason))
            else:
                self._unindex(node, pid, peer)
                out.append(
                    Send(
                        to=node,
                        message=LinkExit(sender=pid, target=peer, reason=reason),
                        channel=CHANNEL,
                        key=pid,
                    )
                )
        return out

    def on_message(self, sender: str, message: object) -> list[LinksEffect]:
        """A link protocol message from node *sender*; never raises."""
        match message:
            case LinkRequest(sender=remote, target=local):
                if node_of(remote) != sender or node_of(local) != self.me:
                    self.ignored_count += 1
                    return []
                if not self._is_alive(local):
                    return [
                        Send(
                            to=sender,
                            message=LinkExit(
                                sender=local, target=remote, reason=NOPROC
                            ),
                            channel=CHANNEL,
                            key=local,
                        )
                    ]
                if not self.is_linked(local, remote):
                    self._add(local, remote)
                    self._by_node.setdefault(sender, {})[(local, remote)] = None
                return []
            case Unlink(sender=remote, target=local):
                if node_of(remote) != sender or not self.is_linked(local, remote):
                    self.ignored_count += 1
                    return []
                self._remove(local, remote)
                self._unindex(sender, local, remote)
                return []
            case LinkExit(sender=remote, target=local, reason=reason):
                if node_of(remote) != sender or not self.is_linked(local, remote):
                    self.ignored_count += 1
                    return []
                self._remove(local, remote)
                self._unindex(sender, local, remote)
                return [DeliverExit(target=local, sender=remote, reason=reason)]
            case _:
                self.ignored_count += 1
                return []

    def node_down(self, node: str) -> list[LinksEffect]:
        """*node* was lost: every link across it ends with ``noconnection``."""
        out: list[LinksEffect] = []
        for local, remote in self._by_node.pop(node, {}):
            self._remove(local, remote)
            out.append(DeliverExit(target=local, sender=remote, reason=NOCONNECTION))
        return out

    # -- internals ------------------------------------------------------------

    def _add(self, a: str, b: str) -> None:
        self._links.setdefault(a, {})[b] = None

    def _remove(self, a: str, b: str) -> None:
        peers = self._links.get(a)
        if peers is not None:
            peers.pop(b, None)
            if not peers:
                del self._links[a]

    def _unindex(self, node: str, a: str, b: str) -> None:
        pairs = self._by_node.get(node)
        if pairs is not None:
            pairs.pop((a, b), None)
            if not pairs:
                del self._by_node[node]
