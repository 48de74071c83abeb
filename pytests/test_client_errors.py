"""Each client exception, provoked for real."""

from __future__ import annotations

import socket
import threading
import time
from typing import List

import pytest

from titanstore import (
    Client,
    Cluster,
    IndeterminateError,
    NoLeaderError,
    NotLeaderError,
    TitanStoreConnectionError,
    TitanStoreError,
    TitanStoreTimeoutError,
)


def test_exception_hierarchy() -> None:
    assert issubclass(TitanStoreConnectionError, ConnectionError)
    assert issubclass(TitanStoreTimeoutError, TimeoutError)
    for cls in (NotLeaderError, NoLeaderError, IndeterminateError, TitanStoreConnectionError, TitanStoreTimeoutError):
        assert issubclass(cls, TitanStoreError)


def test_connection_refused_raises_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"127.0.0.1:{port}", timeout=1, retry_timeout=0)
    with pytest.raises(TitanStoreConnectionError):
        client.get("k")
    with pytest.raises(ConnectionError):
        client.ping()


def test_read_timeout_and_indeterminate_write_on_a_silent_server() -> None:
    # A server that accepts and never answers: a read times out, a write's
    # outcome is unknown.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        addr = f"127.0.0.1:{server.getsockname()[1]}"
        client = Client(addr, timeout=0.3, retry_timeout=0)
        start = time.monotonic()
        with pytest.raises(TitanStoreTimeoutError):
            client.get("k")
        assert time.monotonic() - start < 5
        with pytest.raises(IndeterminateError):
            client.set("k", "v")


def test_not_leader_error_carries_the_leader_address() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        follower = next(n for n in cluster.nodes if n.id != leader)
        # A majority follows the leader; wait until this follower knows it too.
        cluster.wait_until(
            lambda: (s := follower.status()) is not None and s.leader == leader,
            timeout=10,
            what=f"{follower.id} to learn the leader",
        )
        with follower.client() as client:
            with pytest.raises(NotLeaderError) as info:
                client.set("k", "v")
        assert info.value.leader_addr == cluster.node(leader).client_addr
        # A client that follows redirects gets there by itself.
        with Client(follower.client_addr) as client:
            client.set("k", "v")
            assert client.addr == cluster.node(leader).client_addr
            assert client.get("k") == "v"


def test_no_leader_error_when_the_majority_is_gone() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        others = [n.id for n in cluster.nodes if n.id != leader]
        survivor = others[0]
        cluster.kill(leader)
        cluster.kill(others[1])
        with Client(cluster.node(survivor).client_addr, timeout=2, retry_timeout=1) as client:
            with pytest.raises(NoLeaderError):
                client.set("k", "v")


def test_write_to_a_paused_node_is_indeterminate() -> None:
    with Cluster(nodes=1) as cluster:
        cluster.wait_for_leader(timeout=10)
        cluster.pause("node1")
        try:
            with Client(cluster.node("node1").client_addr, timeout=0.5, retry_timeout=0) as client:
                with pytest.raises(IndeterminateError):
                    client.set("k", "v")
        finally:
            cluster.resume("node1")


def test_client_is_usable_from_threads(single_node: Cluster) -> None:
    errors: List[BaseException] = []

    def work(n: int) -> None:
        try:
            with single_node.client() as client:
                for i in range(50):
                    client.set(f"t{n}:{i}", str(i))
                    assert client.get(f"t{n}:{i}") == str(i)
        except Exception as exc:  # noqa: BLE001 - collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_reading_the_address_never_freezes_python_threads_during_a_call() -> None:
    """`addr` and `close()` wait for the client lock with the GIL released: a
    call blocked on a paused node must not freeze every Python thread."""
    import threading
    import time

    from titanstore import Cluster, TitanStoreError

    with Cluster(nodes=1) as cluster:
        cluster.wait_for_leader(timeout=10)
        node = cluster.nodes[0]
        client = node.client(timeout=2.0)
        cluster.pause(node.id)
        try:
            started = threading.Event()

            def blocked_call() -> None:
                started.set()
                try:
                    client.get("k")
                except TitanStoreError:
                    pass

            worker = threading.Thread(target=blocked_call)
            worker.start()
            started.wait(5)
            slowest = 0.0
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                t0 = time.monotonic()
                assert client.addr == node.client_addr
                slowest = max(slowest, time.monotonic() - t0)
            worker.join(10)
            assert slowest < 0.5, f"reading addr took {slowest:.2f} s while a call was blocked"
        finally:
            cluster.resume(node.id)
            client.close()
