"""Membership at scale: the simulator's HyParView failure run (later, real clusters).

``python -m benchmarks.membership`` runs the sections chosen with ``--section``
(all of them by default), prints a table per section and writes
benchmarks/results/membership.json with the figures, the package versions and
the machine (core count, load) beside them.

Sections
--------
``sim``
    The deterministic simulator (:mod:`runtime.sim`) builds a 10,000-node
    HyParView cluster with the paper's parameters, crashes half of it at one
    instant, and follows the healing for five rounds of the shuffle interval
    (:func:`runtime.sim.experiment.run_failure_experiment`). Figures: wall and
    CPU time of the whole run, simulated node-events (inputs fed to cores) per
    wall second, and broadcast reliability (share of live nodes a flood over the
    active views reaches) right after the failure, after the first round and
    after the last. The target (shared/TARGETS.md): under 60 s on one core.
    The simulation is deterministic, so repetitions differ only in time; the
    reliability figures are the same in every one.

``cluster``
    Real nodes over TCP on 127.0.0.1 (:mod:`benchmarks.membership_cluster`):
    seconds for N nodes started in one OS process to converge (full mesh: all
    list all and see all up; HyParView: symmetric, connected active views),
    and the seconds until two node processes report a third, killed with
    SIGKILL, down. Full mesh stops at 25 nodes in one process: N nodes hold
    N(N-1) connections per channel in each direction, two descriptors each in
    one process, and 50 nodes' 4 channels would pass the 20,000-descriptor
    limit of this machine.

``SECTIONS`` maps a section's name to the function that measures it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, Final

from benchmarks import report
from runtime.sim.experiment import FailureExperiment, run_failure_experiment

__all__ = ["SECTIONS", "TABLE_COLUMNS", "main", "measure_simulator", "simulator_rows"]

TABLE_COLUMNS: Final = ["figure", "unit", "median", "spread", "target"]
"""Columns of every section's table."""

SIM_TARGET_SECONDS: Final = 60.0
"""shared/TARGETS.md: the 10,000-node HyParView failure run on one core."""


def measure_simulator(
    *,
    nodes: int = 10_000,
    fail: float = 0.5,
    seed: int = 7,
    rounds: int = 5,
    repetitions: int = 1,
) -> dict[str, Any]:
    """Run the simulator's failure experiment *repetitions* times; return figures.

    Returns:
        ``{"parameters": ..., "figures": {name: summary}, "reliability": [...],
        "settled": bool}``: each figure summarised over the repetitions by
        :func:`benchmarks.report.summarize`, the reliability series (after the
        failure, then per round) of the last repetition.
    """
    experiment = FailureExperiment(nodes=nodes, fails=(fail,), seed=seed, rounds=rounds)
    figures: dict[str, list[float]] = {
        "wall_s": [],
        "cpu_s": [],
        "build_wall_s": [],
        "node_events": [],
        "node_events_per_s": [],
    }
    reliability: tuple[float, ...] = ()
    settled = False
    virtual_s = 0.0
    for _ in range(repetitions):
        cpu_started = time.process_time()
        result = run_failure_experiment(experiment, wall_clock=time.perf_counter)
        figures["cpu_s"].append(time.process_time() - cpu_started)
        figures["wall_s"].append(result.wall_seconds)
        figures["build_wall_s"].append(result.build_wall_seconds)
        figures["node_events"].append(float(result.core_input_count))
        figures["node_events_per_s"].append(
            result.core_input_count / result.wall_seconds
        )
        reliability = result.results[0].reliability
        settled = result.settled
        virtual_s = result.results[0].statistics.now
    return {
        "parameters": {
            "nodes": nodes,
            "fail": fail,
            "seed": seed,
            "rounds": rounds,
            "round_interval_s": experiment.config.shuffle_interval,
            "active_view_size_max": experiment.config.active_view_size_max,
            "passive_view_size_max": experiment.config.passive_view_size_max,
            "repetitions": repetitions,
        },
        "figures": {name: report.summarize(values) for name, values in figures.items()},
        "reliability": list(reliability),
        "settled": settled,
        "virtual_s": virtual_s,
    }


def simulator_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``sim`` section's table rows from :func:`measure_simulator`'s result."""
    figures = result["figures"]
    nodes = result["parameters"]["nodes"]
    reliability = result["reliability"]

    def timed(name: str, label: str, unit: str, target: str = "") -> dict[str, Any]:
        summary = figures[name]
        return {
            "figure": label,
            "unit": unit,
            "median": summary["median"],
            "spread": f"{summary['spread']:.0%}",
            "target": target,
        }

    def share(label: str, value: float) -> dict[str, Any]:
        return {
            "figure": label,
            "unit": "%",
            "median": 100.0 * value,
            "spread": "",
            "target": "",
        }

    target = f"< {SIM_TARGET_SECONDS:.0f} s" if nodes >= 10_000 else ""
    return [
        timed("wall_s", f"{nodes:,}-node failure run, wall", "s", target),
        timed("cpu_s", "same run, CPU", "s"),
        timed("build_wall_s", "of which build and settle, wall", "s"),
        timed("node_events", "simulated node-events", "events"),
        timed("node_events_per_s", "simulated node-events per wall second", "/s"),
        share("reliability right after the failure", reliability[0]),
        share("reliability after round 1", reliability[1]),
        share(f"reliability after round {len(reliability) - 1}", reliability[-1]),
    ]


def _sim_section(args: argparse.Namespace) -> dict[str, Any]:
    nodes = 1_000 if args.quick else args.nodes
    result = measure_simulator(
        nodes=nodes,
        fail=args.fail,
        seed=args.seed,
        rounds=args.rounds,
        repetitions=args.repetitions,
    )
    rows = simulator_rows(result)
    print(
        f"\nsimulator: HyParView, {nodes:,} nodes, {args.fail:.0%} crashed at "
        f"once, {args.rounds} rounds of "
        f"{result['parameters']['round_interval_s']:g} virtual s "
        f"({'settled' if result['settled'] else 'NOT settled'} before the failure)"
    )
    report.print_table(rows, TABLE_COLUMNS)
    return {"result": result, "table": rows}


def _cluster_section(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import trio

    from benchmarks.membership_cluster import measure_convergence, measure_detection

    logging.disable(logging.WARNING)  # plaintext warnings of a hundred nodes
    sizes = {
        "full_mesh": (5,) if args.quick else (10, 25),
        "hyparview": (10,) if args.quick else (10, 50, 100),
    }
    rows: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    for strategy, counts in sizes.items():
        for count in counts:
            samples = [
                trio.run(measure_convergence, strategy, count, seed)
                for seed in range(1, args.repetitions + 1)
            ]
            summary = report.summarize(samples)
            figures[f"{strategy}_{count}_converge_s"] = summary
            rows.append(
                {
                    "figure": f"{strategy}, {count} nodes: converged",
                    "unit": "s",
                    "median": summary["median"],
                    "spread": f"{summary['spread']:.0%}",
                    "target": "",
                }
            )
    detection = [trio.run(measure_detection)["detected_s"] for _ in range(3)]
    summary = report.summarize(detection)
    figures["kill_detected_s"] = summary
    rows.append(
        {
            "figure": "SIGKILLed node reported down by both others",
            "unit": "s",
            "median": summary["median"],
            "spread": f"{summary['spread']:.0%}",
            "target": "< heartbeat timeout (5 s)",
        }
    )
    print("\nreal cluster over TCP on 127.0.0.1:")
    report.print_table(rows, TABLE_COLUMNS)
    return {"figures": figures, "table": rows}


SECTIONS: Final[dict[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "sim": _sim_section,
    "cluster": _cluster_section,
}
"""Section name -> the function that measures it, prints its table and returns
what goes into the JSON under that name."""


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.membership``: run the chosen sections."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.membership")
    parser.add_argument(
        "--section",
        action="append",
        choices=sorted(SECTIONS),
        help="a section to run (repeatable; all by default)",
    )
    parser.add_argument("-r", "--repetitions", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--fail", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sections = args.section or sorted(SECTIONS)
    payload: dict[str, Any] = {
        "machine": report.machine_info(),
        "repetitions": args.repetitions,
        "quick": args.quick,
    }
    for name in sections:
        payload[name] = SECTIONS[name](args)
    path = report.write_json("membership", payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
