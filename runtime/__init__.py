"""The distributed runtime: nodes, processes, remote refs and channelled transport."""

from runtime.config import ChannelSpec, NodeConfig, NodeSpec, TLSConfig
from runtime.core.handshake import Keyring
from runtime.errors import (
    FrameTooLarge,
    HandshakeError,
    NoProcess,
    NotInProcess,
    ProtocolError,
    RuntimeStopped,
)
from runtime.ref import BadReference, Name, Pid, Ref, parse_target

__all__ = [
    "BadReference",
    "ChannelSpec",
    "FrameTooLarge",
    "HandshakeError",
    "Keyring",
    "Name",
    "NoProcess",
    "NodeConfig",
    "NodeSpec",
    "NotInProcess",
    "Pid",
    "ProtocolError",
    "Ref",
    "RuntimeStopped",
    "TLSConfig",
    "parse_target",
]
