"""Goal: the heartbeat detector declares a peer down exactly when it has been
silent for longer than the timeout, and never while it is heard from.

Method: drive the core by hand with a virtual clock.
"""

from __future__ import annotations

import pytest

from runtime.core.effects import Send, SetTimer
from runtime.core.failure_detector import (
    TICK_TIMER,
    FailureDetector,
    FailureDetectorConfig,
    Heartbeat,
    PeerSilent,
)

CONFIG = FailureDetectorConfig(heartbeat_interval=1.0, heartbeat_timeout=3.0)


def test_start_arms_the_tick() -> None:
    detector = FailureDetector(CONFIG)
    assert detector.start(10.0) == [SetTimer(name=TICK_TIMER, at=11.0)]


def test_a_new_connection_is_greeted_and_watched() -> None:
    detector = FailureDetector(CONFIG)
    effects = detector.connected("b@h", 0.0)
    assert [type(e) for e in effects] == [Send]
    assert isinstance(effects[0], Send)
    assert isinstance(effects[0].message, Heartbeat)
    assert detector.watched() == ["b@h"]


def test_heard_peers_get_heartbeats_and_silent_ones_are_declared() -> None:
    detector = FailureDetector(CONFIG)
    detector.start(0.0)
    detector.connected("b@h", 0.0)
    detector.connected("c@h", 0.0)
    for now in (1.0, 2.0, 3.0):
        detector.heard("b@h", now)
        effects = detector.on_timer(TICK_TIMER, now)
        assert not [e for e in effects if isinstance(e, PeerSilent)]
    detector.heard("b@h", 4.0)
    effects = detector.on_timer(TICK_TIMER, 4.0)
    silent = [e for e in effects if isinstance(e, PeerSilent)]
    assert silent == [PeerSilent(peer="c@h", silent_for=4.0)]
    assert detector.watched() == ["b@h"]
    sends = [e for e in effects if isinstance(e, Send)]
    assert [s.to for s in sends] == ["b@h"]
    assert effects[-1] == SetTimer(name=TICK_TIMER, at=5.0)


def test_a_disconnected_peer_is_no_longer_watched() -> None:
    detector = FailureDetector(CONFIG)
    detector.start(0.0)
    detector.connected("b@h", 0.0)
    detector.disconnected("b@h")
    detector.heard("b@h", 1.0)  # late frames of the old connection: ignored
    assert detector.watched() == []
    assert not [e for e in detector.on_timer(TICK_TIMER, 10.0) if isinstance(e, Send)]


def test_other_timers_are_ignored() -> None:
    detector = FailureDetector(CONFIG)
    detector.start(0.0)
    assert detector.on_timer(("hyparview", "shuffle"), 1.0) == []


@pytest.mark.parametrize(
    ("interval", "timeout"), [(0, 1.0), (1.0, 1.5), (-1, 5.0), (1.0, float("inf"))]
)
def test_bad_configurations_are_refused(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        FailureDetectorConfig(heartbeat_interval=interval, heartbeat_timeout=timeout)


def test_a_late_tick_of_our_own_blames_no_peer() -> None:
    detector = FailureDetector(CONFIG)
    detector.start(0.0)
    detector.connected("b@h", 0.0)
    detector.on_timer(TICK_TIMER, 1.0)
    # We stalled for 9 s (a GC pause, an overloaded loop): b is not to blame.
    effects = detector.on_timer(TICK_TIMER, 10.0)
    assert not [e for e in effects if isinstance(e, PeerSilent)]
    assert detector.pause_count == 1
    # But silence after we are back on schedule still counts.
    for now in (11.0, 12.0, 13.0):
        assert not [
            e for e in detector.on_timer(TICK_TIMER, now) if isinstance(e, PeerSilent)
        ]
    assert [e for e in detector.on_timer(TICK_TIMER, 14.0) if isinstance(e, PeerSilent)]
