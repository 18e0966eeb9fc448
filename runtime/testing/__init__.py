"""Trio-side test tools, shipped with the runtime as ``trio.testing`` is with trio.

:mod:`runtime.testing.memory_network` runs whole clusters in one trio process on
``trio.testing.MockClock``, with faults (drop, duplicate, delay, partition,
disconnect) between named nodes.
"""

from runtime.testing.memory_network import (
    RECEIVE_BUFFER_BYTES_MAX_DEFAULT,
    LinkFaults,
    MemoryListener,
    MemoryNetwork,
    MemoryNetworkStatistics,
    MemoryStream,
    PartitionId,
)

__all__ = [
    "RECEIVE_BUFFER_BYTES_MAX_DEFAULT",
    "LinkFaults",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryNetworkStatistics",
    "MemoryStream",
    "PartitionId",
]
