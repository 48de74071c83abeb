"""The pytest plugin: the fixture, the marker, and node logs on failure."""

from __future__ import annotations

import pytest

from titanstore import Cluster


@pytest.mark.titanstore(nodes=1)
def test_fixture_honours_the_marker(titanstore_cluster: Cluster) -> None:
    assert len(titanstore_cluster.nodes) == 1
    titanstore_cluster.wait_for_leader(timeout=10)
    titanstore_cluster.client().set("k", "v")


def test_failed_test_report_carries_node_logs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.titanstore(nodes=1)
        def test_fails(titanstore_cluster):
            titanstore_cluster.wait_for_leader(timeout=10)
            assert False, "deliberate"
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*titanstore node logs*", "*node1*"])
