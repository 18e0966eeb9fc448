"""Goal: the experiments and the ``partisan sim`` commands give the papers' shapes.

Method: small clusters (a few hundred nodes, seconds of wall time). The
HyParView failure experiment must lose reliability when half the cluster
crashes and heal to (nearly) all live nodes within a few rounds; the broadcast
experiment must show Plumtree at 100% reliability with a relative message
redundancy near 0 once its tree has formed, against flooding's redundancy of
about the active view size minus 2. The commands are run through their parsers
and their tables read back. ``Simulation.fork`` must give an independent copy
with the same future.
"""

from __future__ import annotations

import argparse
import io

import pytest

from runtime.sim import PAPER_CONFIG, Simulation, hyparview_factory
from runtime.sim.broadcast import (
    FLOOD,
    PLUMTREE,
    BroadcastExperiment,
    run_broadcast_experiment,
)
from runtime.sim.checkers import components, mean_flood_reliability
from runtime.sim.cli import add_subcommands, main, parse_shares
from runtime.sim.experiment import (
    FailureExperiment,
    build_cluster,
    run_failure_experiment,
    settle,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partisan")
    sub = parser.add_subparsers(dest="command", required=True)
    sim_parser = sub.add_parser("sim")
    add_subcommands(sim_parser.add_subparsers(dest="sim_command", required=True))
    return parser


def test_a_failure_loses_reliability_and_the_cluster_heals() -> None:
    report = run_failure_experiment(
        FailureExperiment(nodes=300, fails=(0.5, 0.8), seed=3, rounds=3)
    )
    assert report.settled
    half, most = report.results
    assert (half.crashed_count, half.live_count) == (150, 150)
    assert half.reliability[-1] >= 0.99
    assert most.reliability[0] < half.reliability[0]
    assert most.reliability[-1] > most.reliability[0]
    assert report.core_input_count > report.build_statistics.core_input_count


def test_a_settled_cluster_is_one_component_and_floods_reach_everyone() -> None:
    sim = Simulation(hyparview_factory(PAPER_CONFIG), seed=5, trace=False)
    build_cluster(sim, 200, join_interval=0.005)
    assert settle(sim, window=2.0, limit=60.0, changes_max=2)
    assert len(components(sim)) == 1
    rng = sim.rng
    assert mean_flood_reliability(sim, rng, 3) == 1.0


def test_plumtree_builds_a_tree_and_floods_do_not() -> None:
    report = run_broadcast_experiment(
        BroadcastExperiment(nodes=200, messages=4, seed=2)
    )
    steady = {result.protocol: result for result in report.steady}
    assert steady[PLUMTREE].reliability == 1.0
    assert steady[PLUMTREE].rmr < 0.1
    assert steady[FLOOD].reliability == 1.0
    assert steady[FLOOD].rmr > 2.0
    first = next(row for row in report.per_message if row[0] == PLUMTREE)
    assert first[3] > steady[PLUMTREE].rmr


def test_a_fork_has_the_same_future_and_its_own_state() -> None:
    sim = Simulation(hyparview_factory(PAPER_CONFIG), seed=9)
    build_cluster(sim, 30, join_interval=0.01)
    sim.run_for(5.0)
    fork = sim.fork()
    assert fork.trace_digest() == sim.trace_digest()
    sim.run_for(10.0)
    fork.run_for(10.0)
    assert fork.trace_digest() == sim.trace_digest()
    victim = sim.live_nodes()[0]
    fork.crash(victim)
    assert sim.is_alive(victim)


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        ("0.5", (0.5,)),
        ("0.1,0.5", (0.1, 0.5)),
        ("0.1:0.3:0.1", (0.1, 0.2, 0.3)),
    ],
)
def test_shares_parse(text: str, shares: tuple[float, ...]) -> None:
    assert parse_shares(text) == shares


@pytest.mark.parametrize("text", ["", "1.0", "x", "0.5:0.1:0", "-0.1"])
def test_bad_shares_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shares(text)


def test_the_hyparview_command_prints_a_reliability_table() -> None:
    args = _parser().parse_args(
        ["sim", "hyparview", "--nodes", "200", "--fail", "0.3,0.6", "--rounds", "2"]
    )
    out = io.StringIO()
    assert args.run(args, out=out) == 0
    text = out.getvalue()
    assert "active 5, passive 30, ARWL 6, PRWL 3" in text
    rows = [line for line in text.splitlines() if line.startswith(("30%", "60%"))]
    assert len(rows) == 2
    assert rows[0].split()[1:3] == ["60", "140"]
    assert "node-events/s" in text


def test_the_plumtree_command_prints_both_protocols(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plumtree", "--nodes", "100", "--messages", "2", "--digest"]) == 0
    text = capsys.readouterr().out
    assert text.count("plumtree ") >= 2
    assert text.count("flood ") >= 2
    assert "trace digest: " in text
