"""Client arguments, keys, values and limits are checked where they enter;
results are consistent; pipelines follow redirects."""

from __future__ import annotations

import time
from typing import List, Union

import pytest

from titanstore import Client, Cluster, DataError, History, NotLeaderError, TitanStoreError


def test_data_errors_are_titanstore_errors_and_value_errors(single_node: Cluster) -> None:
    assert issubclass(DataError, TitanStoreError) and issubclass(DataError, ValueError)
    with single_node.client() as client:
        keys: List[Union[str, bytes]] = ["", "has space", "tab\tkey", "new\nline", b"cr\r"]
        for key in keys:
            with pytest.raises(DataError, match="key"):
                client.set(key, "v")
            with pytest.raises(DataError):
                client.get(key)
        values: List[Union[str, bytes]] = ["two\nlines", "carriage\rreturn", b"\n"]
        for value in values:
            with pytest.raises(DataError, match=r"cannot contain \\n or \\r"):
                client.set("k", value)
            with pytest.raises(DataError):
                client.pipeline().set("k", value)
        assert client.get("k") is None


def test_client_arguments_are_checked_at_once() -> None:
    with pytest.raises(TypeError, match=r"addrs.*not int 6001"):
        Client(6001)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"'localhost' is not host:port"):
        Client("localhost")
    with pytest.raises(ValueError, match="valid port"):
        Client(["127.0.0.1:6001", "127.0.0.1:http"])
    with pytest.raises(ValueError, match="at least one address"):
        Client([])
    with pytest.raises(TypeError, match="timeout"):
        Client("127.0.0.1:6001", timeout="1")  # type: ignore[arg-type]
    assert time.monotonic() - started < 1


def test_over_limit_value_fails_in_the_client_naming_the_limit() -> None:
    with Cluster(nodes=1, max_line_bytes=256) as cluster:
        cluster.wait_for_leader(timeout=10)
        with cluster.client() as client:
            # A single write carries an exactly-once REQ header (at most 90 bytes).
            fits = "x" * (256 - len("SET k ") - 90)
            assert client.set("k", fits) is True
            assert client.get("k") == fits
            with pytest.raises(DataError, match=r"257 bytes.*over the server's limit of 256 bytes.*--max-line-bytes"):
                client.set("k", fits + "x")
            # A pipeline sends plain lines: up to the limit itself.
            plain = "y" * (256 - len("SET k "))
            assert client.pipeline().set("k", plain).execute() == [True]
            with pytest.raises(DataError, match="--max-line-bytes"):
                client.pipeline().set("k", plain + "y")
            assert client.get("k") == plain


def test_set_returns_true_everywhere_and_history_get_matches_client_get(single_node: Cluster) -> None:
    with single_node.client() as client:
        assert client.set("k", "v") is True
        assert client.pipeline().set("k", "v").execute() == [True]
        assert client.delete("k") is True
        history = History(client)
        assert history.set("k", "ünï") is True
        assert history.get("k") == client.get("k") == "ünï"
        assert history.get_bytes("k") == client.get_bytes("k") == "ünï".encode()
        assert history.delete("k") is True
        assert [op.kind for op in history.operations] == ["write", "read", "read", "delete"]


def test_pipeline_follows_not_leader_redirects() -> None:
    with Cluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader(timeout=10)
        follower = next(n for n in cluster.nodes if n.id != leader)
        cluster.wait_until(
            lambda: (s := follower.status()) is not None and s.leader == leader,
            timeout=10,
            what=f"{follower.id} to learn the leader",
        )
        # A client whose only address is a follower.
        with Client(follower.client_addr, timeout=2) as client:
            results = client.pipeline().set("a", "1").get("a").set("b", "2").delete("a").get("a").execute()
            assert results == [True, "1", True, True, None]
            assert client.addr == cluster.node(leader).client_addr
        # A cluster client whose first address is a follower.
        addrs = [follower.client_addr] + [n.client_addr for n in cluster.nodes if n is not follower]
        with Client(addrs) as client:
            assert client.pipeline().set("c", "3").get("c").execute() == [True, "3"]
        assert cluster.client().pipeline().get("b").execute() == ["2"]
        # Without redirects, the refusal is the result.
        with follower.client() as client:
            with pytest.raises(NotLeaderError):
                client.pipeline().set("d", "4").execute()
        # A first address that refuses connections gives way to the next.
        cluster.stop(follower.id)
        with Client(addrs) as client:
            assert client.pipeline().get("c").set("e", "5").execute() == ["3", True]
