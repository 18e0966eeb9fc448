"""Heartbeat failure detection, as a sans-IO core.

Theory of operation
-------------------
A lost TCP connection is the fast failure signal (a killed process's kernel
closes its sockets at once). It misses a peer that hangs, a machine that froze,
or a network that silently drops everything (a partition with no reset). For
those, every node sends a small :class:`Heartbeat` to each peer it watches every
``heartbeat_interval`` on the ``membership`` channel, and any frame received
from a peer, on any channel, counts as hearing from it. A watched peer not
heard from for ``heartbeat_timeout`` is declared silent: the driver closes its
connections (so the usual reconnect logic takes over) and reports it down.

The core watches a peer from the moment the driver reports our connection to
it established (the handshake proved it alive then) until that connection is
lost. If our own tick runs late (more than two intervals since the last one:
the process was paused, or its event loop overloaded), the core did not look
at its peers meanwhile, so it restarts every peer's clock instead of blaming
them for its own stall (the pause detection of Akka's and Cassandra's
detectors). The driver reports what it heard in bulk at each tick (``heard``), so the
reader's hot path only bumps a per-peer counter.

Effects: ``Send(Heartbeat)``, ``SetTimer(TICK_TIMER)``, and :class:`PeerSilent`.

Choosing the timeout: it must exceed the interval by enough heartbeats that a
few lost or delayed ones do not declare a live peer dead. The defaults (1 s
interval, 5 s timeout) tolerate four missed heartbeats, and detect a hung peer
in 5-6 s; a killed one is detected in milliseconds by its connection closing.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, TypeAlias, final

import attrs

from runtime.core.effects import Send, SetTimer

__all__ = [
    "MESSAGE_TYPES",
    "TICK_TIMER",
    "FailureDetector",
    "FailureDetectorConfig",
    "FailureDetectorEffect",
    "Heartbeat",
    "PeerSilent",
]

TICK_TIMER: Final = ("failure_detector", "tick")


def _positive(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if type(value) not in (int, float) or not 0 < value < float("inf"):
        raise ValueError(f"{attribute.name} must be a positive number of seconds")


@final
@attrs.frozen(kw_only=True)
class FailureDetectorConfig:
    """Heartbeat knobs.

    Attributes:
        heartbeat_interval: seconds between heartbeats to each watched peer.
            One 10-byte frame per peer per second is negligible next to any
            real traffic, and keeps detection within a few seconds.
        heartbeat_timeout: seconds of silence after which a peer is declared
            down. Must be at least twice the interval; 5x by default, so a
            peer is declared down only after several heartbeats went missing.
    """

    heartbeat_interval: float = attrs.field(default=1.0, validator=_positive)
    heartbeat_timeout: float = attrs.field(default=5.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise ValueError(
                "heartbeat_timeout must be at least 2 * heartbeat_interval"
            )


@final
@attrs.frozen(kw_only=True)
class Heartbeat:
    """I am alive. ``sequence`` counts our heartbeats (for traces)."""

    sequence: int = attrs.field(validator=attrs.validators.instance_of(int))


MESSAGE_TYPES: Final[tuple[type, ...]] = (Heartbeat,)


@final
@attrs.frozen(kw_only=True)
class PeerSilent:
    """Effect: *peer* was not heard from for *silent_for* seconds: presume it dead."""

    peer: str
    silent_for: float


FailureDetectorEffect: TypeAlias = Send | SetTimer | PeerSilent


@final
class FailureDetector:
    """Which watched peers have gone silent. No I/O, no clock: ``now`` is given."""

    def __init__(self, config: FailureDetectorConfig) -> None:
        self.config = config
        # Watched peer -> when we last heard from it (or started watching).
        self._last_heard: dict[str, float] = {}
        self._sequence = 0
        self._started = False
        self._last_tick: float | None = None
        self.silent_count = 0
        self.pause_count = 0

    def watched(self) -> list[str]:
        """The peers being watched, sorted."""
        return sorted(self._last_heard)

    def start(self, now: float) -> list[FailureDetectorEffect]:
        """Arm the tick timer; call once."""
        self._started = True
        return [SetTimer(name=TICK_TIMER, at=now + self.config.heartbeat_interval)]

    def connected(self, peer: str, now: float) -> list[FailureDetectorEffect]:
        """Our connection to *peer* is up: watch it, and greet it at once."""
        self._last_heard[peer] = now
        self._sequence += 1
        return [Send(to=peer, message=Heartbeat(sequence=self._sequence))]

    def disconnected(self, peer: str) -> None:
        """Our connection to *peer* is gone: the transport reported it already."""
        self._last_heard.pop(peer, None)

    def heard(self, peer: str, now: float) -> None:
        """Something arrived from *peer* (any frame, any channel)."""
        if peer in self._last_heard:
            self._last_heard[peer] = now

    def on_timer(self, name: Hashable, now: float) -> list[FailureDetectorEffect]:
        """The tick: declare silent peers, heartbeat the others, re-arm."""
        if name != TICK_TIMER or not self._started:
            return []
        out: list[FailureDetectorEffect] = []
        timeout = self.config.heartbeat_timeout
        interval = self.config.heartbeat_interval
        if self._last_tick is not None and now - self._last_tick > 2 * interval:
            # Our own tick ran late: this node was paused or overloaded, so it
            # did not look at what arrived. Silence it did not watch is no
            # evidence against its peers; judge them afresh from now.
            self.pause_count += 1
            for peer in self._last_heard:
                self._last_heard[peer] = now
        self._last_tick = now
        self._sequence += 1
        beat = Heartbeat(sequence=self._sequence)
        for peer in sorted(self._last_heard):
            silent_for = now - self._last_heard[peer]
            if silent_for > timeout:
                del self._last_heard[peer]
                self.silent_count += 1
                out.append(PeerSilent(peer=peer, silent_for=silent_for))
            else:
                out.append(Send(to=peer, message=beat))
        out.append(SetTimer(name=TICK_TIMER, at=now + self.config.heartbeat_interval))
        return out
