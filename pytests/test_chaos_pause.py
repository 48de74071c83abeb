"""A paused (SIGSTOP) leader is replaced; once resumed it steps down, and no
write it took without a quorum is ever reported OK."""

from __future__ import annotations

import threading
from typing import List

from titanstore import Client, Cluster, TitanStoreError


def test_paused_leader_is_replaced_and_never_acks_without_quorum() -> None:
    with Cluster(nodes=3) as cluster:
        old = cluster.wait_for_leader(timeout=10)
        cluster.client().set("k", "before")
        cluster.pause(old)

        # A write sent to the frozen leader sits in its socket buffer.
        outcome: List[object] = []

        def write_to_old_leader() -> None:
            try:
                with Client(cluster.node(old).client_addr, timeout=15, retry_timeout=0, follow_redirects=False) as c:
                    c.set("stale-write", "x")
                    outcome.append("OK")
            except TitanStoreError as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write_to_old_leader)
        writer.start()

        others = [n for n in cluster.node_ids if n != old]
        new = cluster.wait_until(
            lambda: next((n for n in others if (s := cluster.node(n).status()) is not None and s.is_leader), None),
            timeout=10,
            what="a new leader",
        )
        with Client([cluster.node(n).client_addr for n in others]) as c:
            c.set("k", "after")

        cluster.resume(old)
        writer.join(timeout=30)
        assert not writer.is_alive()
        assert cluster.wait_for_leader(timeout=10) == new
        # The resumed node learns of the newer term and follows the new leader.
        cluster.wait_until(
            lambda: (s := cluster.node(old).status()) is not None and not s.is_leader and s.leader == new,
            timeout=10,
            what="the resumed node to follow the new leader",
        )

        value = cluster.client().get("stale-write")
        if outcome == ["OK"]:
            # Only acceptable if it really committed.
            assert value == "x"
        else:
            assert value is None
        assert cluster.client().get("k") == "after"
