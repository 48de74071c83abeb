"""The end-to-end story through the harness: writes, follower reads, delete,
leader kill, re-election, writes continue, the old leader rejoins and catches up."""

from __future__ import annotations

from titanstore import Cluster


def test_leader_failover_story() -> None:
    with Cluster(nodes=3) as cluster:
        first = cluster.wait_for_leader(timeout=10)
        client = cluster.client()
        for i in range(30):
            client.set(f"file:{i}", f'{{"rev": {i}}}')
        # Linearizable reads from every node, followers included.
        for node in cluster.nodes:
            with node.client() as c:
                assert c.get("file:29") == '{"rev": 29}'
        client.delete("file:0")
        assert client.get("file:0") is None

        cluster.kill(first)
        second = cluster.wait_for_leader(timeout=5)
        assert second != first
        for i in range(30, 60):
            client.set(f"file:{i}", f'{{"rev": {i}}}')

        cluster.start(first)
        cluster.wait_until(
            lambda: (cluster.node(first).status() or None) and cluster.node(first).status().applied  # type: ignore[union-attr]
            >= cluster.node(second).status().applied,  # type: ignore[union-attr]
            timeout=10,
            what="old leader to catch up",
        )
        with cluster.node(first).client() as c:
            for i in range(1, 60):
                assert c.sget(f"file:{i}") == f'{{"rev": {i}}}'
            assert c.sget("file:0") is None


def test_restart_keeps_data(titanstore_cluster: Cluster) -> None:
    cluster = titanstore_cluster
    cluster.wait_for_leader(timeout=10)
    client = cluster.client()
    client.set("persist", "me")
    for node_id in cluster.node_ids:
        cluster.restart(node_id)
    cluster.wait_for_leader(timeout=10)
    assert cluster.client().get("persist") == "me"
