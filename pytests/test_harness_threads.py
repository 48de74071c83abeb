"""Nodes started from any thread live until the harness ends them.

``PR_SET_PDEATHSIG`` fires when the forking *thread* exits; the harness forks
every node from one long-lived spawner thread, so a node restarted by a
short-lived nemesis thread survives it.
"""

from __future__ import annotations

import random
import threading
import time
from typing import List

from titanstore import Client, Cluster, History, TitanStoreError


def test_node_restarted_from_a_thread_outlives_the_thread() -> None:
    with Cluster(nodes=1) as cluster:
        cluster.wait_for_leader(timeout=10)
        errors: List[BaseException] = []

        def restart() -> None:
            try:
                cluster.restart("node1")
            except BaseException as err:  # noqa: BLE001 - asserted below
                errors.append(err)

        thread = threading.Thread(target=restart)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive() and errors == []
        node = cluster.node("node1")
        pid = node.pid
        # The thread is gone; the node must still serve (a round trip gives a
        # parent-death SIGKILL, sent at thread exit, time to land).
        cluster.wait_for_leader(timeout=10)
        with cluster.client(retry_timeout=5) as client:
            assert client.set("after", "thread") is True
            assert client.get("after") == "thread"
        assert node.is_running and node.pid == pid
        assert cluster.unexpected_exits == []


def _nemesis(cluster: Cluster, rounds: int, seed: int, log: List[str]) -> None:
    rng = random.Random(seed)
    for i in range(rounds):
        target = rng.choice(cluster.node_ids)
        graceful = i % 2 == 0
        log.append(f"restart {target} graceful={graceful}")
        cluster.restart(target, graceful=graceful)
        cluster.wait_for_leader(timeout=10)
        time.sleep(rng.uniform(0.1, 0.3))


def test_chaos_nemesis_thread_restarts_nodes() -> None:
    """A nemesis thread (a fresh one per burst) restarts nodes while a worker
    writes; afterwards every node is alive, none died on its own, and the
    recorded history is linearizable."""
    seed = random.randrange(1 << 30)
    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        addrs = [n.client_addr for n in cluster.nodes]
        history = History(Client(addrs, timeout=1.0, retry_timeout=2.0), "w0")
        stop = threading.Event()

        def work() -> None:
            serial = 0
            while not stop.is_set():
                serial += 1
                try:
                    history.set("k", f"v{serial}")
                    history.get("k")
                except TitanStoreError:
                    time.sleep(0.02)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        faults: List[str] = []
        errors: List[BaseException] = []
        for burst in range(3):

            def run(burst: int = burst) -> None:
                try:
                    _nemesis(cluster, 2, seed + burst, faults)
                except BaseException as err:  # noqa: BLE001 - asserted below
                    errors.append(err)

            nemesis = threading.Thread(target=run, name=f"nemesis{burst}")
            nemesis.start()
            nemesis.join(timeout=60)
            assert not nemesis.is_alive()
        context = f"seed={seed} faults={faults} errors={errors}"
        assert errors == [], context
        # Every nemesis thread has exited: all nodes still up, a leader, writes go through.
        cluster.wait_for_leader(timeout=10)
        assert all(n.is_running for n in cluster.nodes), context
        assert cluster.unexpected_exits == [], context
        time.sleep(0.3)  # a healthy stretch after the last fault
        stop.set()
        worker.join(timeout=10)
        assert not worker.is_alive()
        history.client.close()
    result = history.check(timeout=20)
    assert result.ok, f"{history.explain(result)}\n{context}"
    assert history.counts()["ok"] >= 20, context
    print(f"{context} counts={history.counts()}")
