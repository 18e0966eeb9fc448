"""The ``partisan sim`` commands: run the simulator's experiments from a shell.

``runtime/cli.py`` creates the ``sim`` parser and calls :func:`add_subcommands`
on its subparsers; each subcommand sets ``run`` (``args.run(args) -> int``).
``python -m runtime.sim`` offers the same commands on their own.

* ``hyparview``: build an N-node HyParView cluster (the paper's parameters by
  default), crash a share of it at once and print broadcast reliability right
  after the failure and after each healing round
  (:mod:`runtime.sim.experiment`). ``--fail`` takes several shares (a sweep),
  as the paper's figure.
* ``plumtree``: on the same kind of cluster, broadcast messages with Plumtree
  and with plain flooding over the same active views, and print reliability,
  relative message redundancy and last-delivery hop of each
  (:mod:`runtime.sim.broadcast`).

Both print the simulated node-events per second and the wall time. The
simulator itself never reads a clock; the commands time it from outside.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from runtime.core.hyparview import HyParViewConfig
from runtime.sim.broadcast import (
    BroadcastExperiment,
    BroadcastResult,
    run_broadcast_experiment,
)
from runtime.sim.experiment import (
    PAPER_CONFIG,
    FailureExperiment,
    FailureReport,
    run_failure_experiment,
)
from runtime.sim.network import Latency, NetworkConfig

__all__ = ["add_subcommands", "main", "parse_shares"]


def parse_shares(text: str) -> tuple[float, ...]:
    """Failure shares from ``0.5``, ``0.1,0.5,0.9`` or ``0.1:0.9:0.1`` (a range).

    Raises:
        argparse.ArgumentTypeError: not shares in [0, 1).
    """
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0:
                raise ValueError("step must be positive")
            count = round((stop - start) / step) + 1
            shares = tuple(round(start + k * step, 6) for k in range(count))
        else:
            shares = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad shares {text!r}: {error}") from None
    if not shares or not all(0.0 <= share < 1.0 for share in shares):
        raise argparse.ArgumentTypeError(f"shares must be in [0, 1): {text!r}")
    return shares


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _add_cluster_arguments(parser: argparse.ArgumentParser, *, nodes: int) -> None:
    parser.add_argument(
        "--nodes", type=_positive_int, default=nodes, help=f"cluster size ({nodes})"
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed (0)")
    parser.add_argument(
        "--active",
        type=_positive_int,
        default=PAPER_CONFIG.active_view_size_max,
        help="active view size (the paper's 5)",
    )
    parser.add_argument(
        "--passive",
        type=_positive_int,
        default=PAPER_CONFIG.passive_view_size_max,
        help="passive view size (the paper's 30)",
    )
    parser.add_argument(
        "--arwl",
        type=int,
        default=PAPER_CONFIG.active_random_walk_length,
        help="active random walk length (the paper's 6)",
    )
    parser.add_argument(
        "--prwl",
        type=int,
        default=PAPER_CONFIG.passive_random_walk_length,
        help="passive random walk length (the paper's 3)",
    )
    parser.add_argument(
        "--shuffle-interval",
        type=float,
        default=PAPER_CONFIG.shuffle_interval,
        help="seconds between shuffles (10)",
    )
    parser.add_argument(
        "--promotion-interval",
        type=float,
        default=PAPER_CONFIG.promotion_interval,
        help="seconds between attempts to fill the active view (1)",
    )
    parser.add_argument(
        "--join-interval",
        type=float,
        default=0.001,
        help="virtual seconds between two joins while building (0.001)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=5.0,
        help="one-way base latency in ms; a lognormal jitter of median 2 ms "
        "is added (5)",
    )
    parser.add_argument(
        "--digest",
        action="store_true",
        help="keep the BLAKE2b digest of the whole trace and print it (slower)",
    )


def _config(args: argparse.Namespace) -> HyParViewConfig:
    return HyParViewConfig(
        active_view_size_max=args.active,
        passive_view_size_max=args.passive,
        active_random_walk_length=args.arwl,
        passive_random_walk_length=args.prwl,
        shuffle_interval=args.shuffle_interval,
        promotion_interval=args.promotion_interval,
    )


def _network(args: argparse.Namespace) -> NetworkConfig:
    return NetworkConfig(latency=Latency(base=args.latency / 1000.0))


def add_subcommands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``hyparview`` and ``plumtree`` on *subparsers* (``partisan sim``).

    Each sets ``run``: call ``args.run(args)`` for the exit status.
    """
    hyparview = subparsers.add_parser(
        "hyparview",
        help="HyParView cluster: reliability after a massive failure",
        description=(
            "Build a HyParView cluster, crash a share of its nodes at once, and "
            "print the share of live nodes a flood over the active views "
            "reaches, right after the failure and after each healing round."
        ),
    )
    _add_cluster_arguments(hyparview, nodes=10_000)
    hyparview.add_argument(
        "--fail",
        type=parse_shares,
        default=(0.5,),
        help="share(s) of nodes to crash: 0.5, 0.1,0.5,0.9 or 0.1:0.9:0.1 (0.5)",
    )
    hyparview.add_argument(
        "--rounds", type=int, default=5, help="healing rounds to measure (5)"
    )
    hyparview.add_argument(
        "--round",
        type=float,
        default=None,
        help="virtual seconds per healing round (the shuffle interval)",
    )
    hyparview.add_argument(
        "--floods",
        type=_positive_int,
        default=20,
        help="floods per measurement (20)",
    )
    hyparview.set_defaults(run=run_hyparview)

    plumtree = subparsers.add_parser(
        "plumtree",
        help="Plumtree against flooding over HyParView: reliability, RMR, hops",
        description=(
            "Build a HyParView cluster with a Plumtree broadcast core and a "
            "flooding one on every node, optionally crash a share of it, then "
            "broadcast messages with each and print reliability, relative "
            "message redundancy (RMR) and last-delivery hop."
        ),
    )
    _add_cluster_arguments(plumtree, nodes=1_000)
    plumtree.add_argument(
        "--fail",
        type=float,
        default=0.0,
        help="share of nodes to crash before broadcasting (0)",
    )
    plumtree.add_argument(
        "--messages",
        type=_positive_int,
        default=10,
        help="messages broadcast by each protocol (10)",
    )
    plumtree.add_argument(
        "--message-interval",
        type=float,
        default=1.0,
        help="virtual seconds between two broadcasts (1)",
    )
    plumtree.set_defaults(run=run_plumtree)


def run_hyparview(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run the ``hyparview`` command; return the exit status."""
    stream = out if out is not None else sys.stdout
    experiment = FailureExperiment(
        nodes=args.nodes,
        fails=tuple(args.fail),
        seed=args.seed,
        rounds=args.rounds,
        round_interval=args.round,
        floods=args.floods,
        join_interval=args.join_interval,
        config=_config(args),
        network=_network(args),
        trace=args.digest,
    )
    config = experiment.config
    stream.write(
        f"HyParView, {experiment.nodes:,} nodes, seed {experiment.seed}: active "
        f"{config.active_view_size_max}, passive {config.passive_view_size_max}, "
        f"ARWL {config.active_random_walk_length}, "
        f"PRWL {config.passive_random_walk_length}\n"
    )
    stream.flush()
    report = run_failure_experiment(experiment, wall_clock=time.perf_counter)
    _write_failure_report(report, stream)
    return 0


def _write_failure_report(report: FailureReport, stream: TextIO) -> None:
    experiment = report.experiment
    build = report.build_statistics
    interval = (
        experiment.round_interval
        if experiment.round_interval is not None
        else experiment.config.shuffle_interval
    )
    stream.write(
        f"built in {report.build_seconds:.1f} virtual s "
        f"({'settled' if report.settled else 'NOT settled'}): "
        f"{build.core_input_count:,} node-events, "
        f"{report.build_wall_seconds:.1f} s wall\n\n"
    )
    stream.write(
        "reliability: share of live nodes reached by a flood over the active "
        f"views (mean of {experiment.floods}), right after the failure and "
        f"after each round of {interval:g} virtual s\n"
    )
    header = ["fail", "crashed", "live", "after"] + [
        f"round {r}" for r in range(1, experiment.rounds + 1)
    ]
    rows = [
        [
            f"{result.fail:.0%}",
            f"{result.crashed_count:,}",
            f"{result.live_count:,}",
            *(f"{value:.1%}" for value in result.reliability),
        ]
        for result in report.results
    ]
    _write_table(stream, header, rows)
    wall = report.wall_seconds
    rate = report.core_input_count / wall if wall > 0 else 0.0
    stream.write(
        f"\n{report.core_input_count:,} simulated node-events "
        f"({report.event_count:,} queue events) in {wall:.1f} s wall: "
        f"{rate:,.0f} node-events/s\n"
    )
    if experiment.trace:
        for result in report.results:
            stream.write(f"trace digest (fail {result.fail:.0%}): {result.digest}\n")


def run_plumtree(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run the ``plumtree`` command; return the exit status."""
    stream = out if out is not None else sys.stdout
    experiment = BroadcastExperiment(
        nodes=args.nodes,
        fail=args.fail,
        seed=args.seed,
        messages=args.messages,
        message_interval=args.message_interval,
        join_interval=args.join_interval,
        config=_config(args),
        network=_network(args),
        trace=args.digest,
    )
    stream.write(
        f"Plumtree vs flooding over HyParView, {experiment.nodes:,} nodes, "
        f"seed {experiment.seed}, {experiment.fail:.0%} crashed, "
        f"{experiment.messages} messages each\n"
    )
    stream.flush()
    started = time.perf_counter()
    report = run_broadcast_experiment(experiment)
    wall = time.perf_counter() - started
    header = ["protocol", "reliability", "RMR", "last hop", "payloads", "control"]
    stream.write(
        "\nmeans over the messages (the first ones build the tree); "
        "RMR = payloads received / (deliveries - 1) - 1\n"
    )
    _write_table(stream, header, _broadcast_rows(report.results))
    if report.steady:
        stream.write("\nafter the first message (tree formed):\n")
        _write_table(stream, header, _broadcast_rows(report.steady))
    rate = report.core_input_count / wall if wall > 0 else 0.0
    stream.write(
        f"\n{report.core_input_count:,} simulated node-events in {wall:.1f} s "
        f"wall: {rate:,.0f} node-events/s\n"
    )
    if experiment.trace:
        stream.write(f"trace digest: {report.digest}\n")
    return 0


def _broadcast_rows(results: Sequence[BroadcastResult]) -> list[list[str]]:
    return [
        [
            result.protocol,
            f"{result.reliability:.2%}",
            f"{result.rmr:.3f}",
            f"{result.last_hop:.1f}",
            f"{result.payload_count:,}",
            "-" if result.control_count is None else f"{result.control_count:,}",
        ]
        for result in results
    ]


def _write_table(stream: TextIO, header: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        return "  ".join([first, *rest]).rstrip()

    stream.write(line(header) + "\n")
    stream.write("  ".join("-" * width for width in widths) + "\n")
    for row in rows:
        stream.write(line(row) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.sim``: the ``partisan sim`` commands on their own."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime.sim", description="the deterministic simulator"
    )
    add_subcommands(parser.add_subparsers(dest="sim_command", required=True))
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status
