"""pytest plugin (registered through the ``pytest11`` entry point).

Fixture ``titanstore_cluster``: a running :class:`~titanstore.Cluster`, torn
down after the test. Choose its shape with a marker::

    @pytest.mark.titanstore(nodes=5, snapshot_threshold=100)
    def test_something(titanstore_cluster): ...

The marker's node flags are checked against the server's when the cluster is
made, so a misspelt flag is a clear ``TypeError``. The cluster's data lives
under pytest's ``tmp_path_factory``. When a test using the fixture fails, its
report gets the fault timeline (with nodes that died unexpectedly), the tail
of every node's log (unless a ``HarnessError`` already carries it) and the
data dir, which is kept; a passing test's data dir is removed.
"""

from __future__ import annotations

import shutil
from typing import Any, Dict, Generator, Iterator

import pytest

from .cluster import Cluster
from .exceptions import HarnessError

__all__ = ["titanstore_cluster"]

_CLUSTER_KEY = pytest.StashKey[Cluster]()
_FAILED_KEY = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "titanstore(nodes=3, **node_flags): shape of the titanstore_cluster fixture",
    )


@pytest.fixture
def titanstore_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
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
    data_dir = tmp_path_factory.mktemp("titanstore")
    try:
        cluster = Cluster(data_dir=data_dir, **options)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)  # nothing ran: nothing to keep
        raise
    request.node.stash[_CLUSTER_KEY] = cluster
    with cluster:  # a start that fails keeps the data dir for the report
        yield cluster
    if not request.node.stash.get(_FAILED_KEY, False):
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    cluster = item.stash.get(_CLUSTER_KEY, None)
    if cluster is None or not report.failed:
        return
    item.stash[_FAILED_KEY] = True
    exits = cluster.unexpected_exits
    died = f"\nDied unexpectedly: {', '.join(exits)}" if exits else ""
    report.sections.append(("titanstore fault timeline", cluster.timeline.format() + died))
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, HarnessError) and error.logs:
        logs = "(in the HarnessError's notes above)"
        # pytest >= 9 repeats the whole crash message, notes included, in the
        # short summary: keep that line to the error's one sentence.
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            crash.message = crash.message.split("\n", 1)[0]
    else:
        logs = cluster.logs(lines=60)
    report.sections.append(("titanstore node logs", logs))
    report.sections.append(("titanstore data", f"kept at {cluster.data_dir}"))
