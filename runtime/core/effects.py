"""The effects protocol cores return, shared by every core and every driver.

A core's input methods (``on_message``, ``on_timer``, ``on_connection_lost``,
commands such as ``join``) return ``list[Effect]`` in the order the driver must
carry them out. The trio shell and the simulator both ``match`` on these types
and end with ``assert_never``, so a new effect cannot go unhandled.

Timers are named by any hashable value the core chooses and set at an absolute
time on the driver's monotonic clock (``now`` as the core received it, plus a
delay). Setting a timer that is already set moves it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeAlias, final

import attrs

from runtime.core.spec import NodeSpec

__all__ = [
    "CancelTimer",
    "Connect",
    "Disconnect",
    "Effect",
    "NeighbourDown",
    "NeighbourUp",
    "Send",
    "SetTimer",
]


@final
@attrs.frozen(kw_only=True)
class Send:
    """Send *message* (an attrs value of the core's protocol) to node *to*.

    ``key`` is the partition key picking the connection on a channel with
    parallelism > 1; a DOWN uses the dead process's key so it travels behind
    every message that process sent (DESIGN.md, what Partisan learned).
    """

    to: str
    message: object
    channel: str = "membership"
    key: object = None


@final
@attrs.frozen(kw_only=True)
class SetTimer:
    """Fire ``on_timer(name, now)`` at monotonic time *at* (replaces a pending one)."""

    name: Hashable
    at: float


@final
@attrs.frozen(kw_only=True)
class CancelTimer:
    """Forget the timer *name* if it is pending."""

    name: Hashable


@final
@attrs.frozen(kw_only=True)
class Connect:
    """Open connections to *spec* (the driver reports failure as a lost connection)."""

    spec: NodeSpec


@final
@attrs.frozen(kw_only=True)
class Disconnect:
    """Close every connection to node *peer*."""

    peer: str


@final
@attrs.frozen(kw_only=True)
class NeighbourUp:
    """*spec* became a neighbour (a member, or an active-view peer)."""

    spec: NodeSpec


@final
@attrs.frozen(kw_only=True)
class NeighbourDown:
    """Node *peer* is no longer a neighbour."""

    peer: str


Effect: TypeAlias = (
    Send | SetTimer | CancelTimer | Connect | Disconnect | NeighbourUp | NeighbourDown
)
