"""pytest plugin (registered through the ``pytest11`` entry point).

Fixture ``titanstore_cluster``: a running :class:`~titanstore.Cluster`, torn
down after the test. Choose its shape with a marker::

    @pytest.mark.titanstore(nodes=5, snapshot_threshold=100)
    def test_something(titanstore_cluster): ...

When a test using the fixture fails, the tail of every node's log is added
to the report.
"""

from __future__ import annotations

from typing import Any, Dict, Generator, Iterator

import pytest

from .cluster import Cluster

__all__ = ["titanstore_cluster"]

_CLUSTER_KEY = pytest.StashKey[Cluster]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "titanstore(nodes=3, **node_flags): shape of the titanstore_cluster fixture",
    )


@pytest.fixture
def titanstore_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A started cluster (3 nodes unless the ``titanstore`` marker says otherwise)."""
    options: Dict[str, Any] = {"nodes": 3}
    marker = request.node.get_closest_marker("titanstore")
    if marker is not None:
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, int):
        options["nodes"] = param
    elif isinstance(param, dict):
        options.update(param)
    with Cluster(**options) as cluster:
        request.node.stash[_CLUSTER_KEY] = cluster
        yield cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    cluster = item.stash.get(_CLUSTER_KEY, None)
    if cluster is not None and report.failed:
        report.sections.append(("titanstore node logs", cluster.logs(lines=60)))
