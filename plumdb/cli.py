"""The ``plumdb`` command line: run a node with PlumDB, from flags or a TOML file.

``plumdb node`` is ``partisan node`` (the same flags, TOML file, secret from the
environment, logs and JSON-line control protocol: :mod:`runtime.cli`) with a
:class:`~plumdb.PlumDB` opened on the node, stored in a SQLite file
(``--data PATH``) or in memory (no ``--data``). The runtime must not import
``plumdb`` (imports only go down), so this command plugs into the runtime's
:func:`runtime.cli.serve` as an *extension*, which adds the commands below.

Options: ``--data PATH`` (a file, or a directory that gets ``plumdb.sqlite``),
``--partitions N``, ``--exchange-interval S``, ``--no-broadcast``,
``--tombstone-grace S``, ``--synchronous FULL|NORMAL``, ``--resync``; or the
same in a ``[plumdb]`` table of the TOML file (``data``, ``partitions``,
``exchange_interval``, ``broadcast``, ``tombstone_grace``, ``synchronous``,
``resync``, ``memory_prefixes``). Flags win.

Control commands (with ``--control-stdio``)
--------------------------------------------
Keys and values are JSON: a key is a string, an integer, or an array of keys
(a tuple); bytes keys and prefixes cannot be named here. Every reply echoes
the command's ``id``.

================================================  ====================================
command                                           reply event
================================================  ====================================
``put`` prefix, subprefix, key, value             ``put``: context, monotonic_ns
``get`` prefix, subprefix, key, allow_put?        ``value``: found, value, siblings
``delete`` prefix, subprefix, key                 ``deleted``: monotonic_ns
``keys`` prefix, subprefix, limit? (100, max      ``keys``: items [[key, value]...],
1000)                                             count (all live keys)
``subscribe`` prefix?, subprefix?                 ``subscribed``; then a ``change``
                                                  event per change: prefix, subprefix,
                                                  key, value, deleted, origin,
                                                  monotonic_ns
``sync`` name, timeout?                           ``synced`` (differences, repaired)
                                                  or ``error``
``plumdb_stats``                                  ``plumdb_stats``: the counters
================================================  ====================================

``monotonic_ns`` is ``time.monotonic_ns()`` of this process (for ``put`` and
``delete``, taken just before the write; for ``change``, at delivery to the
subscriber): comparable between processes of one machine (the benchmark times
replication with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from plumdb.backend_sqlite import SqliteConfig
from plumdb.config import PlumDBConfig
from plumdb.core.keys import ANY, FullPrefixPattern, Key
from plumdb.errors import ExchangeFailed, MalformedData
from plumdb.service import PlumDB, open_plumdb
from plumdb.store import StoreConfig
from runtime.cli import (
    CONTROL_TIMEOUT_DEFAULT,
    CONTROL_TIMEOUT_MAX,
    EXIT_CONFIG,
    CommandError,
    CommandHandler,
    ConfigError,
    Emit,
    Extension,
    NodeOptions,
    add_node_arguments,
    command_field,
    node_config,
    node_options,
    read_secret,
    serve,
    setup_logging,
)
from runtime.shell.node import Node

__all__ = ["main", "plumdb_config"]

DATA_FILE: Final = "plumdb.sqlite"
"""The file made inside a ``--data`` directory."""
KEYS_DEFAULT: Final = 100
# A reply line must stay under the harness's 64 KiB line limit.
KEYS_MAX: Final = 1000
_TABLE: Final = "plumdb"
_TABLE_KEYS: Final = {
    "data": str,
    "partitions": int,
    "exchange_interval": float,
    "broadcast": bool,
    "tombstone_grace": float,
    "synchronous": str,
    "resync": bool,
    "memory_prefixes": list,
}


def _key_from_json(value: object) -> Key:
    if isinstance(value, bool) or not isinstance(value, int | str | list):
        raise CommandError("a key is a string, an integer or an array of keys")
    if isinstance(value, list):
        return tuple(_key_from_json(item) for item in value)
    return value


def _key_to_json(key: object) -> object:
    if isinstance(key, tuple):
        return [_key_to_json(item) for item in key]
    if isinstance(key, bytes):
        return key.hex()
    return key


def _value_to_json(value: object) -> object:
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list | tuple):
        return [_value_to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _value_to_json(v) for k, v in value.items()}
    return value


def _full_prefix(command: Mapping[str, object]) -> tuple[str, str]:
    return command_field(command, "prefix", str), command_field(
        command, "subprefix", str
    )


def plumdb_config(
    args: argparse.Namespace, options: NodeOptions
) -> tuple[PlumDBConfig, str | None]:
    """The service's config and data file from the ``[plumdb]`` table and flags.

    Raises:
        ConfigError: a refused setting.
    """
    table = dict(options.extra.get(_TABLE, {}))
    unknown = set(table) - set(_TABLE_KEYS)
    if unknown:
        raise ConfigError(f"[plumdb] may set only {sorted(_TABLE_KEYS)}, not {unknown}")
    for key, kind in _TABLE_KEYS.items():
        if key not in table:
            continue
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            table[key] = value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"plumdb.{key} must be a {kind.__name__}")
    flags = {
        "data": args.data,
        "partitions": args.partitions,
        "exchange_interval": args.exchange_interval,
        "tombstone_grace": args.tombstone_grace,
        "synchronous": args.synchronous,
    }
    for key, value in flags.items():
        if value is not None:
            table[key] = value
    if args.no_broadcast:
        table["broadcast"] = False
    if args.resync:
        table["resync"] = True
    data: str | None = table.get("data")
    if data is not None and os.path.isdir(data):
        data = os.path.join(data, DATA_FILE)
    try:
        store = StoreConfig(
            partition_count=table.get("partitions", 8),
            memory_prefixes=table.get("memory_prefixes", ()),
        )
        defaults = PlumDBConfig()
        config = PlumDBConfig(
            store=store,
            sqlite=SqliteConfig(synchronous=table.get("synchronous", "FULL")),
            broadcast_enabled=table.get("broadcast", True),
            exchange_interval=table.get(
                "exchange_interval", defaults.exchange_interval
            ),
            tombstone_grace=table.get("tombstone_grace", defaults.tombstone_grace),
            resync=table.get("resync", False),
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"plumdb: {error}") from None
    return config, data


def _commands(
    db: PlumDB, emit: Emit, nursery: trio.Nursery
) -> dict[str, CommandHandler]:
    """The control commands this extension adds (see the module docstring)."""

    def checked(function: CommandHandler) -> CommandHandler:
        def run(command: Mapping[str, object]) -> Mapping[str, object]:
            try:
                return function(command)
            except (TypeError, ValueError, MalformedData) as error:
                raise CommandError(str(error)) from None

        return run

    def put(command: Mapping[str, object]) -> Mapping[str, object]:
        if "value" not in command:
            raise CommandError("put needs a value")
        # Before the write: its broadcast may reach a peer (which stamps the
        # delivery) before this process is scheduled again after the write.
        started_ns = time.monotonic_ns()
        obj = db.put(
            _full_prefix(command), _key_from_json(command.get("key")), command["value"]
        )
        return {
            "event": "put",
            "context": [list(entry) for entry in obj.context],
            "monotonic_ns": started_ns,
        }

    def get(command: Mapping[str, object]) -> Mapping[str, object]:
        full_prefix = _full_prefix(command)
        key = _key_from_json(command.get("key"))
        allow_put = command_field(command, "allow_put", bool, default=True)
        obj = db.get_object(full_prefix, key)
        missing = object()
        value = db.get(full_prefix, key, allow_put=allow_put, default=missing)
        found = value is not missing
        return {
            "event": "value",
            "found": found,
            "value": _value_to_json(value) if found else None,
            "siblings": obj.sibling_count if obj is not None else 0,
        }

    def delete(command: Mapping[str, object]) -> Mapping[str, object]:
        started_ns = time.monotonic_ns()
        db.delete(_full_prefix(command), _key_from_json(command.get("key")))
        return {"event": "deleted", "monotonic_ns": started_ns}

    def keys(command: Mapping[str, object]) -> Mapping[str, object]:
        limit = command_field(command, "limit", int, KEYS_DEFAULT)
        if not 0 <= limit <= KEYS_MAX:
            raise CommandError(f"limit is in 0..{KEYS_MAX}")
        items: list[list[object]] = []
        count = 0
        for key, value in db.iterate(_full_prefix(command)):
            if count < limit:
                items.append([_key_to_json(key), _value_to_json(value)])
            count += 1
        return {"event": "keys", "items": items, "count": count}

    def subscribe(command: Mapping[str, object]) -> Mapping[str, object]:
        prefix = command_field(command, "prefix", str, "")
        subprefix = command_field(command, "subprefix", str, "")
        pattern: FullPrefixPattern = (prefix or ANY, subprefix or ANY)
        subscription = db.subscribe(pattern)

        async def forward() -> None:
            with subscription:
                async for change in subscription:
                    emit(
                        {
                            "event": "change",
                            "prefix": _key_to_json(change.full_prefix[0]),
                            "subprefix": _key_to_json(change.full_prefix[1]),
                            "key": _key_to_json(change.key),
                            "value": _value_to_json(change.value),
                            "deleted": change.deleted,
                            "origin": change.origin,
                            "monotonic_ns": time.monotonic_ns(),
                        }
                    )

        nursery.start_soon(forward)
        return {"event": "subscribed"}

    def sync(command: Mapping[str, object]) -> Mapping[str, object]:
        peer = command_field(command, "name", str)
        timeout = command_field(command, "timeout", float, CONTROL_TIMEOUT_DEFAULT)
        if not 0 < timeout <= CONTROL_TIMEOUT_MAX:
            raise CommandError(f"timeout is in (0, {CONTROL_TIMEOUT_MAX}] seconds")
        reply: dict[str, object] = {"name": peer}
        if "id" in command:
            reply["id"] = command["id"]

        async def run() -> None:
            with trio.move_on_after(timeout) as scope:
                try:
                    outcomes = await db.synchronize(peer)
                except ExchangeFailed as error:
                    emit({**reply, "event": "error", "error": str(error)})
                    return
                emit(
                    {
                        **reply,
                        "event": "synced",
                        "differences": sum(o.difference_count for o in outcomes),
                        "repaired": sum(o.keys_repaired_count for o in outcomes),
                    }
                )
            if scope.cancelled_caught:
                emit({**reply, "event": "error", "error": f"not synced in {timeout}s"})

        nursery.start_soon(run)
        return {"event": "syncing"}

    def stats(_command: Mapping[str, object]) -> Mapping[str, object]:
        statistics = db.statistics()
        return {
            "event": "plumdb_stats",
            "actor": db.actor,
            "store": attrs.asdict(statistics.store),
            "anti_entropy": attrs.asdict(statistics.anti_entropy),
            "broadcasts_count": statistics.broadcasts_count,
            "broadcast_delivered_count": statistics.broadcast_delivered_count,
            "broadcast_merged_count": statistics.broadcast_merged_count,
            "tombstones_collected_count": statistics.tombstones_collected_count,
        }

    handlers: dict[str, CommandHandler] = {
        "put": put,
        "get": get,
        "delete": delete,
        "keys": keys,
        "subscribe": subscribe,
        "sync": sync,
        "plumdb_stats": stats,
    }
    return {name: checked(handler) for name, handler in handlers.items()}


def _extension(config: PlumDBConfig, data: str | None) -> Extension:
    @asynccontextmanager
    async def extension(
        node: Node, emit: Emit
    ) -> AsyncIterator[Mapping[str, CommandHandler]]:
        async with (
            open_plumdb(node, path=data, config=config) as db,
            trio.open_nursery() as nursery,
        ):
            yield _commands(db, emit, nursery)
            nursery.cancel_scope.cancel()

    return extension


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plumdb",
        description="Run partisan-py nodes with PlumDB, the replicated store.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    node = commands.add_parser(
        "node",
        allow_abbrev=False,
        help="run one node with PlumDB",
        description=(
            "Run one node and its PlumDB until SIGINT/SIGTERM. The node flags are"
            " partisan node's; settings also come from --config (TOML, with a"
            " [plumdb] table); flags win."
        ),
    )
    add_node_arguments(node)
    node.add_argument(
        "--data",
        metavar="PATH",
        help=f"SQLite file (or a directory for {DATA_FILE}); memory if absent",
    )
    node.add_argument(
        "--partitions", type=int, metavar="N", help="PlumDB partitions (default 8)"
    )
    node.add_argument(
        "--exchange-interval",
        type=float,
        metavar="S",
        help="mean seconds between anti-entropy exchanges (default 10)",
    )
    node.add_argument(
        "--tombstone-grace",
        type=float,
        metavar="S",
        help="seconds before a tombstone may be collected (default 86400)",
    )
    node.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        help="SQLite durability (default FULL: survives power loss)",
    )
    node.add_argument(
        "--no-broadcast",
        action="store_true",
        help="replicate by anti-entropy alone (no Plumtree broadcast)",
    )
    node.add_argument(
        "--resync",
        action="store_true",
        help="discard the local replica and refill it from peers",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``plumdb`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    assert args.command == "node"
    try:
        options = node_options(args, extra_tables=(_TABLE,))
        config, data = plumdb_config(args, options)
        secret = read_secret(options.secret_env, os.environ)
        node = node_config(options, secret)
    except ConfigError as error:
        print(f"plumdb node: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    setup_logging(node.name, options.log_level)
    return trio.run(lambda: serve(options, node, extension=_extension(config, data)))


if __name__ == "__main__":
    sys.exit(main())
