"""Goal: the public surface is exactly what we mean to export, and documented.

Method: snapshot each package's ``__all__`` (a change here is a deliberate API
change, made by editing the snapshot), check every name resolves, and that every
public class and function has a docstring.
"""

import inspect

import pytest

import actors
import plumdb
import runtime
import runtime.testing

SNAPSHOT = {
    "runtime": [
        "BadReference",
        "ChannelSpec",
        "Down",
        "Exit",
        "FailureDetectorConfig",
        "FaultAction",
        "FrameTooLarge",
        "HandshakeError",
        "HyParViewConfig",
        "Keyring",
        "LinkCounts",
        "MembershipConfig",
        "MembershipSnapshot",
        "MessageRefused",
        "MonitorCounts",
        "Name",
        "Network",
        "Node",
        "NodeConfig",
        "NodeDown",
        "NodeSpec",
        "NodeStatistics",
        "NodeUp",
        "NotInProcess",
        "Partition",
        "Pid",
        "ProcessExit",
        "ProtocolError",
        "ReceiveTimeout",
        "Ref",
        "RemoteError",
        "RuntimeStopped",
        "SendStatus",
        "Subscription",
        "TLSConfig",
        "TcpNetwork",
        "demonitor",
        "exit",
        "inject_partition",
        "interpose",
        "is_process_alive",
        "join",
        "leave",
        "link",
        "make_ref",
        "member",
        "members",
        "monitor",
        "monitor_node",
        "monitor_nodes",
        "node",
        "nodes",
        "on_down",
        "on_up",
        "open_node",
        "parse_target",
        "partitions",
        "receive",
        "receive_batch",
        "register",
        "remove_interposition",
        "resolve_partition",
        "self",
        "send",
        "send_checked",
        "spawn",
        "spawn_link",
        "trap_exit",
        "unlink",
        "update_members",
        "whereis",
    ],
    "runtime.testing": [
        "RECEIVE_BUFFER_BYTES_MAX_DEFAULT",
        "LinkFaults",
        "MemoryListener",
        "MemoryNetwork",
        "MemoryNetworkStatistics",
        "MemoryStream",
        "PartitionId",
    ],
    "plumdb": [
        "ANY",
        "AntiEntropyStatistics",
        "Backend",
        "Change",
        "ExchangeError",
        "ExchangeFailed",
        "ExchangeOutcome",
        "FullPrefix",
        "Key",
        "KeyPattern",
        "MalformedData",
        "MemoryBackend",
        "MerkleConfig",
        "Object",
        "PlumDB",
        "PlumDBConfig",
        "PlumDBStatistics",
        "Resolved",
        "Resolver",
        "Sibling",
        "SqliteBackend",
        "SqliteConfig",
        "Store",
        "StoreConfig",
        "StoreStatistics",
        "Subscription",
        "decode_object",
        "encode_object",
        "open_plumdb",
        "resolve",
    ],
    "actors": [],
}
MODULES = {
    "runtime": runtime,
    "runtime.testing": runtime.testing,
    "plumdb": plumdb,
    "actors": actors,
}


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_all_matches_the_snapshot(name: str) -> None:
    assert sorted(MODULES[name].__all__) == sorted(SNAPSHOT[name])


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_every_exported_name_resolves_and_is_documented(name: str) -> None:
    module = MODULES[name]
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attribute} has no docstring"
