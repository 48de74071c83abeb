"""Revisions, compare-and-set, scans and watches through the Python client."""

from __future__ import annotations

import pytest

from titanstore import Cluster, ConflictError


def test_get_rev_cas_cad(single_node: Cluster) -> None:
    with single_node.client() as client:
        assert client.get_rev("k") is None
        rev = client.cas("k", "a", 0)
        assert client.get_rev("k") == ("a", rev)
        with pytest.raises(ConflictError) as info:
            client.cas("k", "b", 0)
        assert info.value.current_rev == rev
        rev2 = client.cas("k", "b", rev)
        assert rev2 > rev
        with pytest.raises(ConflictError) as info:
            client.cad("k", rev)
        assert info.value.current_rev == rev2
        assert client.cad("k", rev2) > rev2
        assert client.get("k") is None
        with pytest.raises(ValueError):
            client.cad("k", 0)


def test_scan_pages_and_watch_replays_history(single_node: Cluster) -> None:
    with single_node.client() as client:
        for i in range(7):
            client.set(f"dir/{i}", f"v{i}")
        client.set("other", "x")
        client.delete("dir/3")
        items = list(client.scan("dir/", limit=2))
        assert [i.key for i in items] == [f"dir/{i}" for i in (0, 1, 2, 4, 5, 6)]
        assert all(i.value == "v" + i.key[-1] for i in items)
        assert len(list(client.scan(limit=10000))) == 7
        with pytest.raises(ValueError):
            list(client.scan(limit=0))
        # SCAN then WATCH <revision + 1> sees every later change once.
        revision = items[0].revision
        first = client.get_rev("dir/0")
        assert first is not None
        events = client.watch("dir/", start_rev=first[1])
        seen = [next(events) for _ in range(8)]
        assert [(e.kind, e.key) for e in seen] == [("set", f"dir/{i}") for i in range(7)] + [
            ("delete", "dir/3")
        ]
        assert seen[-1].rev <= revision
        client.set("dir/new", "live")
        live = next(e for e in events if e.kind != "progress")
        assert (live.kind, live.key, live.value) == ("set", "dir/new", "live")
        assert live.rev > revision
        events.close()
