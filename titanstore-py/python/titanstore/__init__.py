"""TitanStore: a Raft-replicated key-value store.

``Client`` talks to a cluster; ``Cluster`` runs real local clusters and
injects faults (kill, pause, partitions) for scripts and chaos tests.
"""

from .client import Client, NodeStatus, Pipeline
from .cluster import Cluster, ClusterNode
from .exceptions import (
    HarnessError,
    IndeterminateError,
    NoLeaderError,
    NotLeaderError,
    ProtocolError,
    ServerError,
    TitanStoreConnectionError,
    TitanStoreError,
    TitanStoreTimeoutError,
)

__all__ = [
    "Client",
    "Cluster",
    "ClusterNode",
    "NodeStatus",
    "Pipeline",
    "HarnessError",
    "IndeterminateError",
    "NoLeaderError",
    "NotLeaderError",
    "ProtocolError",
    "ServerError",
    "TitanStoreConnectionError",
    "TitanStoreError",
    "TitanStoreTimeoutError",
]
