"""The distributed runtime: nodes, processes, remote refs and channelled transport.

Start a node with :func:`open_node`; inside it, processes use the Erlang-style
functions (:func:`spawn`, :func:`send`, :func:`receive`, :func:`self`...).
"""

from runtime.api import (
    exit,
    is_process_alive,
    make_ref,
    node,
    nodes,
    receive,
    receive_batch,
    register,
    self,
    send,
    send_checked,
    spawn,
    whereis,
)
from runtime.config import ChannelSpec, NodeConfig, NodeSpec, TLSConfig
from runtime.core.handshake import Keyring
from runtime.errors import (
    FrameTooLarge,
    HandshakeError,
    MessageRefused,
    NotInProcess,
    ProtocolError,
    ReceiveTimeout,
    RuntimeStopped,
)
from runtime.ref import BadReference, Name, Pid, Ref, parse_target
from runtime.shell.connection import SendStatus
from runtime.shell.network import Network, TcpNetwork
from runtime.shell.node import Node, NodeStatistics, open_node

__all__ = [
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
]
