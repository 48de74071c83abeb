"""Partitions through the harness proxies: the minority never commits, the
majority keeps working, and after heal every node converges."""

from __future__ import annotations

import pytest

from titanstore import Client, Cluster, ClusterNode, TitanStoreError


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_isolated_leader_cannot_commit_and_majority_moves_on(mode: str) -> None:
    with Cluster(nodes=3, request_timeout_ms=1500) as cluster:
        old = cluster.wait_for_leader(timeout=10)
        cluster.client().set("before", "1")
        majority = [n for n in cluster.node_ids if n != old]
        cluster.partition({old}, set(majority), mode=mode)

        # The old leader is alone: nothing it is asked to write may come back OK.
        with Client(cluster.node(old).client_addr, timeout=5, retry_timeout=0, follow_redirects=False) as c:
            with pytest.raises(TitanStoreError):
                c.set("minority", "lost")

        # The majority elects a leader and keeps committing.
        new = cluster.wait_until(
            lambda: next(
                (n for n in majority if (s := cluster.node(n).status()) is not None and s.is_leader),
                None,
            ),
            timeout=10,
            what="a leader on the majority side",
        )
        with Client([cluster.node(n).client_addr for n in majority]) as c:
            for i in range(20):
                c.set(f"majority:{i}", str(i))
        assert new != old

        cluster.heal()
        cluster.wait_for_leader(timeout=10)
        target = cluster.node(new).status()
        assert target is not None
        for node in cluster.nodes:

            def converged(node: ClusterNode = node) -> bool:
                status = node.status()
                return status is not None and target is not None and status.applied >= target.applied

            cluster.wait_until(converged, timeout=10, what=f"{node.id} to converge")
            with node.client() as c:
                assert c.get("majority:19") == "19"
                assert c.get("before") == "1"
                assert c.get("minority") is None


def test_cut_link_and_isolated_follower() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        follower = next(n for n in cluster.node_ids if n != leader)
        cluster.isolate(follower)
        client = cluster.client()
        client.set("while-isolated", "yes")
        # Pre-vote keeps the isolated follower from disrupting the leader.
        cluster.heal()
        cluster.wait_until(
            lambda: (s := cluster.node(follower).status()) is not None and s.leader == leader and s.applied > 0,
            timeout=10,
            what="isolated follower to rejoin",
        )
        assert cluster.wait_for_leader(timeout=10) == leader
        with cluster.node(follower).client() as c:
            assert c.get("while-isolated") == "yes"
