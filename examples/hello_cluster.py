"""hello_cluster: three nodes in three OS processes greet each other (``make demo``).

Run it from the repository root::

    python -m examples.hello_cluster

What it shows: three nodes started with the ``partisan node`` command line, on
127.0.0.1, sharing a cluster secret passed through the environment (a fresh random
one per run, never on a command line). Each is told of the other two, each
connects to both (a mutual HMAC handshake on every channel), then a process on
every node sends ``["hello", self(), text]`` to the process registered as
``greeter`` on each other node, which answers ``["hi", its node, text]`` to the
sender's pid. It prints who connected to whom, each greeting and its reply with
the round-trip time, each node's message counters, and stops the three cleanly.

How: each node runs with ``--control-stdio --demo-greeter`` and is driven by JSON
lines over its pipes through :func:`runtime.cli.open_node_process`, the same
harness the end-to-end tests use. Leaving it stops every node process on any
outcome: success, failure, or Ctrl-C.

Exit code 0 when every step happened and every node exited with 0; otherwise 1
and a message saying which step failed (with the failing node's last log lines).
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Final

import trio

from runtime.cli import NodeProcess, NodeProcessError, open_node_process

NODE_NAMES: Final = ("n1@127.0.0.1", "n2@127.0.0.1", "n3@127.0.0.1")
# The demo normally takes one or two seconds; these bound a stuck machine or a
# broken build so `make demo` always ends with a verdict.
STEP_TIMEOUT: Final = 15.0
DEMO_TIMEOUT: Final = 60.0
EXIT_INTERRUPTED: Final = 130

Say = Callable[[str], None]


class DemoFailed(Exception):
    """A step of the demo did not give what it should."""


def _say(line: str) -> None:
    # Flushed per line, so a reader on a pipe (the e2e test) sees progress live.
    print(line, flush=True)


def _others(nodes: list[NodeProcess], node: NodeProcess) -> list[NodeProcess]:
    return [other for other in nodes if other is not node]


async def _start(stack: AsyncExitStack, say: Say) -> list[NodeProcess]:
    secret = secrets.token_urlsafe(32)
    nodes = [
        await stack.enter_async_context(
            open_node_process(name, secret=secret, args=["--demo-greeter"])
        )
        for name in NODE_NAMES
    ]
    say(f"started {len(nodes)} node processes (partisan node --demo-greeter):")
    for node in nodes:
        host, port = await node.listening(timeout=STEP_TIMEOUT)
        say(f"  {node.name:<14} OS pid {node.pid:<8} listening on {host}:{port}")
    return nodes


async def _connect(nodes: list[NodeProcess], say: Say) -> None:
    say("\nconnecting (each node dials the other two, on each of its channels):")
    addresses = {}
    for node in nodes:
        addresses[node.name] = await node.listening(timeout=STEP_TIMEOUT)
    started = trio.current_time()
    for node in nodes:
        for other in _others(nodes, node):
            host, port = addresses[other.name]
            await node.request(
                {"cmd": "add_peer", "name": other.name, "host": host, "port": port}
            )
    elapsed: dict[tuple[str, str], float] = {}

    async def wait_one(node: NodeProcess, other: NodeProcess) -> None:
        await node.request(
            {"cmd": "wait_connected", "name": other.name, "timeout": STEP_TIMEOUT},
            timeout=STEP_TIMEOUT + 5,
        )
        elapsed[node.name, other.name] = trio.current_time() - started

    async with trio.open_nursery() as nursery:
        for node in nodes:
            for other in _others(nodes, node):
                nursery.start_soon(wait_one, node, other)
    for node in nodes:
        for other in _others(nodes, node):
            seconds = elapsed[node.name, other.name]
            say(f"  {node.name} -> {other.name}: connected after {seconds:.3f} s")


def _greeting_from(sender: str) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        return event.get("event") == "greeting" and event.get("from") == sender

    return match


async def _greet(nodes: list[NodeProcess], say: Say) -> int:
    say(
        '\ngreetings: a process on each node sends ["hello", self(), text] to'
        ' ("greeter", other node),\n'
        'and that greeter answers ["hi", its node, text] to the sender\'s pid:'
    )
    count = 0
    for node in nodes:
        for other in _others(nodes, node):
            text = f"hello from {node.name}"
            reply = await node.request(
                {"cmd": "greet", "name": other.name, "text": text, "timeout": 5.0}
            )
            answer = reply.get("reply")
            if answer != ["hi", other.name, text]:
                raise DemoFailed(
                    f"{node.name} greeted {other.name} and got {answer!r},"
                    f" not {['hi', other.name, text]!r}"
                )
            say(
                f"  {node.name} -> greeter on {other.name}: reply {json.dumps(answer)}"
                f" in {float(reply['rtt_ms']):.2f} ms"
            )
            count += 1
    say("\nwhat each greeter received (its own JSON events):")
    for node in nodes:
        senders = []
        for other in _others(nodes, node):
            event = await node.wait_event(
                _greeting_from(other.name),
                timeout=STEP_TIMEOUT,
            )
            senders.append(f'{event["from"]} ("{event["text"]}")')
        say(f"  greeter on {node.name}: greeted by {', '.join(senders)}")
    return count


async def _statistics(nodes: list[NodeProcess], say: Say) -> None:
    say("\nstatistics (from each node's `stats` command):")
    say(
        f"  {'node':<14} {'sent remote':>11} {'received remote':>15}"
        f" {'handshake failures':>18}  connected to"
    )
    for node in nodes:
        stats = await node.stats()
        if len(stats["connected"]) != len(nodes) - 1:
            raise DemoFailed(f"{node.name} is connected to {stats['connected']} only")
        say(
            f"  {node.name:<14} {stats['sent_remote_count']:>11}"
            f" {stats['received_remote_count']:>15}"
            f" {stats['handshake_failures_count']:>18}"
            f"  {', '.join(stats['connected'])}"
        )


async def _stop(nodes: list[NodeProcess], say: Say) -> None:
    say("\nstopping (each node flushes, ends its processes, closes its connections):")
    codes: dict[str, int] = {}

    async def stop_one(node: NodeProcess) -> None:
        codes[node.name] = await node.stop(timeout=STEP_TIMEOUT)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(stop_one, node)
    say("  " + ", ".join(f"{name} exited with {codes[name]}" for name in NODE_NAMES))
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        raise DemoFailed(f"nodes did not stop cleanly: {failed}")


async def run_demo(say: Say) -> None:
    """The whole demo; raises DemoFailed or NodeProcessError on a failed step."""
    started = trio.current_time()
    say("hello_cluster: three partisan nodes on 127.0.0.1, one OS process each\n")
    with trio.fail_after(DEMO_TIMEOUT):
        async with AsyncExitStack() as stack:
            nodes = await _start(stack, say)
            await _connect(nodes, say)
            greetings = await _greet(nodes, say)
            await _statistics(nodes, say)
            await _stop(nodes, say)
    say(
        f"\nOK: {len(nodes)} nodes fully connected, {greetings} greetings answered,"
        f" all stopped cleanly, in {trio.current_time() - started:.2f} s"
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found += _leaves(exc)
        else:
            found.append(exc)
    return found


def main() -> int:
    """Run the demo; the process exit code."""
    failures: list[str] = []
    interrupted = False
    try:
        trio.run(run_demo, _say)
    except* KeyboardInterrupt:
        interrupted = True
    except* trio.TooSlowError:
        failures.append(f"the demo did not finish within {DEMO_TIMEOUT:.0f} s")
    except* (DemoFailed, NodeProcessError) as group:
        failures += [str(exc) for exc in _leaves(group)]
    if interrupted:
        print("\ninterrupted: every node process was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    if failures:
        for failure in failures:
            print(f"\nhello_cluster FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
