"""The pytest plugin: the fixture, the marker, and node logs on failure."""

from __future__ import annotations

from pathlib import Path

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


def test_failed_test_report_has_timeline_deaths_and_kept_data(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, signal
        import pytest

        @pytest.mark.titanstore(nodes=2)
        def test_fails(titanstore_cluster):
            titanstore_cluster.wait_for_leader(timeout=10)
            titanstore_cluster.kill("node1")
            os.kill(titanstore_cluster.node("node2").pid, signal.SIGKILL)
            titanstore_cluster.wait_until(lambda: titanstore_cluster.unexpected_exits or None, 5, "death")
            assert False, "deliberate"

        @pytest.mark.titanstore(nodes=1)
        def test_passes(titanstore_cluster):
            print("PASSING DATA", titanstore_cluster.data_dir)
        """
    )
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*titanstore fault timeline*",
            "t = time.monotonic() (History's clock)*",
            "* kill node1",
            "* died node2 exit code -9, not by a harness call",
            "Died unexpectedly: node2 (exit code -9)",
            "*titanstore node logs*",
            "*titanstore data*",
            "kept at *",
        ]
    )
    kept = next(line for line in out.splitlines() if line.startswith("kept at ")).removeprefix("kept at ")
    assert (Path(kept) / "node1.log").exists() and (Path(kept) / "node2").is_dir()
    passing = next(line for line in out.splitlines() if "PASSING DATA" in line).split("PASSING DATA ")[1]
    assert not Path(passing).exists()


def test_harness_error_logs_are_shown_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.titanstore(nodes=1)
        def test_fails(titanstore_cluster):
            titanstore_cluster.wait_until(lambda: None, timeout=0.1, what="a miracle")
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "HarnessError: timed out after 0.1 s waiting for a miracle" in out
    assert out.count("--- node1 (") == 1, out
    assert "(in the HarnessError's notes above)" in out


def test_misspelt_marker_flag_is_a_clear_setup_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.titanstore(nodes=1, snapshot_treshold=10)
        def test_never_runs(titanstore_cluster):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TypeError: Cluster() got an unknown node flag 'snapshot_treshold'*did you mean snapshot_threshold?*"])
