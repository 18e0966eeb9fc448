"""Virtual time for the simulator: integer nanoseconds inside, float seconds outside.

The simulator's clock is its event queue: time moves only when the next event is
taken, and jumps straight to it. Inside, every instant is an ``int`` of
nanoseconds, so two runs never disagree about which event comes first because
of float rounding, and ties are broken by a sequence number given at scheduling
time (first scheduled, first run). Cores take ``now`` as float seconds, as the
trio shell gives them (DESIGN.md, Decisions, "Clocks"); these helpers convert at
that boundary and nowhere else.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NS_PER_SECOND", "ns_to_seconds", "seconds_to_ns"]

NS_PER_SECOND: Final = 1_000_000_000
"""Nanoseconds in a second."""


def seconds_to_ns(seconds: float) -> int:
    """*seconds* as whole nanoseconds, rounded to the nearest.

    Raises:
        ValueError: *seconds* is negative, infinite or not a number.
    """
    if not 0.0 <= seconds < float("inf"):
        raise ValueError(f"a time must be a finite number >= 0, not {seconds!r}")
    return round(seconds * NS_PER_SECOND)


def ns_to_seconds(ns: int) -> float:
    """*ns* nanoseconds as float seconds (what cores take as ``now``)."""
    return ns / NS_PER_SECOND
