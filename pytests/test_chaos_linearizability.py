"""The linearizability checker on hand-made histories, and how History
classifies outcomes (whole chaos runs: test_chaos_run.py)."""

from __future__ import annotations

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
    return [Operation(i, o.kind, o.key, o.value, o.call, o.ret, o.outcome) for i, o in enumerate(ops)]


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


def test_native_entry_validates_input() -> None:
    with pytest.raises(ValueError, match="kind"):
        check_kv_history([("cas", b"k", b"v", 0.0, 1.0, "ok")])
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
