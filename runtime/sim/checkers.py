"""Checks and measures over a running simulation's views.

The simulator records each node's view from its ``NeighbourUp`` /
``NeighbourDown`` effects (:meth:`Simulation.view`). These functions judge that
record and the cores behind it:

* **safety, after every step** (:func:`check_views`): no live node lists
  itself or anyone twice, its recorded view equals what its core says
  (``neighbours()``), and ``members()`` holds the node once and no name twice;
  :func:`check_hyparview` adds HyParView's own (passive view disjoint from the
  active view, no self, no duplicates).
* **convergence, after a quiet spell**: :func:`asymmetric_links` (HyParView's
  active views must be symmetric among live nodes), :func:`dead_links` (no
  live node keeps a dead one), :func:`components` (connectivity of the live
  nodes over their views), :func:`members_disagree` (full mesh: every live node
  lists the same members).
* **reliability** (:func:`flood_reliability`): the share of live nodes a flood
  over the views reaches from one live node, as in the HyParView paper's
  figures, where a node that has crashed forwards nothing.

Each check raises ``AssertionError`` with the offending nodes in its message,
so it can serve as a hypothesis invariant directly. Everything iterates in the
simulation's creation order or over sorted lists: no set order leaks out.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

from runtime.core.hyparview import HyParView
from runtime.sim.world import Simulation

__all__ = [
    "asymmetric_links",
    "check_hyparview",
    "check_views",
    "components",
    "dead_links",
    "flood_reach",
    "flood_reliability",
    "members_disagree",
    "mean_flood_reliability",
]


def check_views(sim: Simulation) -> None:
    """Every live node's view is well formed and matches its core.

    Raises:
        AssertionError: naming the node and what is wrong.
    """
    for name, view in sim.views().items():
        core = sim.core(name)
        assert name not in view, f"{name} lists itself: {view}"
        assert len(set(view)) == len(view), f"{name} lists a node twice: {view}"
        neighbours = core.neighbours()
        assert sorted(view) == neighbours, (
            f"{name}: recorded view {sorted(view)} != core's {neighbours}"
        )
        names = [spec.name for spec in core.members()]
        assert len(set(names)) == len(names), f"{name}: a member twice: {names}"
        assert names.count(name) == 1, f"{name} is not once in its members: {names}"


def check_hyparview(sim: Simulation) -> None:
    """HyParView's view invariants on every live node (cores must be HyParView).

    Raises:
        AssertionError: naming the node and what is wrong.
    """
    for name in sim.live_nodes():
        core = sim.core(name)
        assert isinstance(core, HyParView), f"{name} does not run HyParView"
        active, passive = core.active_view(), core.passive_view()
        assert name not in active, f"{name} is in its own active view"
        assert name not in passive, f"{name} is in its own passive view"
        assert len(set(passive)) == len(passive), f"{name}: passive twice"
        both = sorted(set(active) & set(passive))
        assert not both, f"{name}: {both} both active and passive"


def asymmetric_links(sim: Simulation) -> list[tuple[str, str]]:
    """Pairs ``(a, b)`` of live nodes where a lists b but b does not list a."""
    views = sim.views()
    held = {name: set(view) for name, view in views.items()}
    return [
        (name, peer)
        for name, view in views.items()
        for peer in view
        if peer in held and name not in held[peer]
    ]


def dead_links(sim: Simulation) -> list[tuple[str, str]]:
    """Pairs ``(a, b)`` where live a still lists crashed or departed b."""
    views = sim.views()
    return [
        (name, peer)
        for name, view in views.items()
        for peer in view
        if peer not in views
    ]


def components(sim: Simulation) -> list[list[str]]:
    """Connected components of the live nodes over their views (either way).

    Returns:
        Each component's names in creation order; components ordered by their
        first node.
    """
    views = sim.views()
    edges: dict[str, list[str]] = {name: [] for name in views}
    for name, view in views.items():
        for peer in view:
            if peer in edges:
                edges[name].append(peer)
                edges[peer].append(name)
    found: list[list[str]] = []
    seen: set[str] = set()
    order = {name: index for index, name in enumerate(views)}
    for start in views:
        if start in seen:
            continue
        seen.add(start)
        stack, members = [start], [start]
        while stack:
            for peer in edges[stack.pop()]:
                if peer not in seen:
                    seen.add(peer)
                    stack.append(peer)
                    members.append(peer)
        found.append(sorted(members, key=order.__getitem__))
    return found


def members_disagree(sim: Simulation) -> list[str]:
    """Live nodes whose ``members()`` differ from the first live node's.

    Returns an empty list when every live node lists the same members.
    """
    live = sim.live_nodes()
    if not live:
        return []

    def listed(name: str) -> list[str]:
        return [spec.name for spec in sim.core(name).members()]

    first = listed(live[0])
    return [name for name in live[1:] if listed(name) != first]


def flood_reach(views: Mapping[str, Sequence[str]], source: str) -> int:
    """How many nodes of *views* a flood from *source* reaches (source included).

    Every node in *views* (the live ones) forwards to every node of its view;
    a node not in *views* (dead) receives nothing and forwards nothing.
    """
    if source not in views:
        return 0
    seen = {source}
    stack = [source]
    while stack:
        for peer in views[stack.pop()]:
            if peer not in seen and peer in views:
                seen.add(peer)
                stack.append(peer)
    return len(seen)


def flood_reliability(sim: Simulation, source: str) -> float:
    """The share of live nodes a flood over the views from *source* reaches."""
    views = sim.views()
    return flood_reach(views, source) / len(views) if views else 0.0


def mean_flood_reliability(
    sim: Simulation, rng: random.Random, floods: int, *, sources: Iterable[str] = ()
) -> float:
    """The mean share of live nodes reached by *floods* floods from random live nodes.

    Args:
        sim: the simulation.
        rng: draws the sources (pass a dedicated one to leave the run alone).
        floods: how many floods to average.
        sources: start with these nodes, then draw the rest.
    """
    views = sim.views()
    if not views or floods < 1:
        return 0.0
    live = list(views)
    chosen = [name for name in sources if name in views][:floods]
    while len(chosen) < floods:
        chosen.append(rng.choice(live))
    total = sum(flood_reach(views, source) for source in chosen)
    return total / (len(chosen) * len(views))
