"""What the harness did and what happened on its own: the fault timeline,
nodes that died without a harness call, and short harness errors."""

from __future__ import annotations

import os
import signal
import time

import pytest

from titanstore import Cluster, HarnessError, History


def test_fault_timeline_shares_the_history_clock_and_lands_in_node_logs() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        follower = next(n for n in cluster.node_ids if n != leader)
        history = History(cluster.client(timeout=2, retry_timeout=5), "p")
        history.set("k", "before")
        before = time.monotonic()
        cluster.pause(follower)
        cluster.resume(follower)
        cluster.cut(leader, follower, mode="blackhole")
        cluster.connect(leader, follower)
        cluster.isolate(follower)
        cluster.partition({leader}, {follower})
        cluster.set_latency(5)
        cluster.set_latency(7, leader, follower)
        cluster.heal()
        cluster.kill(follower)
        cluster.start(follower)
        cluster.stop(follower)
        cluster.start(follower)
        after = time.monotonic()
        history.set("k", "after")
        events = [e for e in cluster.timeline.events if e.t >= before]
        kinds = [e.kind for e in events]
        assert kinds == [
            "pause", "resume", "cut", "connect", "isolate", "partition", "latency", "latency",
            "heal", "kill", "start", "stop", "start",
        ], kinds  # fmt: skip
        # One clock with History: faults fall between the operations around them.
        ops = history.operations
        assert ops[0].ret <= events[0].t and events[-1].t <= after <= ops[1].call
        partition = events[5]
        assert partition.nodes == tuple(cluster.node_ids) and "mode=reset" in partition.detail
        assert events[7].nodes == (leader, follower) and events[7].detail == "ms=7"
        # Written into the affected nodes' logs, with both clocks.
        follower_log = cluster.node(follower).log_path.read_text()
        assert f"(monotonic {events[9].t:.6f}): kill {follower} ---" in follower_log
        assert f"{events[9].utc} (monotonic" in follower_log
        for node in cluster.nodes:
            assert f"(monotonic {partition.t:.6f}): partition" in node.log_path.read_text()
        leader_log = cluster.node(leader).log_path.read_text()
        assert f"kill {follower}" not in leader_log
        text = cluster.timeline.format()
        assert "History's clock" in text and f"{cluster.timeline.offset:.6f}" in text
        assert f"kill {follower}" in text


def test_node_that_dies_on_its_own_is_reported_everywhere() -> None:
    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        cluster.kill("node3")  # a harness kill is not unexpected
        victim = cluster.node("node2")
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)  # not through the harness
        exits = cluster.wait_until(lambda: cluster.unexpected_exits or None, timeout=5, what="the death to be noticed")
        assert exits == ["node2 (exit code -9)"]
        statuses = cluster.statuses()
        assert statuses.unexpected_exits == exits and statuses["node2"] is None
        assert "died unexpectedly: node2 (exit code -9)" in repr(statuses)
        died = [e for e in cluster.timeline.events if e.kind == "died"]
        assert [e.nodes for e in died] == [("node2",)]
        assert "not by a harness call" in cluster.node("node2").log_path.read_text()
        # Every later harness error says so, even one about something else.
        with pytest.raises(HarnessError, match=r"node3 is not running; died unexpectedly: node2 \(exit code -9\)"):
            cluster.pause("node3")
        with pytest.raises(HarnessError) as info:
            cluster.wait_until(lambda: None, timeout=0.1, what="nothing")
        assert info.value.unexpected_exits == exits
        # Starting it again is fine; the death stays on record.
        cluster.start("node2")
        assert cluster.unexpected_exits == exits


def test_harness_error_is_short_with_the_logs_in_an_attribute_and_a_note() -> None:
    with Cluster(nodes=2) as cluster:
        cluster.wait_for_leader(timeout=10)
        with pytest.raises(HarnessError) as info:
            cluster.wait_until(lambda: None, timeout=0.1, what="a miracle")
    err = info.value
    assert str(err) == "timed out after 0.1 s waiting for a miracle"
    assert "--- node1 (" in err.logs and "--- node2 (" in err.logs
    assert "listening" in err.logs
    assert getattr(err, "__notes__", None) == [err.logs]
