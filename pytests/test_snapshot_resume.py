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
        lagger_node, leader_node = cluster.node(lagger), cluster.node(leader)
        # A send is broken off by pausing its receiver. Should a fast machine
        # deliver the whole image before the pause, the lagger falls behind
        # again and the next image is tried.
        for attempt in range(3):
            status = lagger_node.status()
            behind = status.applied if status is not None else 0
            cluster.stop(lagger)
            with cluster.client(timeout=10) as client:
                pipe = client.pipeline()
                for i in range(KEYS):
                    pipe.set(f"k{i}", f"{attempt}:{i}:{VALUE}")
                pipe.execute()
            cluster.wait_until(
                lambda: (s := leader_node.status()) is not None and s.snapshot_index > behind + KEYS // 2 or None,
                30,
                "the leader to snapshot past the stopped node",
            )
            # ~23 MiB over a slow link takes seconds: long enough to break it off.
            cluster.set_latency(300, leader, lagger)
            cluster.start(lagger)
            cluster.wait_until(
                lambda: "receiving a snapshot image" in lagger_node.log_of_this_run() or None,
                30,
                "the image to start arriving",
            )
            # A stopped receiver: the leader's keep-alive gives the send up.
            mark = len(leader_node.log_of_this_run())
            cluster.pause(lagger)

            def outcome() -> str | None:
                log = leader_node.log_of_this_run()[mark:]
                if "snapshot image not delivered" in log:
                    return "broken off"
                return "delivered" if "snapshot image delivered" in log else None

            broken = cluster.wait_until(outcome, 30, "the leader to give the send up") == "broken off"
            cluster.resume(lagger)
            cluster.set_latency(0, leader, lagger)
            if broken:
                break
        else:
            raise AssertionError("every image was delivered before its send could be broken off")
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
            last = f"{attempt}:{KEYS - 1}:{VALUE}"
            cluster.wait_until(lambda: local.sget(f"k{KEYS - 1}") == last or None, 30, f"{lagger} to install the image")
            for i in range(KEYS):
                assert local.sget(f"k{i}") == f"{attempt}:{i}:{VALUE}", f"k{i} on {lagger}"
