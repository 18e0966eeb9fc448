"""Monitors' bookkeeping across nodes, as a sans-IO core.

Theory of operation
-------------------
A *monitor* is one-way: a watcher process asks to be told when a target process
ends, and gets one DOWN with the reason (``normal``, the exception, ``noproc``
if the target was already gone, ``noconnection`` if its node was lost). This
core holds every monitor a node takes part in, keyed by the monitor's ref URI:

* **local** monitors: watcher and target both here;
* **outgoing**: a local watcher on a remote target; the target's node is asked
  with :class:`MonitorRequest` and answers only when the target ends
  (:class:`DownNotice`), or at once with ``noproc``;
* **incoming**: a remote watcher on a local target.

So that none is ever left behind, every way a monitor can end removes it on
both sides:

===============================  ===============================================
event                            what happens
===============================  ===============================================
target ends                      each watcher gets DOWN (remote ones by a
                                 DownNotice); the monitors are removed
watcher ends                     its monitors are removed; each outgoing one is
                                 cancelled on the target's node (Demonitor)
``demonitor(ref)``               removed here, and on the target's node
the other node is lost           outgoing monitors to it give DOWN noconnection;
                                 incoming ones from it are dropped silently
DownNotice / Demonitor for an    ignored (it crossed a demonitor or a node loss)
unknown ref
===============================  ===============================================

A DownNotice is sent on the ``default`` channel with the dead process's pid as
the partition key, so it travels behind every message that process sent the
watcher on that channel (Erlang's guarantee; exact with parallelism 1).

Node monitors: ``monitor_node(watcher, node, on)`` stacks like Erlang's (each
``True`` adds one, each ``False`` removes one) and every one gives a nodedown;
``monitor_nodes(watcher, on)`` subscribes to every nodeup and nodedown.

The driver answers "which live local process is this target?" through the
*resolve* function given at construction (a pid URI or a registered name to the
live pid's URI, or ``None``); the core never sees a process table.

Effects: ``Send`` of this protocol's messages, :class:`DeliverDown`,
:class:`DeliverNodeEvent`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias, final

import attrs

from runtime.core.effects import Send

__all__ = [
    "MESSAGE_TYPES",
    "Demonitor",
    "DeliverDown",
    "DeliverNodeEvent",
    "DownNotice",
    "MonitorCounts",
    "MonitorRequest",
    "Monitors",
    "MonitorsEffect",
]

_str = attrs.validators.instance_of(str)

NOPROC: Final = "noproc"
NOCONNECTION: Final = "noconnection"


@final
@attrs.frozen(kw_only=True)
class MonitorRequest:
    """Watcher *watcher* (a pid URI on the sender) monitors *target* here."""

    ref: str = attrs.field(validator=_str)
    watcher: str = attrs.field(validator=_str)
    target: str = attrs.field(validator=_str)


@final
@attrs.frozen(kw_only=True)
class Demonitor:
    """Cancel the monitor *ref* the sender took on one of our processes."""

    ref: str = attrs.field(validator=_str)


@final
@attrs.frozen(kw_only=True)
class DownNotice:
    """The target of monitor *ref* ended with *reason* (plain data)."""

    ref: str = attrs.field(validator=_str)
    reason: object


MESSAGE_TYPES: Final[tuple[type, ...]] = (MonitorRequest, Demonitor, DownNotice)


@final
@attrs.frozen(kw_only=True)
class DeliverDown:
    """Effect: put DOWN(ref, target, reason) in local process *watcher*'s mailbox."""

    watcher: str
    ref: str
    target: str
    reason: object


@final
@attrs.frozen(kw_only=True)
class DeliverNodeEvent:
    """Effect: tell local process *watcher* that *node* went up or down."""

    watcher: str
    node: str
    up: bool
    reason: str


MonitorsEffect: TypeAlias = Send | DeliverDown | DeliverNodeEvent


@final
@attrs.frozen
class MonitorCounts:
    """How many monitors of each kind are held (all zero when nothing watches)."""

    local: int
    outgoing: int
    incoming: int
    node_monitors: int
    node_subscribers: int


@final
@attrs.define
class _Monitor:
    ref: str
    watcher: str  # pid URI (local for local/outgoing, remote for incoming)
    target: str  # what the watcher named (pid URI or name)
    target_pid: str  # the resolved pid URI ("" while unknown, outgoing)
    node: str  # the remote side's node ("" for local)


def _node_of(pid_uri: str) -> str:
    # partisan:pid:NODE:CREATION.ID
    return pid_uri.split(":")[2]


@final
class Monitors:
    """Process and node monitors of one node (no I/O).

    Args:
        me: this node's name.
        resolve: a live local process's pid URI for a pid URI or registered
            name, or ``None``.
    """

    def __init__(self, me: str, *, resolve: Callable[[str], str | None]) -> None:
        self.me = me
        self._resolve = resolve
        self._local: dict[str, _Monitor] = {}
        self._outgoing: dict[str, _Monitor] = {}
        self._incoming: dict[str, _Monitor] = {}
        # Local pid URI -> refs of monitors on it (local and incoming).
        self._by_target: dict[str, dict[str, None]] = {}
        # Local pid URI -> refs of monitors it holds (local and outgoing).
        self._by_watcher: dict[str, dict[str, None]] = {}
        # Node -> refs of outgoing and incoming monitors across it.
        self._by_node: dict[str, dict[str, None]] = {}
        # Watcher pid URI -> node -> count (monitor_node stacks).
        self._node_monitors: dict[str, dict[str, int]] = {}
        self._node_subscribers: dict[str, None] = {}
        self.ignored_count = 0

    # -- queries ----------------------------------------------------------

    def counts(self) -> MonitorCounts:
        return MonitorCounts(
            local=len(self._local),
            outgoing=len(self._outgoing),
            incoming=len(self._incoming),
            node_monitors=sum(
                sum(nodes.values()) for nodes in self._node_monitors.values()
            ),
            node_subscribers=len(self._node_subscribers),
        )

    # -- commands from local processes -------------------------------------

    def monitor(
        self, ref: str, watcher: str, target: str, target_node: str, *, node_up: bool
    ) -> list[MonitorsEffect]:
        """*watcher* (a local pid URI) monitors *target* on *target_node*.

        *node_up* says whether *target_node* is connected now; if not, the
        DOWN comes at once with ``noconnection``, as in Erlang.
        """
        if target_node == self.me:
            pid = self._resolve(target)
            if pid is None:
                return [
                    DeliverDown(watcher=watcher, ref=ref, target=target, reason=NOPROC)
                ]
            monitor = _Monitor(ref, watcher, target, pid, "")
            self._local[ref] = monitor
            self._index(self._by_target, pid, ref)
            self._index(self._by_watcher, watcher, ref)
            return []
        if not node_up:
            return [
                DeliverDown(
                    watcher=watcher, ref=ref, target=target, reason=NOCONNECTION
                )
            ]
        monitor = _Monitor(ref, watcher, target, "", target_node)
        self._outgoing[ref] = monitor
        self._index(self._by_watcher, watcher, ref)
        self._index(self._by_node, target_node, ref)
        request = MonitorRequest(ref=ref, watcher=watcher, target=target)
        return [Send(to=target_node, message=request, channel="default", key=watcher)]

    def demonitor(self, ref: str) -> list[MonitorsEffect]:
        """Cancel monitor *ref*; returns whether one was held (in the effects)."""
        monitor = self._local.pop(ref, None)
        if monitor is not None:
            self._unindex(self._by_target, monitor.target_pid, ref)
            self._unindex(self._by_watcher, monitor.watcher, ref)
            return []
        monitor = self._outgoing.pop(ref, None)
        if monitor is None:
            return []
        self._unindex(self._by_watcher, monitor.watcher, ref)
        self._unindex(self._by_node, monitor.node, ref)
        return [
            Send(
                to=monitor.node,
                message=Demonitor(ref=ref),
                channel="default",
                key=monitor.watcher,
            )
        ]

    def holds(self, ref: str) -> bool:
        """Whether monitor *ref* (local or outgoing) is still active."""
        return ref in self._local or ref in self._outgoing

    def monitor_node(self, watcher: str, node: str, *, on: bool) -> None:
        """Add (``on``) or remove one node monitor of *watcher* on *node*."""
        nodes = self._node_monitors.setdefault(watcher, {})
        if on:
            nodes[node] = nodes.get(node, 0) + 1
        elif nodes.get(node, 0) > 1:
            nodes[node] -= 1
        else:
            nodes.pop(node, None)
        if not nodes:
            del self._node_monitors[watcher]

    def monitor_nodes(self, watcher: str, *, on: bool) -> None:
        """Subscribe (or not) *watcher* to every nodeup / nodedown."""
        if on:
            self._node_subscribers[watcher] = None
        else:
            self._node_subscribers.pop(watcher, None)

    # -- events -------------------------------------------------------------

    def process_exited(self, pid: str, reason: object) -> list[MonitorsEffect]:
        """Local process *pid* ended with *reason* (plain data for remote DOWNs;
        the driver converts exceptions)."""
        out: list[MonitorsEffect] = []
        for ref in self._by_target.pop(pid, {}):
            monitor = self._local.pop(ref, None)
            if monitor is not None:
                self._unindex(self._by_watcher, monitor.watcher, ref)
                out.append(
                    DeliverDown(
                        watcher=monitor.watcher,
                        ref=ref,
                        target=monitor.target,
                        reason=reason,
                    )
                )
                continue
            monitor = self._incoming.pop(ref, None)
            if monitor is not None:
                self._unindex(self._by_node, monitor.node, ref)
                out.append(
                    Send(
                        to=monitor.node,
                        message=DownNotice(ref=ref, reason=reason),
                        channel="default",
                        key=pid,
                    )
                )
        for ref in self._by_watcher.pop(pid, {}):
            monitor = self._local.pop(ref, None)
            if monitor is not None:
                self._unindex(self._by_target, monitor.target_pid, ref)
                continue
            monitor = self._outgoing.pop(ref, None)
            if monitor is not None:
                self._unindex(self._by_node, monitor.node, ref)
                out.append(
                    Send(
                        to=monitor.node,
                        message=Demonitor(ref=ref),
                        channel="default",
                        key=pid,
                    )
                )
        self._node_monitors.pop(pid, None)
        self._node_subscribers.pop(pid, None)
        return out

    def on_message(self, sender: str, message: object) -> list[MonitorsEffect]:
        """A monitor protocol message from node *sender*; never raises."""
        match message:
            case MonitorRequest(ref=ref, watcher=watcher, target=target):
                return self._on_request(sender, ref, watcher, target)
            case Demonitor(ref=ref):
                monitor = self._incoming.get(ref)
                if monitor is None or monitor.node != sender:
                    self.ignored_count += 1
                    return []
                del self._incoming[ref]
                self._unindex(self._by_target, monitor.target_pid, ref)
                self._unindex(self._by_node, sender, ref)
                return []
            case DownNotice(ref=ref, reason=reason):
                monitor = self._outgoing.get(ref)
                if monitor is None or monitor.node != sender:
                    self.ignored_count += 1
                    return []
                del self._outgoing[ref]
                self._unindex(self._by_watcher, monitor.watcher, ref)
                self._unindex(self._by_node, sender, ref)
                return [
                    DeliverDown(
                        watcher=monitor.watcher,
                        ref=ref,
                        target=monitor.target,
                        reason=reason,
                    )
                ]
            case _:
                self.ignored_count += 1
                return []

    def node_up(self, node: str) -> list[MonitorsEffect]:
        """*node* came up: tell the ``monitor_nodes`` subscribers."""
        return [
            DeliverNodeEvent(watcher=watcher, node=node, up=True, reason="")
            for watcher in self._node_subscribers
        ]

    def node_down(self, node: str, reason: str) -> list[MonitorsEffect]:
        """*node* was lost: DOWN noconnection for monitors on it; drop those
        it held on us; nodedown to node monitors and subscribers."""
        out: list[MonitorsEffect] = []
        for ref in self._by_node.pop(node, {}):
            monitor = self._outgoing.pop(ref, None)
            if monitor is not None:
                self._unindex(self._by_watcher, monitor.watcher, ref)
                out.append(
                    DeliverDown(
                        watcher=monitor.watcher,
                        ref=ref,
                        target=monitor.target,
                        reason=NOCONNECTION,
                    )
                )
                continue
            monitor = self._incoming.pop(ref, None)
            if monitor is not None:
                self._unindex(self._by_target, monitor.target_pid, ref)
        for watcher in list(self._node_monitors):
            nodes = self._node_monitors[watcher]
            count = nodes.pop(node, 0)
            out += [
                DeliverNodeEvent(watcher=watcher, node=node, up=False, reason=reason)
            ] * count
            if not nodes:
                del self._node_monitors[watcher]
        out += [
            DeliverNodeEvent(watcher=watcher, node=node, up=False, reason=reason)
            for watcher in self._node_subscribers
        ]
        return out

    def watched_nodes(self, watcher: str) -> list[str]:
        """Nodes *watcher* holds node monitors on (for an immediate nodedown)."""
        return sorted(self._node_monitors.get(watcher, {}))

    # -- internals ------------------------------------------------------------

    def _on_request(
        self, sender: str, ref: str, watcher: str, target: str
    ) -> list[MonitorsEffect]:
        if ref in self._incoming or not watcher.startswith("partisan:pid:"):
            self.ignored_count += 1
            return []
        try:
            watcher_node = _node_of(watcher)
        except IndexError:
            watcher_node = ""
        if watcher_node != sender:
            self.ignored_count += 1
            return []
        pid = self._resolve(target)
        if pid is None:
            return [
                Send(
                    to=sender,
                    message=DownNotice(ref=ref, reason=NOPROC),
                    channel="default",
                    key=target,
                )
            ]
        self._incoming[ref] = _Monitor(ref, watcher, target, pid, sender)
        self._index(self._by_target, pid, ref)
        self._index(self._by_node, sender, ref)
        return []

    @staticmethod
    def _index(index: dict[str, dict[str, None]], key: str, ref: str) -> None:
        index.setdefault(key, {})[ref] = None

    @staticmethod
    def _unindex(index: dict[str, dict[str, None]], key: str, ref: str) -> None:
        refs = index.get(key)
        if refs is not None:
            refs.pop(ref, None)
            if not refs:
                del index[key]
