"""Starting clusters: readiness means this node's own process answers, and
arguments are checked where they enter."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
from typing import Callable, Dict, Iterator, List

import pytest

from titanstore import Cluster, HarnessError


def _free_base_port() -> int:
    """A base port whose raft (base+i) and client (base+100+i) ports are free."""
    for base in range(24_000 + os.getpid() % 2000, 30_000, 7):
        ports = [base + i for i in range(3)] + [base + 100 + i for i in range(3)]
        try:
            socks: List[socket.socket] = []
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise AssertionError("no free base port")


def _temp_dirs() -> List[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "titanstore-*"))


def test_second_cluster_on_the_same_ports_fails_to_start() -> None:
    base = _free_base_port()
    with Cluster(nodes=3, base_port=base) as first:
        first.wait_for_leader(timeout=10)
        first.client().set("owner", "first")
        with pytest.raises(HarnessError) as info:
            with Cluster(nodes=3, base_port=base) as second:
                second.client().set("owner", "second")  # must never get here
        err = info.value
        message = str(err)
        assert "node1 exited during start-up with exit code" in message, message
        assert "in use" in message, message
        assert len(message) < 300, message
        assert "Address already in use" in err.logs
        # The first cluster is untouched.
        assert all(n.is_running for n in first.nodes)
        assert first.client().get("owner") == "first"
        assert first.unexpected_exits == []


def test_bad_node_flag_value_fails_start_naming_node_and_exit_code() -> None:
    with pytest.raises(HarnessError) as info:
        with Cluster(nodes=1, heartbeat_ms=10_000):
            pass
    message = str(info.value)
    assert message.startswith("node1 exited during start-up with exit code 2"), message
    assert "heartbeat" in message and len(message) < 300
    assert "heartbeat" in info.value.logs


def test_misspelt_node_flag_is_a_clear_error_before_anything_starts() -> None:
    before = _temp_dirs()
    with pytest.raises(TypeError, match=r"unknown node flag 'heartbeat_msec'.*did you mean heartbeat_ms\?"):
        Cluster(nodes=1, heartbeat_msec=50)
    with pytest.raises(ValueError, match="set by the harness"):
        Cluster(nodes=1, peers="x")
    assert _temp_dirs() == before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nodes": "3"}, TypeError, r"nodes=.*int, not str"),
        ({"nodes": 2.5}, TypeError, r"nodes=.*int, not float"),
        ({"nodes": True}, TypeError, r"nodes=.*int, not bool"),
        ({"nodes": 0}, ValueError, r"nodes=.*at least 1"),
        ({"base_port": "6000"}, TypeError, r"base_port"),
        ({"base_port": 70_000}, ValueError, r"base_port"),
        ({"startup_timeout": -1}, ValueError, r"startup_timeout"),
        ({"binary": "/nonexistent/titanstore-server"}, ValueError, r"binary"),
    ],
)
def test_cluster_arguments_are_checked_without_leaking_a_temp_dir(
    kwargs: dict, error: type, match: str  # type: ignore[type-arg]
) -> None:
    before = _temp_dirs()
    with pytest.raises(error, match=match):
        Cluster(**kwargs)
    assert _temp_dirs() == before


@pytest.fixture
def unstarted() -> Iterator[Cluster]:
    """Three nodes' proxies, no node processes: enough to check arguments."""
    cluster = Cluster(nodes=3)
    try:
        yield cluster
    finally:
        cluster.close()


def test_calls_that_would_do_nothing_raise(unstarted: Cluster) -> None:
    c = unstarted
    with pytest.raises(ValueError, match="both ends"):
        c.set_latency(50, "node1")
    with pytest.raises(ValueError, match=">= 0"):
        c.set_latency(-5)
    with pytest.raises(TypeError, match="ms"):
        c.set_latency(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'node1' is in group 1 and group 2"):
        c.partition({"node1", "node2"}, {"node1", "node3"})
    with pytest.raises(TypeError, match=r"group 1 must be a collection of node ids.*not str 'node1'"):
        c.partition("node1", {"node2", "node3"})
    with pytest.raises(ValueError, match="no node 'node9'"):
        c.partition({"node9"})
    with pytest.raises(ValueError, match="twice"):
        c.cut("node1", "node1")
    with pytest.raises(ValueError, match="mode"):
        c.isolate("node1", mode="drop")
    with pytest.raises(TypeError, match="node id must be a str"):
        c.kill({"node1"})  # type: ignore[arg-type]


def test_every_call_after_close_says_the_cluster_is_closed() -> None:
    cluster = Cluster(nodes=2)
    cluster.close()
    calls: Dict[str, Callable[[], object]] = {
        "start": lambda: cluster.start(),
        "start(node)": lambda: cluster.start("node1"),
        "restart": lambda: cluster.restart("node1"),
        "kill": lambda: cluster.kill("node1"),
        "stop": lambda: cluster.stop("node1"),
        "pause": lambda: cluster.pause("node1"),
        "resume": lambda: cluster.resume("node1"),
        "client": lambda: cluster.client(),
        "statuses": lambda: cluster.statuses(),
        "leader": lambda: cluster.leader(),
        "wait_for_leader": lambda: cluster.wait_for_leader(timeout=1),
        "cut": lambda: cluster.cut("node1", "node2"),
        "connect": lambda: cluster.connect("node1", "node2"),
        "isolate": lambda: cluster.isolate("node1"),
        "partition": lambda: cluster.partition({"node1"}),
        "heal": lambda: cluster.heal(),
        "set_latency": lambda: cluster.set_latency(5),
    }
    for name, call in calls.items():
        with pytest.raises(HarnessError, match="^cluster is closed$"):
            call()
            pytest.fail(f"{name} after close did not raise")
    with pytest.raises(HarnessError, match="cluster is closed"):
        with cluster:
            pass
