"""Goal: the public surface of ``runtime.behaviours`` and ``runtime.rpc`` is
what we mean to export, and documented (as tests/test_public_api.py does for
the top-level packages).

Method: snapshot each ``__all__``; every name resolves, and every public class
and function has a docstring.
"""

import inspect
from types import ModuleType

import pytest

from runtime import behaviours, rpc

SNAPSHOT = {
    "runtime.behaviours": [
        "IGNORE", "TIMEOUT", "AlreadyStarted", "CallError", "CallTimeout",
        "ChildInfo", "ChildSpec", "EventTimeout", "From", "GenServer", "GenStatem",
        "GenericTimeout", "KeepState", "KeepStateAndData", "NextEvent", "NextState",
        "NoProcessError", "NoReply", "NodeDownError", "Overloaded", "Postpone",
        "RepeatState", "RepeatStateAndData", "Reply", "ReplyTo", "ServerExited",
        "StartError", "StateTimeout", "Stop", "Supervisor", "SupervisorError",
        "SupervisorSpec", "call", "cast", "count_children", "delete_child", "reply",
        "restart_child", "root_supervisor", "start", "start_child", "start_link",
        "stop", "terminate_child", "which_children",
    ],
    "runtime.rpc": [
        "CHANNEL", "CONCURRENCY_MAX", "SERVICE_NAME", "NotExported", "Outcome",
        "RpcStatistics", "call", "cast", "configure", "export", "exported",
        "multicall", "register_error", "service_address", "statistics", "unexport",
    ],
}  # fmt: skip
MODULES: dict[str, ModuleType] = {
    "runtime.behaviours": behaviours,
    "runtime.rpc": rpc,
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
