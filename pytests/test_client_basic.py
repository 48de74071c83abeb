"""Client behaviour against a real single-node cluster."""

from __future__ import annotations

import pytest

from titanstore import Client, Cluster, ServerError


def test_set_get_delete_round_trip(single_node: Cluster) -> None:
    with single_node.client() as client:
        assert client.ping() is True
        assert client.get("missing") is None
        client.set("user:42", '{"name":"zen"}')
        assert client.get("user:42") == '{"name":"zen"}'
        assert client.sget("user:42") == '{"name":"zen"}'
        client.delete("user:42")
        assert client.get("user:42") is None
        client.delete("user:42")  # deleting a missing key is fine


@pytest.mark.parametrize(
    "value",
    ["", " ", "  lead and trail  ", "inner  spaces", "ünïcødé ✓ 漢字", "tab\tinside", '{"json": [1, 2]}'],
)
def test_values_survive_byte_for_byte(single_node: Cluster, value: str) -> None:
    with single_node.client() as client:
        client.set("k", value)
        assert client.get("k") == value


def test_bytes_keys_and_non_utf8_values(single_node: Cluster) -> None:
    with single_node.client() as client:
        raw = b"\xff\xfe\x00binary\xc3\x28"
        client.set(b"bin\xe9", raw)
        assert client.get_bytes(b"bin\xe9") == raw
        # As str, undecodable bytes survive through surrogateescape.
        text = client.get(b"bin\xe9")
        assert text is not None and text.encode("utf-8", "surrogateescape") == raw


def test_bad_input_is_rejected_before_it_reaches_the_wire(single_node: Cluster) -> None:
    with single_node.client() as client:
        for key in ["", "has space", "new\nline"]:
            with pytest.raises(ValueError):
                client.set(key, "v")
        with pytest.raises(ValueError):
            client.set("k", "two\nlines")
        with pytest.raises(TypeError):
            client.set("k", 42)  # type: ignore[arg-type]
        # The connection is still fine afterwards, and nothing was injected.
        assert client.get("k") is None


def test_server_errors_keep_the_connection(single_node: Cluster) -> None:
    with single_node.client() as client:
        pipe = client.pipeline().set("a", "1").get("a").delete("a").get("a")
        assert pipe.execute() == [True, "1", True, None]


def test_pipeline_many_commands_in_order(single_node: Cluster) -> None:
    with single_node.client() as client:
        pipe = client.pipeline()
        for i in range(500):
            pipe.set(f"k{i}", f"v{i}")
        assert len(pipe) == 500
        assert pipe.execute() == [True] * 500
        pipe = client.pipeline()
        for i in range(500):
            pipe.get(f"k{i}")
        assert pipe.execute() == [f"v{i}" for i in range(500)]


def test_status_is_typed(single_node: Cluster) -> None:
    with single_node.client() as client:
        client.set("k", "v")  # committed and applied once this returns
        status = client.status()
    assert status.id == "node1"
    assert status.is_leader and status.role == "leader"
    assert status.leader == "node1"
    assert status.term >= 1
    assert status.commit >= 1 and status.applied >= 1
    assert status.client_addr == single_node.node("node1").client_addr


def test_client_rejects_empty_address_list() -> None:
    with pytest.raises(ValueError):
        Client([])


def test_server_error_type_exists_for_refusals() -> None:
    assert issubclass(ServerError, Exception)
