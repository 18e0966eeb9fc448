"""The interface every membership core offers its drivers.

The trio shell (``runtime/shell/membership.py``) and the simulator
(``runtime/sim``) drive any membership strategy through this one protocol, so
broadcast, monitors and subscribers see membership changes the same way under
every strategy (DESIGN.md: "every membership strategy writes its changes through
one function"). The change they all observe is the pair of effects
``NeighbourUp(spec)`` / ``NeighbourDown(peer)``: a core emits them exactly when a
node starts or stops being one we keep a link to (an active-view peer under
HyParView, a linked member under full mesh), so they always pair up.

``members()`` is the strategy's answer to "who is in the cluster": every member
for full mesh, static and client/server; ourselves plus the active view for
HyParView, as Partisan answers it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from runtime.core.effects import Effect
from runtime.core.spec import NodeSpec

__all__ = ["MembershipCore"]


class MembershipCore(Protocol):
    """A sans-IO membership strategy: events in, effects out (no I/O, no clock)."""

    @property
    def me(self) -> NodeSpec:
        """Our own node spec."""
        ...

    @property
    def left(self) -> bool:
        """Whether this node has left (the core then ignores every input)."""
        ...

    def members(self) -> list[NodeSpec]:
        """The members this node knows, ourselves included, sorted by name."""
        ...

    def neighbours(self) -> list[str]:
        """Names of the nodes we keep a link to (NeighbourUp'd), sorted."""
        ...

    def start(self, now: float) -> list[Effect]:
        """Arm timers and open the initial links; call once, first."""
        ...

    def join(self, contact: NodeSpec, now: float) -> list[Effect]:
        """Join the cluster through *contact*."""
        ...

    def leave(self, now: float) -> list[Effect]:
        """Leave the cluster: tell the peers, close the links, stop."""
        ...

    def on_message(self, sender: str, message: object, now: float) -> list[Effect]:
        """A protocol message from node *sender*; never raises for bad input."""
        ...

    def on_timer(self, name: Hashable, now: float) -> list[Effect]:
        """A timer this core set has fired."""
        ...

    def on_connection_lost(self, peer: str, now: float) -> list[Effect]:
        """An established link to *peer* died (or the failure detector says so)."""
        ...

    def on_connect_failed(self, peer: str, now: float) -> list[Effect]:
        """A dial to *peer* failed."""
        ...
