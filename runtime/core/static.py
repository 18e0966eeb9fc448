"""Static membership: the members are the configured specs, as a sans-IO core.

Partisan's ``partisan_static_peer_service_manager``: no protocol, no messages.

Theory of operation
-------------------
The membership is exactly the node specs the node was configured with, plus
ourselves; it changes only when the local caller says so with
``update_members``. Nodes do not tell each other anything, so every node must be
given a consistent list (the usual source is one configuration file).

``start`` opens a link to every configured member that ``link`` accepts
(``Connect`` + ``NeighbourUp`` each). ``update_members(specs)`` replaces the set:
new members are linked, gone ones unlinked (``Disconnect`` + ``NeighbourDown``),
and a member whose spec changed gets ``Connect(new spec)`` only (the same member
at a new address: no Down/Up, the driver replaces its connections). ``leave``
closes every link and finishes the core. ``join`` has no meaning for a static
membership and raises ``ValueError``; add a member with ``update_members``.

Lost connections and failed dials change nothing: the driver keeps dialling a
member until ``Disconnect``, and failure detection is not membership's job.

Events accepted and effects emitted
-----------------------------------
Inputs: ``start``, ``update_members``, ``leave`` (and ``join``, refused);
``on_message`` (no protocol: every message is ignored and counted),
``on_timer``, ``on_connection_lost``, ``on_connect_failed`` (counted only).
Effects: ``Connect`` / ``Disconnect``, ``NeighbourUp`` / ``NeighbourDown``.

Transition table
----------------

========================= ================== ================================
event                     condition          effects
========================= ================== ================================
``start``                 first call         Connect, NeighbourUp each linked
                                             member
``update_members(specs)`` started            new: Connect, NeighbourUp; gone:
                                             Disconnect, NeighbourDown;
                                             changed spec: Connect
``update_members(specs)`` not started        the set is replaced, no effects
``leave``                 -                  Disconnect, NeighbourDown each;
                                             the core stops
``join``                  -                  ``ValueError``
any message               -                  ignored and counted
========================= ================== ================================

Invariants (asserted after every input): we are a member, as ``me``; no name
is listed twice; once started, the linked members (``neighbours()``) are exactly
the members other than us that ``link`` accepts, so ``NeighbourUp`` and
``NeighbourDown`` pair up.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from typing import Final, final

import attrs

from runtime.core.effects import (
    Connect,
    Disconnect,
    Effect,
    NeighbourDown,
    NeighbourUp,
)
from runtime.core.full_mesh import MEMBER_COUNT_LIMIT, LinkPolicy, link_always
from runtime.core.spec import NodeSpec

__all__ = ["MESSAGE_TYPES", "Static", "StaticStatistics"]

MESSAGE_TYPES: Final[tuple[type, ...]] = ()
"""Static membership sends no messages."""


@final
@attrs.frozen(kw_only=True)
class StaticStatistics:
    """Counters of one static core (a snapshot; all counts since creation).

    Attributes:
        member_count: members, ourselves included.
        neighbour_count: members we link to.
        neighbour_up_count, neighbour_down_count: each ``NeighbourUp`` /
            ``NeighbourDown`` emitted.
        address_change_count: linked members whose spec changed.
        connection_lost_count, connect_failed_count: driver reports.
        ignored_message_count: messages received (static has no protocol).
    """

    member_count: int
    neighbour_count: int
    neighbour_up_count: int
    neighbour_down_count: int
    address_change_count: int
    connection_lost_count: int
    connect_failed_count: int
    ignored_message_count: int


@attrs.define
class _Counters:
    neighbour_up_count: int = 0
    neighbour_down_count: int = 0
    address_change_count: int = 0
    connection_lost_count: int = 0
    connect_failed_count: int = 0
    ignored_message_count: int = 0


def _specs_by_name(me: NodeSpec, specs: Iterable[NodeSpec]) -> dict[str, NodeSpec]:
    """Name -> spec for *specs*, without our own name, validated."""
    found: dict[str, NodeSpec] = {}
    for spec in specs:
        if not isinstance(spec, NodeSpec):
            raise ValueError("members are NodeSpec values")
        if spec.name in found:
            raise ValueError(f"{spec.name} appears twice")
        found[spec.name] = spec
    # The shared list usually names every node, us included; our own entry is
    # always our own spec (we may advertise an address the list spells
    # differently).
    found.pop(me.name, None)
    if len(found) >= MEMBER_COUNT_LIMIT:
        raise ValueError(f"at most {MEMBER_COUNT_LIMIT - 1} other members")
    return found


@final
class Static:
    """One node's static membership (no I/O, no clock, no messages).

    Args:
        me: our own node spec.
        peers: the configured members; our own name among them is skipped.
        rng: accepted for the core contract ``(me, config, rng)``; unused, since
            nothing here is random.
        link: ``link(me, other)`` decides whether we keep a link to a member;
            ``None`` links every member, ``client_server_link`` only pairs that
            are not both clients.

    Error handling:
        Caller mistakes (a duplicate name, a non-spec, ``join``, commands after
        ``leave``, a second ``start``) raise ``ValueError``.
    """

    def __init__(
        self,
        me: NodeSpec,
        peers: Iterable[NodeSpec],
        *,
        rng: random.Random | None = None,
        link: LinkPolicy | None = None,
    ) -> None:
        if not isinstance(me, NodeSpec):
            raise ValueError("me must be a NodeSpec")
        self._me = me
        self._link: LinkPolicy = link if link is not None else link_always
        # Name -> spec of every member but us. Invariant: never holds us.
        self._members = _specs_by_name(me, peers)
        # Name -> spec of the members we link to (NeighbourUp'd). Invariant once
        # started: exactly the members self._link accepts; empty before.
        self._up: dict[str, NodeSpec] = {}
        self._started = False
        self._left = False
        self._counters = _Counters()

    # -- queries ----------------------------------------------------------

    @property
    def me(self) -> NodeSpec:
        """Our own node spec."""
        return self._me

    @property
    def left(self) -> bool:
        """Whether ``leave`` was called (the core then ignores every input)."""
        return self._left

    def members(self) -> list[NodeSpec]:
        """Every configured member and ourselves, sorted by name."""
        if self._left:
            return [self._me]
        specs = [self._me, *self._members.values()]
        return sorted(specs, key=lambda spec: spec.name)

    def member(self, name: str) -> NodeSpec | None:
        """The spec of member *name*, or ``None``."""
        if name == self._me.name:
            return self._me
        return None if self._left else self._members.get(name)

    def neighbours(self) -> list[str]:
        """Names of the members we link to, sorted."""
        return sorted(self._up)

    def statistics(self) -> StaticStatistics:
        """A snapshot of the sizes and counters."""
        return StaticStatistics(
            member_count=len(self.members()),
            neighbour_count=len(self._up),
            **attrs.asdict(self._counters),
        )

    # -- commands ---------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Link every configured member; call once, first.

        Raises:
            ValueError: called twice.
        """
        if self._left:
            return []
        if self._started:
            raise ValueError("start is called once")
        self._started = True
        out: list[Effect] = []
        self._relink(out)
        self._check_invariants()
        return out

    def join(self, contact: NodeSpec, now: float) -> list[Effect]:
        """Refused: a static membership has no join; use ``update_members``.

        Raises:
            ValueError: always.
        """
        raise ValueError("static membership has no join; use update_members")

    def leave(self, now: float) -> list[Effect]:
        """Close every link and finish: every input then returns ``[]``.

        The other nodes are not told (there is no protocol); they keep us in
        their lists until their own configuration changes.
        """
        if self._left:
            return []
        out: list[Effect] = []
        for name in sorted(self._up):
            self._counters.neighbour_down_count += 1
            out += [Disconnect(peer=name), NeighbourDown(peer=name)]
        self._up = {}
        self._members = {}
        self._left = True
        return out

    def update_members(self, specs: Iterable[NodeSpec], now: float) -> list[Effect]:
        """Make the membership exactly *specs* plus ourselves.

        Raises:
            ValueError: a non-spec or a duplicate name, too many specs, or the
                core left. The membership is unchanged then.
        """
        if self._left:
            raise ValueError("this core has left")
        self._members = _specs_by_name(self._me, specs)
        out: list[Effect] = []
        if self._started:
            self._relink(out)
        self._check_invariants()
        return out

    # -- events -----------------------------------------------------------

    def on_message(self, sender: str, message: object, now: float) -> list[Effect]:
        """Static membership has no protocol: every message is ignored, counted."""
        if not self._left:
            self._counters.ignored_message_count += 1
        return []

    def on_timer(self, name: Hashable, now: float) -> list[Effect]:
        """Static membership sets no timer: ignored."""
        return []

    def on_connection_lost(self, peer: str, now: float) -> list[Effect]:
        """Counted only: the driver redials members."""
        if not self._left:
            self._counters.connection_lost_count += 1
        return []

    def on_connect_failed(self, peer: str, now: float) -> list[Effect]:
        """Counted only: the driver keeps dialling members until Disconnect."""
        if not self._left:
            self._counters.connect_failed_count += 1
        return []

    # -- internals ----------------------------------------------------------

    def _relink(self, out: list[Effect]) -> None:
        """Align the links with the members: Up new, Down gone, Connect moved."""
        linked = {
            name: spec
            for name, spec in sorted(self._members.items())
            if self._link(self._me, spec)
        }
        for name, spec in linked.items():
            previous = self._up.get(name)
            if previous is None:
                self._counters.neighbour_up_count += 1
                out += [Connect(spec=spec), NeighbourUp(spec=spec)]
            elif previous != spec:
                self._counters.address_change_count += 1
                out.append(Connect(spec=spec))
        for name in sorted(self._up):
            if name not in linked:
                self._counters.neighbour_down_count += 1
                out += [Disconnect(peer=name), NeighbourDown(peer=name)]
        self._up = linked

    def _check_invariants(self) -> None:
        if self._left:
            return
        assert self._me.name not in self._members
        if self._started:
            expected = {
                name: spec
                for name, spec in self._members.items()
                if self._link(self._me, spec)
            }
            assert self._up == expected
        else:
            assert not self._up
