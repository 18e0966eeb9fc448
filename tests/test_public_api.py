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
        "FrameTooLarge",
        "HandshakeError",
        "Keyring",
        "MessageRefused",
        "Name",
        "Network",
        "Node",
        "NodeConfig",
        "NodeSpec",
        "NodeStatistics",
        "NotInProcess",
        "Pid",
        "ProtocolError",
        "ReceiveTimeout",
        "Ref",
        "RuntimeStopped",
        "SendStatus",
        "TLSConfig",
        "TcpNetwork",
        "exit",
        "is_process_alive",
        "make_ref",
        "node",
        "nodes",
        "open_node",
        "parse_target",
        "receive",
        "receive_batch",
        "register",
        "self",
        "send",
        "send_checked",
        "spawn",
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
    "plumdb": [],
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
