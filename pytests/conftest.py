"""Shared fixtures; the ``titanstore_cluster`` fixture comes from the package's pytest plugin."""

from __future__ import annotations

from typing import Iterator

import pytest

from titanstore import Cluster

pytest_plugins = ["pytester"]


@pytest.fixture
def single_node() -> Iterator[Cluster]:
    """A one-node cluster with a leader."""
    with Cluster(nodes=1) as cluster:
        cluster.wait_for_leader(timeout=10)
        yield cluster
