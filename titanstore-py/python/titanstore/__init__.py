"""TitanStore: a Raft-replicated key-value store.

``Client`` talks to a cluster; ``Cluster`` runs real local clusters and
injects faults (kill, pause, partitions) for scripts and chaos tests;
``History`` records what clients saw and checks it for linearizability.
"""

from .chaos import CheckResult, History, Operation, check_operations
from .client import Client, Member, NodeStatus, Pipeline
from .state_store import ScanItem, WatchEvent
from .cluster import Cluster, ClusterNode, Statuses
from .exceptions import (
    ConflictError,
    DataError,
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
from .timeline import Event, Timeline

__all__ = [
    "CheckResult",
    "History",
    "Operation",
    "check_operations",
    "Client",
    "Member",
    "Cluster",
    "ClusterNode",
    "Statuses",
    "Event",
    "Timeline",
    "NodeStatus",
    "Pipeline",
    "DataError",
    "ScanItem",
    "WatchEvent",
    "ConflictError",
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
