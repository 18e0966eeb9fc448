"""The ``partisan`` command line: run one node from flags or a TOML file.

Theory of operation
-------------------
``partisan node`` builds a :class:`~runtime.config.NodeConfig` from three layers,
later ones winning: built-in defaults, a TOML file (``--config``), then flags. The
cluster secret is the one input that never comes from either: it is read from an
environment variable (``--secret-env``, default ``PARTISAN_SECRET``), because a
command line shows in ``ps`` to every user of the machine and a config file tends
to end up in a repository. A missing or short secret refuses to start (exit 2).

The node then runs until SIGINT or SIGTERM, and stops cleanly: queued frames are
flushed (briefly), processes end, connections close, exit code 0. Logs go to
stderr as one ``key=value`` line per record, with the node's name on every line,
so the logs of a cluster can be merged and grepped.

Control protocol
----------------
With ``--control-stdio`` a test harness (or the demo) drives the node through its
pipes: one JSON object per line in each direction. Stdout carries only these
events (logs stay on stderr). Every reply echoes the command's ``id`` if it had one.

=================================================  ==================================
command (stdin)                                    event(s) (stdout)
=================================================  ==================================
(start)                                            ``listening`` name, host, port
``add_peer`` name, host, port                      ``peer_added`` name
``wait_connected`` name, timeout                   ``connected`` name, or ``error``
``stats``                                          ``stats`` (the node's statistics)
``greet`` name, text?, timeout?                    ``greeting_reply`` or ``error``
``stop`` (or EOF on stdin, SIGINT, SIGTERM)        ``stopping``; ``stopped`` at exit
(a greeting reaches ``--demo-greeter``)            ``greeting`` from, text
=================================================  ==================================

The other end of the protocol lives here as well (:func:`open_node_process`,
:class:`NodeProcess`), so the demo and the end-to-end tests drive real node
processes in one way, and the two ends cannot drift apart.

Extension point
---------------
A package above the runtime (``plumdb``'s command, which the runtime must not
import) runs a node the same way and adds its own service and commands:
:func:`add_node_arguments` puts the node flags on its parser,
:func:`node_options` merges them with the TOML file (whose extra tables it
names are passed through in ``options.extra``), :func:`read_secret` and
:func:`node_config` build the configuration, and :func:`serve` runs the node
with an :data:`Extension`: an async context manager factory, entered once the
node listens and left before it stops, that yields the extension's control
commands (:data:`CommandHandler`; errors raised as :class:`CommandError`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import IO, Any, Final, TypeAlias, TypeVar, final

import attrs
import trio

from runtime import api
from runtime.config import (
    STRATEGIES,
    ChannelSpec,
    FailureDetectorConfig,
    MembershipConfig,
    NodeConfig,
    NodeSpec,
    TLSConfig,
)
from runtime.errors import ReceiveTimeout
from runtime.ref import BadReference, Name, Pid, validate_node_name
from runtime.shell.connection import SendStatus
from runtime.shell.node import Node, open_node
from runtime.sim.cli import add_subcommands as add_sim_subcommands

__all__ = [
    "CONTROL_LINE_BYTES_MAX",
    "DEFAULT_SECRET_ENV",
    "CommandError",
    "CommandHandler",
    "ConfigError",
    "Emit",
    "Extension",
    "NodeOptions",
    "NodeProcess",
    "NodeProcessError",
    "add_node_arguments",
    "command_field",
    "main",
    "node_config",
    "node_options",
    "open_node_process",
    "parse_address",
    "read_secret",
    "serve",
    "setup_logging",
    "start_node_process",
    "statistics_summary",
]

log = logging.getLogger("runtime.cli")

DEFAULT_SECRET_ENV: Final = "PARTISAN_SECRET"
# The handshake's HMAC keys must be at least this long (runtime.core.handshake).
SECRET_BYTES_MIN: Final = 16
# A control line is a small JSON object; 64 KiB holds any command or a stats
# reply of a node with hundreds of peers, and bounds what a runaway writer costs.
CONTROL_LINE_BYTES_MAX: Final = 64 * 1024
# A wait_connected or greet without a timeout waits this long, and none may ask
# for more: the control protocol serves harnesses, which must not hang.
CONTROL_TIMEOUT_DEFAULT: Final = 10.0
CONTROL_TIMEOUT_MAX: Final = 300.0
# Greeting texts are shown in events and logs; longer ones are cut to this.
GREETING_TEXT_SHOWN_MAX: Final = 200
GREETER_NAME: Final = "greeter"
# Exit codes: 2 for a configuration the node refuses (as argparse), 1 for a
# failure while running (the listen address cannot be bound).
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2

_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
# TOML keys of [limits], and the NodeConfig field each one sets.
_LIMITS: Final = {
    "frame_bytes_max": int,
    "handshake_timeout": float,
    "write_timeout": float,
    "reconnect_backoff_min": float,
    "reconnect_backoff_max": float,
    "mailbox_length_max": int,
}
# Slot counters summed per peer in the stats reply.
_SLOT_COUNTS: Final = (
    "connects_count",
    "frames_sent_count",
    "dropped_on_disconnect_count",
)
_TOP_LEVEL_KEYS: Final = frozenset(
    {
        "name",
        "listen",
        "secret_env",
        "log_level",
        "peers",
        "tls",
        "limits",
        "channels",
        "membership",
    }
)
# TOML keys of [membership], with their types.
_MEMBERSHIP: Final = {
    "strategy": str,
    "role": str,
    "heartbeat_interval": float,
    "heartbeat_timeout": float,
    "join_retry_interval": float,
}


class ConfigError(Exception):
    """The node's configuration is refused; the message says what to change."""


# ------------------------------------------------------------------ configuration


@final
@attrs.frozen(kw_only=True)
class NodeOptions:
    """Everything ``partisan node`` was asked to do, before the secret is read.

    ``extra`` holds the TOML tables an extension asked :func:`node_options`
    to pass through (table name -> its content, unchecked).
    """

    name: str
    listen: tuple[str, int]
    secret_env: str
    peers: dict[str, tuple[str, int]]
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    log_level: str
    limits: dict[str, float | int]
    channels: tuple[ChannelSpec, ...]
    control_stdio: bool
    demo_greeter: bool
    membership: dict[str, Any] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a (host, port) pair.

    Raises:
        ConfigError: not of that form, or the port is out of range.
    """
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port_text.isdigit():
        raise ConfigError(f"not a HOST:PORT address: {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return host, port


def _parse_peer(text: str) -> tuple[str, tuple[str, int]]:
    name, equals, address = text.partition("=")
    if not equals:
        raise ConfigError(f"a peer is NAME=HOST:PORT, not {text!r}")
    return _node_name(name), parse_address(address)


def _node_name(text: object) -> str:
    try:
        return validate_node_name(text)
    except BadReference as exc:
        raise ConfigError(str(exc)) from None


_T = TypeVar("_T")


def _typed(table: Mapping[str, object], key: str, kind: type[_T], where: str) -> _T:
    value = table[key]
    # TOML integers are welcome where seconds (floats) are expected.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key} must be a {kind.__name__}, not {value!r}")
    return value


def _load_toml(path: str, extra_tables: Collection[str] = ()) -> dict[str, Any]:
    """The file's settings, with relative TLS paths made relative to the file.

    Tables named in *extra_tables* are allowed and returned under ``extra``.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = _TOP_LEVEL_KEYS | set(extra_tables)
    unknown = set(data) - known
    if "secret" in unknown:
        raise ConfigError(
            f"{path}: a secret is never read from a file; name the environment"
            " variable that holds it with secret_env"
        )
    if unknown:
        raise ConfigError(
            f"{path}: unknown keys {sorted(unknown)} (known: {sorted(known)})"
        )
    settings: dict[str, Any] = {}
    for table in extra_tables:
        if table in data and not isinstance(data[table], dict):
            raise ConfigError(f"{path}: {table} is a [{table}] table")
    settings["extra"] = {table: data[table] for table in extra_tables if table in data}
    for key in ("name", "listen", "secret_env", "log_level"):
        if key in data:
            settings[key] = _typed(data, key, str, "")
    if "listen" in settings:
        settings["listen"] = parse_address(settings["listen"])
    peers = data.get("peers", {})
    if not isinstance(peers, dict):
        raise ConfigError(f'{path}: [peers] is a table of "NAME" = "HOST:PORT"')
    settings["peers"] = {
        _node_name(name): parse_address(_typed(peers, name, str, "peers."))
        for name in peers
    }
    tls = data.get("tls", {})
    if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key"}:
        raise ConfigError(f"{path}: [tls] holds exactly ca, cert and key")
    base = os.path.dirname(os.path.abspath(path))
    for key in ("ca", "cert", "key"):
        if key in tls:
            settings[f"tls_{key}"] = os.path.join(base, _typed(tls, key, str, "tls."))
    limits = data.get("limits", {})
    if not isinstance(limits, dict) or set(limits) - set(_LIMITS):
        raise ConfigError(f"{path}: [limits] may set only {sorted(_LIMITS)}")
    settings["limits"] = {
        key: _typed(limits, key, kind, "limits.")
        for key, kind in _LIMITS.items()
        if key in limits
    }
    membership = data.get("membership", {})
    if not isinstance(membership, dict) or set(membership) - set(_MEMBERSHIP):
        raise ConfigError(f"{path}: [membership] may set only {sorted(_MEMBERSHIP)}")
    settings["membership"] = {
        key: _typed(membership, key, kind, "membership.")
        for key, kind in _MEMBERSHIP.items()
        if key in membership
    }
    channels = data.get("channels", [])
    if not isinstance(channels, list):
        raise ConfigError(f"{path}: channels are [[channels]] tables")
    settings["channels"] = tuple(_channel(table, path) for table in channels)
    return settings


def _channel(table: object, path: str) -> ChannelSpec:
    fields = {"name", "parallelism", "monotonic", "send_queue_bytes_max"}
    if not isinstance(table, dict) or "name" not in table or set(table) - fields:
        raise ConfigError(f"{path}: a [[channels]] table has a name and {fields}")
    kinds = {
        "name": str,
        "parallelism": int,
        "monotonic": bool,
        "send_queue_bytes_max": int,
    }
    values: dict[str, Any] = {
        key: _typed(table, key, kinds[key], "channels.") for key in table
    }
    try:
        return ChannelSpec(**values)
    except ValueError as exc:
        raise ConfigError(f"{path}: channel {values['name']!r}: {exc}") from None


def node_options(
    args: argparse.Namespace, *, extra_tables: Collection[str] = ()
) -> NodeOptions:
    """Merge the TOML file (if any) and the node flags; flags win.

    Args:
        args: parsed by a parser with :func:`add_node_arguments`.
        extra_tables: TOML tables an extension reads (``options.extra``).

    Raises:
        ConfigError: a setting is refused; the message says which.
    """
    settings: dict[str, Any] = (
        _load_toml(args.config, extra_tables) if args.config else {}
    )
    if args.name is not None:
        settings["name"] = args.name
    if args.listen is not None:
        settings["listen"] = parse_address(args.listen)
    if args.secret_env is not None:
        settings["secret_env"] = args.secret_env
    if args.log_level is not None:
        settings["log_level"] = args.log_level
    for key in ("ca", "cert", "key"):
        value = getattr(args, f"tls_{key}")
        if value is not None:
            settings[f"tls_{key}"] = value
    membership = dict(settings.get("membership", {}))
    for key in _MEMBERSHIP:
        value = getattr(args, key, None)
        if value is not None:
            membership[key] = value
    peers = dict(settings.get("peers", {}))
    for text in args.peer:
        name, address = _parse_peer(text)
        peers[name] = address
    if "name" not in settings:
        raise ConfigError("a node needs a name: --name NAME@HOST (or name = in TOML)")
    log_level = settings.get("log_level", "info").lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"log level is one of {_LOG_LEVELS}, not {log_level!r}")
    return NodeOptions(
        name=_node_name(settings["name"]),
        listen=settings.get("listen", ("127.0.0.1", 0)),
        secret_env=settings.get("secret_env", DEFAULT_SECRET_ENV),
        peers=peers,
        tls_ca=settings.get("tls_ca"),
        tls_cert=settings.get("tls_cert"),
        tls_key=settings.get("tls_key"),
        log_level=log_level,
        limits=settings.get("limits", {}),
        channels=settings.get("channels", ()),
        control_stdio=args.control_stdio,
        demo_greeter=args.demo_greeter,
        membership=membership,
        extra=settings.get("extra", {}),
    )


def read_secret(variable: str, environ: Mapping[str, str]) -> bytes:
    """The cluster secret from the environment.

    Raises:
        ConfigError: unset, or shorter than ``SECRET_BYTES_MIN`` bytes.
    """
    value = environ.get(variable)
    hint = (
        f"set it to a random string of at least {SECRET_BYTES_MIN} bytes, the same"
        " on every node of the cluster, e.g.\n"
        f"  export {variable}=$(python3 -c 'import secrets;"
        " print(secrets.token_urlsafe(32))')\n"
        "(the secret is never taken on the command line, where ps would show it)"
    )
    if not value:
        raise ConfigError(
            f"the cluster secret is missing: environment variable {variable} is"
            f" not set; {hint}"
        )
    secret = value.encode()
    if len(secret) < SECRET_BYTES_MIN:
        raise ConfigError(
            f"the cluster secret in {variable} is {len(secret)} bytes, shorter than"
            f" {SECRET_BYTES_MIN}; {hint}"
        )
    return secret


def node_config(options: NodeOptions, secret: bytes) -> NodeConfig:
    """The :class:`NodeConfig` of *options* with *secret*.

    Raises:
        ConfigError: the settings do not make a valid configuration.
    """
    tls_files = (options.tls_ca, options.tls_cert, options.tls_key)
    tls: TLSConfig | None = None
    if any(path is not None for path in tls_files):
        if (
            options.tls_ca is None
            or options.tls_cert is None
            or options.tls_key is None
        ):
            raise ConfigError("TLS needs all three of --tls-ca, --tls-cert, --tls-key")
        try:
            tls = TLSConfig.from_files(
                ca_file=options.tls_ca,
                cert_file=options.tls_cert,
                key_file=options.tls_key,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS files: {exc}") from None
    peers = tuple(
        NodeSpec(name=name, addresses=(address,), channels=options.channels)
        for name, address in sorted(options.peers.items())
    )
    settings = dict(options.membership)
    role = settings.pop("role", "peer")
    try:
        detector = FailureDetectorConfig(
            heartbeat_interval=settings.pop("heartbeat_interval", 1.0),
            heartbeat_timeout=settings.pop("heartbeat_timeout", 5.0),
        )
        membership = MembershipConfig(failure_detector=detector, **settings)
        return NodeConfig(
            name=options.name,
            listen=options.listen,
            secret=secret,
            channels=options.channels,
            peers=peers,
            tls=tls,
            membership=membership,
            role=role,
            **options.limits,  # type: ignore[arg-type]
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


# ------------------------------------------------------------------------ logging


def _quote(value: str) -> str:
    """A value as logfmt writes it: bare if it can be, else a JSON string."""
    if value and not any(c in value for c in ' "=\\\n\r\t'):
        return value
    return json.dumps(value)


@final
class _KeyValueFormatter(logging.Formatter):
    """One line per record: ``ts=... level=... node=... logger=... msg="..."``.

    One line (tracebacks are escaped into the ``exc`` field) so that merged
    logs of many nodes stay greppable and machine-parsable.
    """

    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = [
            ("ts", f"{stamp}.{int(record.msecs):03d}Z"),
            ("level", record.levelname.lower()),
            ("node", self._node),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        if record.exc_info:
            fields.append(("exc", self.formatException(record.exc_info)))
        return " ".join(f"{key}={_quote(value)}" for key, value in fields)


def setup_logging(node: str, level: str) -> None:
    """Log records to stderr, one ``key=value`` line each, naming *node*."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# ------------------------------------------------------------------ control plane


@final
class _Output:
    """JSON lines on stdout, flushed per line so a reader sees each at once.

    A closed stdout (the harness went away) must not crash the node: the
    first failure is logged and later events are dropped.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._broken = False

    def emit(self, event: Mapping[str, object]) -> None:
        if self._broken:
            return
        try:
            self._stream.write(json.dumps(event, default=str) + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._broken = True
            log.warning("stdout is gone, events are no longer written: %s", exc)


class _LineTooLong(Exception):
    pass


@final
class _LineReader:
    """Lines from a byte stream, each at most ``CONTROL_LINE_BYTES_MAX`` bytes.

    Error handling: an over-long line is discarded up to its newline and
    reported once by :class:`_LineTooLong`; the reader then goes on.
    """

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._discarding = False

    async def readline(self) -> bytes | None:
        """The next line without its newline, or ``None`` at end of stream."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                if self._discarding:
                    self._discarding = False
                    continue
                return line
            if len(self._buffer) > CONTROL_LINE_BYTES_MAX:
                self._buffer.clear()
                if not self._discarding:
                    self._discarding = True
                    raise _LineTooLong
            data = await self._stream.receive_some(CONTROL_LINE_BYTES_MAX)
            if not data:
                if self._buffer and not self._discarding:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None
            self._buffer += data


class CommandError(Exception):
    """A control command is refused; the node answers with an ``error`` event."""


CommandHandler: TypeAlias = Callable[[Mapping[str, object]], Mapping[str, object]]
"""An extension's control command: takes the command, returns the event to emit
(its ``id`` is added); raises :class:`CommandError` to answer an error. Runs in
the control loop, so it must not block."""

Emit: TypeAlias = Callable[[Mapping[str, object]], None]
"""Writes one event line on stdout (never blocks, never raises)."""

Extension: TypeAlias = Callable[
    [Node, Emit], AbstractAsyncContextManager[Mapping[str, CommandHandler]]
]
"""What :func:`serve` runs beside the node: ``extension(node, emit)`` is
entered once the node listens and left before it stops, and yields command
name -> handler; *emit* writes events of its own (from its tasks)."""


def command_field(
    command: Mapping[str, object], key: str, kind: type[_T], default: _T | None = None
) -> _T:
    """``command[key]`` checked to be a *kind* (*default* if absent).

    Raises:
        CommandError: absent without a default, or of another type.
    """
    value = command.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CommandError(f"{key!r} must be a {kind.__name__}")
    return value


def _timeout(command: Mapping[str, object]) -> float:
    timeout = command_field(command, "timeout", float, CONTROL_TIMEOUT_DEFAULT)
    if not 0 < timeout <= CONTROL_TIMEOUT_MAX:
        raise CommandError(f"timeout must be in (0, {CONTROL_TIMEOUT_MAX}] seconds")
    return timeout


def statistics_summary(node: Node) -> dict[str, object]:
    """The node's statistics as JSON-ready data, plus a per-peer view.

    ``connected`` lists the peers with a live connection; ``peers`` sums each
    peer's slots (connection state, connects, frames, last disconnect reason),
    which is what an operator asks first: "is it connected, and if not why".
    """
    stats = node.statistics()
    summary: dict[str, object] = attrs.asdict(stats)
    counts: dict[str, dict[str, int]] = {}
    reasons: dict[str, str | None] = {}
    for slot in stats.slots:
        count = counts.setdefault(slot.peer, dict.fromkeys(_SLOT_COUNTS, 0))
        for key in _SLOT_COUNTS:
            count[key] += getattr(slot, key)
        reasons.setdefault(slot.peer, None)
        if slot.last_disconnect_reason is not None:
            reasons[slot.peer] = slot.last_disconnect_reason
    peers = {
        peer: {
            "connected": node.is_connected(peer),
            "fully_connected": node.is_fully_connected(peer),
            **count,
            "last_disconnect_reason": reasons[peer],
        }
        for peer, count in counts.items()
    }
    summary["connected"] = node.nodes()
    summary["peers"] = peers
    return summary


async def _greeter(out: _Output) -> None:
    """The demo's greeter: ``["hello", pid, text]`` gets ``["hi", node, text]``."""
    me = api.node()
    while True:
        message = await api.receive()
        match message:
            case ["hello", Pid() | str() as sender, str() as text]:
                api.send(sender, ["hi", me, text])
                sender_node = sender.node if isinstance(sender, Pid) else ""
                if isinstance(sender, str):
                    with contextlib.suppress(BadReference):
                        sender_node = Pid.from_uri(sender).node
                shown = text[:GREETING_TEXT_SHOWN_MAX]
                log.info("greeting from %s: %r", sender, shown)
                out.emit(
                    {
                        "event": "greeting",
                        "from": sender_node,
                        "sender": str(sender),
                        "text": shown,
                    }
                )
            case _:
                log.warning("greeter ignores a message: %.200r", message)


def _is_hi(message: object) -> bool:
    match message:
        case ["hi", str(), str()]:
            return True
    return False


async def _greet(
    out: _Output, reply: dict[str, object], other: str, text: str, timeout: float
) -> None:
    """One greeting: send to ``greeter`` on *other*, time the answer."""
    started = trio.current_time()
    status = api.send_checked(
        Name(node=other, name=GREETER_NAME), ["hello", api.self(), text]
    )
    if status is not SendStatus.OK:
        out.emit({**reply, "event": "error", "error": f"send refused: {status.value}"})
        return
    try:
        answer = await api.receive(_is_hi, timeout=timeout)
    except ReceiveTimeout:
        out.emit({**reply, "event": "error", "error": f"no reply within {timeout}s"})
        return
    assert isinstance(answer, list | tuple)
    out.emit(
        {
            **reply,
            "event": "greeting_reply",
            "to": other,
            "reply": list(answer),
            "rtt_ms": round((trio.current_time() - started) * 1000, 3),
        }
    )


async def _wait_connected(
    node: Node, out: _Output, reply: dict[str, object], peer: str, timeout: float
) -> None:
    with trio.move_on_after(timeout):
        await node.wait_connected(peer)
        out.emit({**reply, "event": "connected"})
        return
    out.emit({**reply, "event": "error", "error": f"not connected within {timeout}s"})


def _command_spec(node: Node, command: Mapping[str, object]) -> NodeSpec:
    name = command_field(command, "name", str)
    host = command_field(command, "host", str)
    port = command_field(command, "port", int)
    try:
        return NodeSpec(
            name=name,
            addresses=((host, port),),
            channels=node.config.channels,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


async def _leave(
    node: Node, out: _Output, reply: dict[str, object], other: str | None
) -> None:
    try:
        await node.membership.leave(other)
    except ValueError as exc:
        out.emit({**reply, "event": "error", "error": str(exc)})
        return
    out.emit({**reply, "event": "left", "name": other or node.name})


def _dispatch(
    node: Node,
    out: _Output,
    nursery: trio.Nursery,
    command: dict[str, object],
    commands: Mapping[str, CommandHandler],
) -> bool:
    """Run one command; False when it asks the node to stop.

    Commands that wait (wait_connected, greet) run as tasks, so the control
    loop keeps answering (e.g. ``stats``) while they do.
    """
    reply: dict[str, object] = {}
    if "id" in command:
        reply["id"] = command["id"]
    cmd = command.get("cmd")
    try:
        match cmd:
            case "add_peer":
                spec = _command_spec(node, command)
                node.add_peer(spec)
                out.emit({**reply, "event": "peer_added", "name": spec.name})
            case "wait_connected":
                name = command_field(command, "name", str)
                reply["name"] = name
                nursery.start_soon(
                    _wait_connected, node, out, reply, name, _timeout(command)
                )
            case "stats":
                out.emit({**reply, "event": "stats", **statistics_summary(node)})
            case "join":
                spec = _command_spec(node, command)
                node.membership.join(spec)
                out.emit({**reply, "event": "joining", "name": spec.name})
            case "leave":
                other = command_field(command, "name", str, "")
                nursery.start_soon(_leave, node, out, reply, other or None)
            case "members":
                out.emit(
                    {
                        **reply,
                        "event": "members",
                        "members": [
                            {
                                "name": spec.name,
                                "addresses": [list(a) for a in spec.addresses],
                            }
                            for spec in node.membership.members()
                        ],
                        "up": node.membership.up_nodes(),
                        "version": node.membership.version,
                    }
                )
            case "greet":
                other = command_field(command, "name", str)
                text = command_field(command, "text", str, f"hello from {node.name}")
                reply["name"] = other
                node.spawn(_greet, out, reply, other, text, _timeout(command))
            case "stop":
                out.emit({**reply, "event": "stopping"})
                return False
            case str() if cmd in commands:
                out.emit({**commands[cmd](command), **reply})
            case _:
                raise CommandError(f"unknown command {cmd!r}")
    except CommandError as exc:
        out.emit({**reply, "event": "error", "cmd": str(cmd), "error": str(exc)})
    return True


async def _control_loop(
    node: Node,
    out: _Output,
    done: trio.CancelScope,
    commands: Mapping[str, CommandHandler],
) -> None:
    """Read commands from stdin until ``stop`` or EOF, then stop the node."""
    # A dup, so that closing our stream leaves fd 0 itself alone.
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    try:
        async with stdin, trio.open_nursery() as nursery:
            reader = _LineReader(stdin)
            while True:
                try:
                    line = await reader.readline()
                except _LineTooLong:
                    out.emit({"event": "error", "error": "command line too long"})
                    continue
                if line is None:
                    log.info("stdin closed; stopping")
                    break
                if not line.strip():
                    continue
                try:
                    command = json.loads(line)
                except ValueError:
                    command = None
                if not isinstance(command, dict):
                    out.emit({"event": "error", "error": "a command is a JSON object"})
                    continue
                if not _dispatch(node, out, nursery, command, commands):
                    break
            nursery.cancel_scope.cancel()
    finally:
        # FdStream made the shared file description non-blocking; put it back
        # for whoever else holds it (a terminal's shell, for one).
        with contextlib.suppress(OSError):
            os.set_blocking(sys.stdin.fileno(), True)
        done.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], done: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s; stopping", signal.Signals(signum).name)
        done.cancel()
        return


async def serve(
    options: NodeOptions, config: NodeConfig, *, extension: Extension | None = None
) -> int:
    """Run the node until told to stop; the process's exit code.

    Args:
        options: from :func:`node_options` (control protocol, demo greeter).
        config: from :func:`node_config`.
        extension: a service run beside the node, with its commands (see
            :data:`Extension`); ``None`` for a plain ``partisan node``.
    """
    out = _Output(sys.stdout)
    failed = False
    # The signal receiver is up before the node is, so a SIGTERM sent as soon
    # as "listening" is read still stops the node cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with open_node(config) as node:
                assert node.address is not None
                host, port = node.address
                log.info("listening on %s:%d", host, port)
                out.emit(
                    {
                        "event": "listening",
                        "name": node.name,
                        "host": host,
                        "port": port,
                    }
                )
                if options.demo_greeter:
                    node.spawn(_greeter, out, name=GREETER_NAME)
                if options.control_stdio:
                    node.membership.on_up(
                        None, lambda peer: out.emit({"event": "node_up", "node": peer})
                    )
                    node.membership.on_down(
                        None,
                        lambda peer: out.emit({"event": "node_down", "node": peer}),
                    )
                async with contextlib.AsyncExitStack() as stack:
                    commands: Mapping[str, CommandHandler] = {}
                    if extension is not None:
                        commands = await stack.enter_async_context(
                            extension(node, out.emit)
                        )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            _stop_on_signal, signals, nursery.cancel_scope
                        )
                        if options.control_stdio:
                            nursery.start_soon(
                                _control_loop,
                                node,
                                out,
                                nursery.cancel_scope,
                                commands,
                            )
                    log.info("stopping")
        except* OSError as group:
            log.error("node failed: %s", group.exceptions[0])
            failed = True
    if failed:
        return EXIT_FAILURE
    log.info("stopped")
    out.emit({"event": "stopped", "name": config.name})
    return EXIT_OK


# ---------------------------------------------------------------------------- CLI


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the node flags of ``partisan node`` to *parser* (for
    :func:`node_options`); an extension's command adds its own after."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings")
    parser.add_argument("--name", metavar="NAME@HOST", help="the node's name")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:0)"
    )
    parser.add_argument(
        "--secret-env",
        metavar="VAR",
        help=f"environment variable holding the cluster secret ({DEFAULT_SECRET_ENV})",
    )
    parser.add_argument(
        "--peer",
        metavar="NAME=HOST:PORT",
        action="append",
        default=[],
        help="a static peer (repeatable)",
    )
    parser.add_argument(
        "--membership",
        dest="strategy",
        choices=STRATEGIES,
        help="membership strategy (default full_mesh); --peer nodes are its seeds",
    )
    parser.add_argument(
        "--role", choices=("peer", "server", "client"), help="for client_server"
    )
    parser.add_argument(
        "--heartbeat-interval", type=float, metavar="S", help="default 1.0 s"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="S",
        help="silence before a peer is declared down (default 5.0 s)",
    )
    parser.add_argument("--tls-ca", metavar="PEM", help="CA certificate(s) to trust")
    parser.add_argument("--tls-cert", metavar="PEM", help="this node's certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="this node's private key")
    parser.add_argument("--log-level", choices=_LOG_LEVELS, help="default info")
    parser.add_argument(
        "--control-stdio",
        action="store_true",
        help="take JSON-line commands on stdin, write JSON-line events on stdout",
    )
    parser.add_argument(
        "--demo-greeter",
        action="store_true",
        help='register a "greeter" process (the hello_cluster demo)',
    )


def _parser() -> argparse.ArgumentParser:
    # No abbreviated flags: "--secret X" must be an error, not --secret-env X
    # (which would also echo X, the would-be secret, in the error message).
    parser = argparse.ArgumentParser(
        prog="partisan",
        description="Run and operate partisan-py nodes.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    node = commands.add_parser(
        "node",
        allow_abbrev=False,
        help="run one node",
        description=(
            "Run one node until SIGINT/SIGTERM. Settings come from --config (TOML)"
            " and the flags; flags win. The cluster secret comes from the"
            f" environment only (--secret-env, default {DEFAULT_SECRET_ENV})."
        ),
    )
    add_node_arguments(node)
    sim = commands.add_parser(
        "sim",
        allow_abbrev=False,
        help="run the deterministic cluster simulator",
        description="Simulate a cluster in one process (docs/simulator.md).",
    )
    add_sim_subcommands(sim.add_subparsers(dest="sim_command", required=True))
    return parser


def _node_command(args: argparse.Namespace) -> int:
    try:
        options = node_options(args)
        secret = read_secret(options.secret_env, os.environ)
        config = node_config(options, secret)
    except ConfigError as exc:
        print(f"partisan node: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.name, options.log_level)
    return trio.run(serve, options, config)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``partisan`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "node":
        return _node_command(args)
    if args.command == "sim":
        code = args.run(args)
        assert isinstance(code, int)
        return code
    raise AssertionError(f"unhandled command {args.command!r}")


# --------------------------------------------------- the harness end of the protocol


class NodeProcessError(Exception):
    """A node process did not do what it was asked (in time, or at all)."""


@final
class NodeProcess:
    """A ``partisan node --control-stdio`` child process, driven through its pipes.

    Make one with :func:`open_node_process`. Every line the node writes is kept
    in :attr:`events` in arrival order, so a caller can wait for a reply (by
    ``id``) or for an unsolicited event (a greeting) alike.
    """

    def __init__(self, name: str, process: trio.Process, stderr: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._stderr = stderr
        # The whole log, kept when the log file is closed by aclose().
        self._log: str | None = None
        self._ids = itertools.count(1)
        self._write_lock = trio.Lock()
        self._changed = trio.Event()
        # Set once stdout has closed: no event will come any more.
        self._eof = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        """What the node logged so far."""
        if self._log is not None:
            return self._log
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _describe_exit(self) -> str:
        code = self.process.returncode
        status = "still running" if code is None else f"exit code {code}"
        tail = "\n".join(self.stderr_text().splitlines()[-10:])
        return f"{status}; its last log lines:\n{tail}"

    async def _read_events(self) -> None:
        assert self.process.stdout is not None
        reader = _LineReader(self.process.stdout)
        try:
            while True:
                try:
                    line = await reader.readline()
                except _LineTooLong:
                    continue
                if line is None:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    event = {
                        "event": "unparsable",
                        "line": line.decode(errors="replace"),
                    }
                self.events.append(event)
                self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self._eof = True
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float
    ) -> dict[str, Any]:
        """The first event (received so far or later) that *predicate* accepts.

        Raises:
            NodeProcessError: none within *timeout*, or the node's stdout closed.
        """
        deadline = trio.current_time() + timeout
        checked = 0
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
            checked = len(self.events)
            if self._eof:
                # Its output ended: it is exiting. Give it a moment, so that
                # the error can say with what code.
                with trio.move_on_after(1.0):
                    await self.process.wait()
                raise NodeProcessError(
                    f"node {self.name} stopped answering: {self._describe_exit()}"
                )
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
                continue
            raise NodeProcessError(
                f"no such event from node {self.name} within {timeout}s:"
                f" {self._describe_exit()}"
            )

    async def listening(self, *, timeout: float = 15.0) -> tuple[str, int]:
        """Wait for the node to listen; its (host, port)."""
        event = await self.wait_event(
            lambda e: e.get("event") == "listening", timeout=timeout
        )
        return str(event["host"]), int(event["port"])

    async def send(self, command: Mapping[str, object]) -> int:
        """Write one command (an ``id`` is added); returns the id."""
        command_id = next(self._ids)
        line = json.dumps({**command, "id": command_id}).encode() + b"\n"
        assert self.process.stdin is not None
        try:
            async with self._write_lock:
                await self.process.stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise NodeProcessError(
                f"node {self.name} no longer reads commands: {self._describe_exit()}"
            ) from exc
        return command_id

    async def request(
        self,
        command: Mapping[str, object],
        *,
        timeout: float = 15.0,
        check: bool = True,
    ) -> dict[str, Any]:
        """Send a command and wait for its reply.

        Raises:
            NodeProcessError: no reply in time, or (with *check*) an error reply.
        """
        command_id = await self.send(command)
        reply = await self.wait_event(
            lambda e: e.get("id") == command_id, timeout=timeout
        )
        if check and reply.get("event") == "error":
            raise NodeProcessError(
                f"{self.name}: {command} failed: {reply.get('error')}"
            )
        return reply

    async def stats(self) -> dict[str, Any]:
        return await self.request({"cmd": "stats"})

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to close anything (a crash)."""
        self.process.kill()

    async def wait_exit(self, *, timeout: float) -> int | None:
        """The exit code, or ``None`` if still running after *timeout*."""
        with trio.move_on_after(timeout):
            return await self.process.wait()
        return None

    async def stop(self, *, timeout: float = 5.0) -> int:
        """Stop the node: ``stop``, then SIGTERM, then SIGKILL; its exit code.

        Each step waits up to *timeout* seconds. Never raises for a node that
        is already gone. A checkpoint; shield it to stop while being cancelled.
        """
        if self.process.returncode is None:
            # Bounded: a wedged node that stopped reading fills the pipe.
            with trio.move_on_after(timeout), contextlib.suppress(NodeProcessError):
                await self.send({"cmd": "stop"})
            assert self.process.stdin is not None
            with contextlib.suppress(trio.BrokenResourceError, OSError):
                await self.process.stdin.aclose()
            code = await self.wait_exit(timeout=timeout)
            if code is not None:
                return code
            log.warning("%s ignored stop; terminating it", self.name)
            self.process.terminate()
            code = await self.wait_exit(timeout=timeout)
            if code is not None:
                return code
            log.warning("%s ignored SIGTERM; killing it", self.name)
            self.process.kill()
        return await self.process.wait()

    async def aclose(self, *, timeout: float = 5.0) -> int:
        """Stop the node as :meth:`stop`, then release its pipes and log file.

        Shielded, so it completes under cancellation too; idempotent. The
        node's log stays readable through :meth:`stderr_text`.
        """
        code: int | None = None
        with trio.CancelScope(shield=True):
            try:
                code = await self.stop(timeout=timeout)
            finally:
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
                for stream in (self.process.stdin, self.process.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError, trio.BrokenResourceError):
                            await stream.aclose()
                if self._log is None:
                    self._log = self.stderr_text()
                    self._stderr.close()
        assert code is not None
        return code


async def start_node_process(
    nursery: trio.Nursery,
    name: str,
    *,
    secret: str | None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    module: str = "runtime.cli",
) -> NodeProcess:
    """Start ``python -m runtime.cli node --control-stdio`` as a child process.

    Returns as soon as the process is started; ``await node.listening()``
    waits for it to listen. Prefer :func:`open_node_process`; this form is for
    owners of a longer-lived nursery (a pytest fixture).

    Args:
        nursery: runs the task that reads the node's events.
        name: the node's name, ``name@host``.
        secret: the cluster secret, passed in the child's environment as
            ``PARTISAN_SECRET`` (``None``: leave the environment as it is).
        args: more flags for ``partisan node``.
        env: the child's environment (default: ours).
        module: the module run with ``-m``: another command built on
            :func:`serve` (``plumdb.cli``) takes the same ``node`` flags and
            speaks the same control protocol.

    Resource handling: the caller must ``await node.aclose()``, which stops
    the child and releases its pipes and log file.
    """
    environ = dict(os.environ if env is None else env)
    if secret is not None:
        environ[DEFAULT_SECRET_ENV] = secret
    argv = [
        python,
        "-m",
        module,
        "node",
        "--name",
        name,
        "--control-stdio",
        *args,
    ]
    # The node's logs: kept in a file, not a pipe, so a chatty node can never
    # block on a full pipe nobody reads, and shown when something fails.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (NodeProcess.aclose closes it)
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=environ,
        )
    except BaseException:
        stderr.close()
        raise
    node = NodeProcess(name, process, stderr)
    nursery.start_soon(node._read_events)
    return node


@asynccontextmanager
async def open_node_process(
    name: str,
    *,
    secret: str | None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    module: str = "runtime.cli",
    stop_timeout: float = 5.0,
) -> AsyncIterator[NodeProcess]:
    """A node process for the duration of the block (see :func:`start_node_process`).

    Resource handling: leaving the block stops the child (``stop``, SIGTERM,
    SIGKILL, each after *stop_timeout*) even on error or cancellation, and
    waits for it.
    """
    async with trio.open_nursery() as nursery:
        node = await start_node_process(
            nursery,
            name,
            secret=secret,
            args=args,
            env=env,
            python=python,
            module=module,
        )
        try:
            yield node
        finally:
            await node.aclose(timeout=stop_timeout)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
