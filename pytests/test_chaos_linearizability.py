"""The linearizability checker on hand-made histories, and how History
classifies outcomes (whole chaos runs: test_chaos_run.py)."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import List, Optional

import pytest

from titanstore import (
    Client,
    History,
    IndeterminateError,
    NoLeaderError,
    NotLeaderError,
    Operation,
    ServerError,
    TitanStoreError,
    TitanStoreTimeoutError,
    check_operations,
)
from titanstore._titanstore import check_kv_history

INF = math.inf


def op(kind: str, key: str, value: Optional[str], call: float, ret: float, outcome: str = "ok") -> Operation:
    data = value.encode() if value is not None else None
    return Operation(0, kind, key.encode(), data, call, ret, outcome)


def numbered(*ops: Operation) -> List[Operation]:
    return [dataclasses.replace(o, index=i) for i, o in enumerate(ops)]


# ----- the checker on hand-made histories ---------------------------------


def test_concurrent_linearizable_history_passes() -> None:
    ops = numbered(
        op("write", "x", "a", 0, 10),
        op("read", "x", "a", 1, 4),  # overlaps the write: may see it
        op("read", "x", None, 2, 3),  # ...or not yet
        op("write", "x", "b", 5, 15),
        op("read", "x", "b", 6, 7),
        op("read", "x", "b", 16, 17),
        op("write", "y", "1", 0, 1),
        op("delete", "y", None, 2, 3),
        op("read", "y", None, 4, 5),
    )
    # x: read None at 2.5, write(a) at 3.5, read a at 3.8, write(b) at 6, ...
    result = check_operations(ops)
    assert result.ok, result.explanation
    assert result.verdict == "ok"
    assert result.keys == {b"x": "ok", b"y": "ok"}
    assert result.key is None and result.ops == []
    assert result.checked == len(ops)


def test_stale_read_after_completed_write_fails() -> None:
    ops = numbered(
        op("write", "x", "a", 0, 1),
        op("write", "x", "b", 2, 3),
        op("read", "x", "a", 4, 5),  # b completed before this read began
        op("write", "other", "z", 0, 1),
    )
    result = check_operations(ops)
    assert not result.ok
    assert result.verdict == "violation"
    assert result.key == b"x"
    assert result.keys == {b"x": "violation", b"other": "ok"}
    assert 2 in result.ops
    assert "read" in result.explanation


def test_unknown_write_that_shows_up_later_passes() -> None:
    ops = numbered(
        op("write", "x", "a", 0, 1),
        op("write", "x", "b", 2, INF, "unknown"),  # timed out
        op("read", "x", "a", 3, 4),  # not applied yet...
        op("read", "x", "b", 10, 11),  # ...then it was
        op("read", "x", "b", 12, 13),
    )
    assert check_operations(ops).ok
    # The same write reported as failed cannot be read.
    failed = list(ops)
    failed[1] = Operation(1, "write", b"x", b"b", 2, 2.5, "fail")
    assert check_operations(failed).verdict == "violation"
    # And an unknown write cannot take effect before its call.
    early = list(ops)
    early[2] = op("read", "x", "b", 0.5, 1.5)
    assert check_operations(early).verdict == "violation"


def test_read_of_value_never_written_fails() -> None:
    ops = numbered(op("write", "x", "a", 0, 1), op("read", "x", "ghost", 2, 3))
    result = check_operations(ops)
    assert result.verdict == "violation"
    assert result.ops == [1]
    assert "no write" in result.explanation


def test_failed_ops_and_unknown_reads_are_ignored() -> None:
    ops = numbered(
        op("write", "x", "a", 0, 1),
        op("read", "x", "zzz", 2, INF, "unknown"),
        op("read", "x", "zzz", 2, 3, "fail"),
        op("delete", "x", None, 2, 3, "fail"),
        op("read", "x", "a", 4, 5),
    )
    assert check_operations(ops).ok


def cas(expected: Optional[str], value: Optional[str], call: float, ret: float, outcome: str = "ok") -> Operation:
    swapped = op("cas", "c", value, call, ret, outcome)
    return Operation(0, "cas", b"c", swapped.value, call, ret, outcome, expected=expected.encode() if expected else None)


def conflict(expected: Optional[str], call: float, ret: float) -> Operation:
    return Operation(0, "cas-conflict", b"c", None, call, ret, "ok", expected=expected.encode() if expected else None)


def test_compare_and_set_histories() -> None:
    start = op("write", "c", "0", 0, 1)
    # Two CASes from the same value cannot both swap.
    double = numbered(start, cas("0", "1", 2, 3), cas("0", "2", 4, 5))
    result = check_operations(double)
    assert result.verdict == "violation"
    assert "cas(" in result.explanation
    # A conflict needs another value there; a swap needs the expected one.
    fine = numbered(start, cas("0", "1", 2, 3), conflict("0", 4, 5), cas("1", "2", 6, 7), op("read", "c", "2", 8, 9))
    assert check_operations(fine).ok
    assert not check_operations(numbered(start, conflict("0", 2, 3))).ok
    # A CAS with an unknown outcome may have swapped, or not.
    for seen in ("0", "1"):
        maybe = numbered(start, cas("0", "1", 2, INF, "unknown"), op("read", "c", seen, 4, 5))
        assert check_operations(maybe).ok, seen


def test_native_entry_validates_input() -> None:
    with pytest.raises(ValueError, match="kind"):
        check_kv_history([("swap", b"k", b"v", 0.0, 1.0, "ok")])
    with pytest.raises(ValueError, match="cas-conflict"):
        check_kv_history([("cas-conflict", b"k", b"v", 0.0, 1.0, "unknown", b"a")])
    with pytest.raises(ValueError, match="outcome"):
        check_kv_history([("read", b"k", b"v", 0.0, 1.0, "maybe")])
    with pytest.raises(ValueError, match="after its call"):
        check_kv_history([("write", b"k", b"v", 2.0, 1.0, "ok")])
    assert check_kv_history([]).ok


def test_many_concurrent_ops_check_fast() -> None:
    """A few hundred ops per key with 6 overlapping writers/readers and
    unknown writes: the memoized search must finish quickly."""
    rng = random.Random(7)
    ops: List[Operation] = []
    for key in ("a", "b"):
        value: Optional[str] = None
        t = 0.0
        serial = 0
        for _ in range(400):
            # Each op takes effect at t; its interval is stretched both ways.
            t += rng.uniform(0.1, 1.0)
            call, ret = t - rng.uniform(0, 3), t + rng.uniform(0, 3)
            roll = rng.random()
            if roll < 0.45:
                ops.append(op("read", key, value, call, ret))
            elif roll < 0.9:
                serial += 1
                value = f"{key}{serial}"
                outcome = "unknown" if rng.random() < 0.1 else "ok"
                ops.append(op("write", key, value, call, INF if outcome == "unknown" else ret, outcome))
            else:
                value = None
                ops.append(op("delete", key, None, call, ret))
    ops = numbered(*ops)
    started = time.monotonic()
    result = check_operations(ops, timeout=20)
    assert result.ok, result.explanation
    assert time.monotonic() - started < 5


# The whole-cluster chaos run lives in test_chaos_run.py (titanstore.chaos.run).


def test_history_classifies_outcomes() -> None:
    class Scripted(Client):
        """A client whose calls raise the errors it is given."""

        def __init__(self) -> None:
            self.errors: List[Optional[BaseException]] = []

        def _next(self) -> None:
            error = self.errors.pop(0)
            if error is not None:
                raise error

        def set(self, key: object, value: object) -> bool:
            self._next()
            return True

        def delete(self, key: object) -> bool:
            self._next()
            return True

        def get_bytes(self, key: object) -> Optional[bytes]:
            self._next()
            return b"v"

        @property
        def addr(self) -> str:
            return "scripted"

    client = Scripted()
    history = History(client, "p")
    client.errors = [
        None,
        IndeterminateError("lost"),
        TitanStoreTimeoutError("slow"),
        NotLeaderError("no", "x:1"),
        NoLeaderError("none"),
        ServerError("DROPPED"),
        None,
        TitanStoreTimeoutError("slow"),
        IndeterminateError("lost"),
    ]
    history.set("k", "1")
    for _ in range(5):
        with pytest.raises(TitanStoreError):
            history.set("k", "2")
    assert history.get("k") == "v"  # str, as Client.get returns
    with pytest.raises(TitanStoreError):
        history.get_bytes("k")
    with pytest.raises(TitanStoreError):
        history.delete("k")
    outcomes = [(o.kind, o.outcome) for o in history.operations]
    assert outcomes == [
        ("write", "ok"),
        ("write", "unknown"),
        ("write", "unknown"),
        ("write", "fail"),
        ("write", "fail"),
        ("write", "fail"),
        ("read", "ok"),
        ("read", "fail"),
        ("delete", "unknown"),
    ]
    assert math.isinf(history.operations[1].ret)
    assert history.operations[6].value == b"v"
    assert history.counts() == {"ok": 2, "fail": 4, "unknown": 3}


def test_cas_counter_on_a_cluster_is_linearizable() -> None:
    """Four clients increment one counter by get_rev + cas (retrying on
    CONFLICT) through History; the leader is killed midway. The history,
    CAS answers included, is linearizable and the count matches the swaps."""
    import threading

    from titanstore import Cluster, ConflictError

    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        history = History(cluster.client(timeout=2, retry_timeout=5), "setup")
        history.set("c", "0")
        swaps: List[int] = []

        def worker(name: str) -> None:
            view = history.with_client(cluster.client(timeout=2, retry_timeout=5), name)
            done = 0
            while done < 40:
                try:
                    found = view.get_rev("c")
                    assert found is not None
                    view.cas("c", f"{int(found[0].split('-')[0]) + 1}-{name}-{done}", found[1])
                    done += 1
                except ConflictError:
                    continue
                except TitanStoreError:
                    time.sleep(0.05)
            swaps.append(done)

        threads = [threading.Thread(target=worker, args=(f"p{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        # The leader dies while the clients are at it.
        cluster.wait_until(lambda: len(history) > 60, timeout=20, what="some swaps")
        cluster.kill(cluster.wait_for_leader(timeout=10))
        for t in threads:
            t.join(timeout=60)
        result = history.check()
        assert result.ok, history.explain(result)
        kinds = {op.kind for op in history.operations}
        assert "cas" in kinds and "cas-conflict" in kinds, kinds
        assert all(t.is_alive() is False for t in threads)
        final = history.get("c")
        assert final is not None
        # Every swap (and only swaps, exactly once each) moved the counter.
        unknown = sum(1 for op in history.operations if op.kind == "cas" and op.outcome == "unknown")
        assert sum(swaps) <= int(final.split("-")[0]) <= sum(swaps) + unknown
