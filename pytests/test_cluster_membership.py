"""Membership from Python: grow, replace, remove the leader, transfer."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Callable

import pytest

from titanstore import Cluster, HarnessError


def test_grow_three_to_five_while_writing_then_every_write_is_on_every_member() -> None:
    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        written = {}
        with cluster.client() as client:
            for i in range(20):
                client.set(f"k{i}", f"v{i}")
                written[f"k{i}"] = f"v{i}"
            added = [cluster.add_node(), cluster.add_node()]
            for i in range(20, 40):
                client.set(f"k{i}", f"v{i}")
                written[f"k{i}"] = f"v{i}"
            members = client.members()
        assert sorted(m.id for m in members if m.voter) == sorted(["node1", "node2", "node3", *added])
        for node in cluster.nodes:
            with node.client(retry_timeout=5.0) as c:
                # Applied everywhere soon after commit; stale reads show the node's own state.
                cluster.wait_until(lambda: c.sget("k39") == "v39", 10, f"{node.id} to catch up")
                for k, v in written.items():
                    assert c.sget(k) == v, (node.id, k)


def test_replace_a_node_whose_disk_is_gone() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        victim = next(n.id for n in cluster.nodes if n.id != leader)
        with cluster.client() as client:
            client.set("before", "1")
            cluster.replace_node(victim)
            client.set("after", "2")
        with cluster.node(victim).client(retry_timeout=5.0, follow_redirects=True) as c:
            assert c.get("before") == "1"
            assert c.get("after") == "2"


def test_remove_the_leader_and_transfer_leadership() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        cluster.remove_node(leader)
        assert leader not in cluster.node_ids
        new_leader = cluster.wait_for_leader(timeout=10)
        with cluster.client() as client:
            client.set("k", "v")
            assert [m.id for m in client.members()] == sorted(cluster.node_ids)
        target = next(i for i in cluster.node_ids if i != new_leader)
        assert cluster.transfer_leader(target) == target
        with cluster.client() as client:
            assert client.get("k") == "v"


def test_titanstore_ctl_is_installed_with_the_package() -> None:
    ctl = shutil.which("titanstore-ctl")
    assert ctl is not None, "the wheel did not install titanstore-ctl"
    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        endpoints = ",".join(n.client_addr for n in cluster.nodes)
        run = subprocess.run(
            [ctl, "--endpoints", endpoints, "--json", "members"], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        members = json.loads(run.stdout)
        assert sorted(m["id"] for m in members) == ["node1", "node2", "node3"]
        bad = subprocess.run([ctl, "--endpoints", endpoints, "member", "remove", "nobody"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "unknown member" in bad.stderr


def _holds(window: float, probe: Callable[[], bool]) -> bool:
    """True when ``probe`` stays true at every poll for ``window`` seconds."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        if not probe():
            return False
        time.sleep(0.05)
    return True


def test_isolating_an_added_node_cuts_both_directions() -> None:
    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        added = cluster.add_node()
        others = [n for n in cluster.node_ids if n != added]
        # Every running process reaches the new node through its proxy.
        assert all(added in cluster.node(n).routed for n in others)
        assert set(others) <= cluster.node(added).routed
        local = cluster.node(added).client(retry_timeout=5.0)
        with cluster.client() as client, local:
            client.set("before", "1")
            cluster.wait_until(lambda: local.sget("before") == "1", 10, f"{added} to apply 'before'")
            cluster.isolate(added)
            # Three of four voters still commit; the isolated node hears nothing.
            client.set("during", "2")
            assert _holds(1.5, lambda: local.sget("during") is None), f"{added} got a write while isolated"
            cluster.heal()
            cluster.wait_until(lambda: local.sget("during") == "2", 10, f"{added} to catch up after the heal")

            # An added node that leads loses leadership when isolated, and
            # never hears of the leader elected without it.
            assert cluster.transfer_leader(added) == added
            cluster.isolate(added, mode="blackhole")
            new_leader = cluster.wait_until(
                lambda: (lead if (lead := cluster.leader()) in others else None), 10, "a leader among the others"
            )
            cluster.wait_until(
                lambda: (s := cluster.node(added).status()) is not None and not s.is_leader,
                10,
                f"{added} to step down",
            )
            client.set("after", "3")
            assert _holds(1.0, lambda: (s := cluster.node(added).status()) is not None and s.leader != new_leader)
            assert local.sget("after") is None
            cluster.heal()
            cluster.wait_until(lambda: local.sget("after") == "3", 10, f"{added} to catch up after the heal")


def test_links_to_a_node_added_past_the_spare_ids_refuse_one_sided_faults() -> None:
    with Cluster(nodes=3, spare_nodes=0) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        late = cluster.add_node()
        assert late == "node4" and "node4" not in cluster.node("node1").routed
        with pytest.raises(HarnessError, match="cannot be cut both ways"):
            cluster.isolate(late)
        assert all(p.mode == "pass" for p in cluster._proxies.values())
        cluster.restart("node1")
        cluster.cut("node1", late)  # node1 now dials node4 through its proxy
        cluster.heal()
        # A removed id goes back to the pool: the next node takes it, empty, routed from everyone.
        victim = next(n for n in ("node2", "node3") if n != leader)
        cluster.remove_node(victim)
        assert cluster.add_node() == victim
        assert all(victim in cluster.node(n).routed for n in cluster.node_ids if n != victim)
        cluster.isolate(victim)
        cluster.heal()
        with cluster.client() as client:
            client.set("k", "v")
        with cluster.node(victim).client(retry_timeout=5.0) as c:
            cluster.wait_until(lambda: c.sget("k") == "v", 10, f"{victim} to apply the write")
