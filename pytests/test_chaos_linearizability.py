"""Linearizability under faults: the checker itself on hand-made histories,
then a randomized chaos run (kills, pauses, partitions, isolated followers)
whose recorded client history must be linearizable."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import List, Optional, Tuple

import pytest

from titanstore import (
    Client,
    Cluster,
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


# ----- a real cluster under faults ----------------------------------------

KEYS = [f"key{i}" for i in range(5)]
WORKERS = 5
FAULT_SECONDS = 16.0


def _worker(history: History, worker: int, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    serial = 0
    while not stop.is_set():
        key = rng.choice(KEYS)
        roll = rng.random()
        try:
            if roll < 0.5:
                history.get(key)
            elif roll < 0.9:
                serial += 1
                history.set(key, f"w{worker}-{serial}")
            else:
                history.delete(key)
        except TitanStoreError:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.012))


def _nemesis(cluster: Cluster, stop_at: float, rng: random.Random, log: List[str]) -> None:
    """Cycles through faults until ``stop_at``; every fault is undone before the next.

    Odd rounds pause a follower instead of the leader and swallow traffic
    (blackhole, so requests time out) instead of refusing it (reset).
    """
    faults = ["kill-leader", "pause", "partition-leader", "isolate-follower"]
    step = 0
    while time.monotonic() < stop_at - 1.5:
        fault = faults[step % len(faults)]
        odd_round = (step // len(faults)) % 2 == 1
        step += 1
        leader = cluster.leader() or rng.choice(cluster.node_ids)
        follower = rng.choice([n for n in cluster.node_ids if n != leader])
        mode = "blackhole" if odd_round else "reset"
        target = follower if fault == "isolate-follower" or (fault == "pause" and odd_round) else leader
        hold = rng.uniform(0.8, 1.6)
        log.append(f"{time.monotonic():.3f} {fault} {target} (leader {leader}, {mode}) for {hold:.2f}s")
        if fault == "kill-leader":
            cluster.kill(target)
            time.sleep(hold)
            cluster.start(target)
        elif fault == "pause":
            cluster.pause(target)
            time.sleep(hold)
            cluster.resume(target)
        elif fault == "partition-leader":
            cluster.partition({target}, set(cluster.node_ids) - {target}, mode=mode)
            time.sleep(hold)
            cluster.heal()
        else:
            cluster.isolate(target, mode=mode)
            time.sleep(hold)
            cluster.heal()
        time.sleep(rng.uniform(0.3, 0.8))


def _stale_read_corruption(ops: List[Operation]) -> Optional[Tuple[int, bytes]]:
    """An ok read and a value it would be stale to return: one written by an
    ok write that another ok write entirely followed, before the read began."""
    for read in reversed(ops):
        if read.kind != "read" or read.outcome != "ok":
            continue
        writes = [w for w in ops if w.kind == "write" and w.outcome == "ok" and w.key == read.key]
        for old in writes:
            if old.value == read.value:
                continue
            if any(w.call > old.ret and w.ret < read.call for w in writes):
                assert old.value is not None
                return read.index, old.value
    return None


def test_chaos_history_is_linearizable() -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with Cluster(nodes=3) as cluster:
        cluster.wait_for_leader(timeout=10)
        addrs = [n.client_addr for n in cluster.nodes]
        clients = [Client(addrs, timeout=1.0, retry_timeout=0.5) for _ in range(WORKERS)]
        history = History(clients[0], "w0")
        stop = threading.Event()
        workers = [
            threading.Thread(
                target=_worker,
                args=(history.with_client(c, f"w{i}"), i, stop, rng.randrange(1 << 30)),
                name=f"w{i}",
                daemon=True,
            )
            for i, c in enumerate(clients)
        ]
        faults: List[str] = []
        started = time.monotonic()
        for w in workers:
            w.start()
        try:
            _nemesis(cluster, started + FAULT_SECONDS, rng, faults)
        finally:
            cluster.heal()
            for node in cluster.nodes:
                if node.paused:
                    cluster.resume(node.id)
            cluster.start()
        cluster.wait_for_leader(timeout=10)
        time.sleep(1.0)  # a healthy stretch: reads after the faults
        stop.set()
        for w in workers:
            w.join(timeout=10)
            assert not w.is_alive()
        for c in clients:
            c.close()
        logs = cluster.logs(lines=15)

    ops = history.operations
    counts = history.counts()
    result = history.check(timeout=20)
    context = f"seed={seed} counts={counts}\nfaults:\n" + "\n".join(faults)
    assert result.ok, f"{history.explain(result)}\n{context}\n{logs}"
    assert len(faults) >= 4, context
    ok_reads = sum(1 for o in ops if o.kind == "read" and o.outcome == "ok")
    ok_writes = sum(1 for o in ops if o.kind != "read" and o.outcome == "ok")
    assert ok_reads >= 100 and ok_writes >= 100, context
    print(f"{context}\nchecked={result.checked} elapsed={result.elapsed:.3f}s")
    assert result.elapsed < 10, context

    # The checker must reject the same history with one stale read in it...
    found = _stale_read_corruption(ops)
    assert found is not None, context
    index, stale = found
    corrupted = list(ops)
    corrupted[index] = ops[index].with_value(stale)
    bad = check_operations(corrupted, timeout=20)
    assert bad.verdict == "violation", f"{bad!r}\n{context}"
    assert bad.key == ops[index].key
    # ...and with a read of a value nobody wrote.
    corrupted[index] = ops[index].with_value(b"never-written")
    assert check_operations(corrupted).verdict == "violation"


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
