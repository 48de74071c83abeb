"""Membership from Python: grow, replace, remove the leader, transfer."""

from __future__ import annotations

import json
import shutil
import subprocess

from titanstore import Cluster


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
