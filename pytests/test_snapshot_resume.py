"""A snapshot image whose send breaks off goes on from where it stopped, with
real processes: the follower keeps what arrived, the leader asks what it
holds and sends only the rest, and the follower ends with every key."""

from __future__ import annotations

import re

from titanstore import Cluster

KEYS = 480
VALUE = "v" * (48 * 1024)


def test_a_broken_off_snapshot_send_resumes_where_it_stopped() -> None:
    # Snapshots come often, so the log the lagging node needs is compacted.
    with Cluster(nodes=3, snapshot_threshold=50) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        lagger = next(n for n in cluster.node_ids if n != leader)
        cluster.stop(lagger)
        with cluster.client(timeout=10) as client:
            pipe = client.pipeline()
            for i in range(KEYS):
                pipe.set(f"k{i}", f"{i}:{VALUE}")
            pipe.execute()
        cluster.wait_until(
            lambda: (s := cluster.node(leader).status()) is not None and s.snapshot_index >= KEYS // 2 or None,
            30,
            "the leader to snapshot",
        )
        # ~23 MiB over a slow link takes seconds: long enough to break it off.
        cluster.set_latency(300, leader, lagger)
        cluster.start(lagger)
        lagger_node, leader_node = cluster.node(lagger), cluster.node(leader)
        cluster.wait_until(
            lambda: "receiving a snapshot image" in lagger_node.log_of_this_run() or None,
            30,
            "the image to start arriving",
        )
        # A stopped receiver: the leader's keep-alive gives the send up.
        mark = len(leader_node.log_of_this_run())
        cluster.pause(lagger)
        cluster.wait_until(
            lambda: "snapshot image not delivered" in leader_node.log_of_this_run()[mark:] or None,
            30,
            "the leader to give the send up",
        )
        cluster.resume(lagger)
        cluster.set_latency(0, leader, lagger)
        cluster.wait_until(
            lambda: "snapshot image delivered" in leader_node.log_of_this_run()[mark:] or None,
            60,
            "the image to be delivered",
        )
        assert "resuming a snapshot image where its last send stopped" in lagger_node.log_of_this_run()
        delivered = re.findall(r"snapshot image delivered.*", leader_node.log_of_this_run()[mark:])
        starts = [int(m) for line in delivered for m in re.findall(r"resumed_at=(\d+)", line)]
        assert starts and starts[0] > 0, delivered
        with lagger_node.client(timeout=5) as local:
            cluster.wait_until(
                lambda: local.sget(f"k{KEYS - 1}") is not None or None, 30, f"{lagger} to install the image"
            )
            for i in range(KEYS):
                assert local.sget(f"k{i}") == f"{i}:{VALUE}", f"k{i} on {lagger}"
