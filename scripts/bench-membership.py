#!/usr/bin/env python3
"""Membership figures on a local 3-node cluster (issue 11). Not a test: the
numbers depend on the machine; run it on a quiet one, with release binaries.

    cargo build --release -p titanstore-core --bins
    python scripts/bench-membership.py --binary target/release/titanstore-server

1. Loads ``--keys`` keys of ``--value-bytes`` bytes (pipelined SETs from
   ``--loaders`` threads).
2. Catch-up: ``Cluster.add_node()`` starts an empty node with ``--join``;
   the time from its start until ``MEMBER LIST`` shows it as a voter, and
   until it applied the leader's commit index as of that moment.
3. Write unavailability: one client writes sequentially all along (a SET
   after each OK, through a client of the current members that follows
   redirects and retries); for each event, the longest gap between two OKs
   it saw around the event. Events: ``--transfers`` ``TRANSFER`` to the
   next voter, then ``--removals`` removals of the leader (each followed by
   adding a fresh node, whose catch-up is measured too).

Every link goes through the harness's proxies (the Rust ones of the
installed package: install it in release for this, ``pip install .``).
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import sys
import threading
import time
from typing import List, Optional, Tuple

from titanstore import Client, Cluster, TitanStoreError


class Writer(threading.Thread):
    """Sequential SETs; records the monotonic time of every OK."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.cluster = cluster
        self.oks: List[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.members_changed = threading.Event()

    def _client(self) -> Client:
        return Client([n.client_addr for n in self.cluster.nodes], timeout=2.0, retry_timeout=30.0)

    def run(self) -> None:
        client = self._client()
        i = 0
        try:
            while not self.stop.is_set():
                if self.members_changed.is_set():
                    self.members_changed.clear()
                    client.close()
                    client = self._client()
                i += 1
                try:
                    client.set(f"w{i % 1000}", f"v{i}")
                    self.oks.append(time.monotonic())
                except TitanStoreError:
                    self.errors += 1
        finally:
            client.close()

    def ok_after(self, t: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.oks and self.oks[-1] > t):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no write succeeded within {timeout} s of the event")
            time.sleep(0.01)

    def max_gap(self, start: float, end: float) -> float:
        """The longest gap between consecutive OKs from the last OK before
        ``start`` to the first OK after ``end``."""
        self.ok_after(end)
        oks = list(self.oks)
        lo = max(bisect.bisect_left(oks, start) - 1, 0)
        hi = bisect.bisect_right(oks, end)
        window = oks[lo : hi + 1]
        return max((b - a for a, b in zip(window, window[1:])), default=0.0)


def load(cluster: Cluster, keys: int, value_bytes: int, loaders: int, batch: int) -> Tuple[float, int]:
    """Returns the seconds it took and how many batches had to be sent again
    (a SET of the same value is safe to repeat)."""
    started = time.monotonic()
    value = "x" * value_bytes
    errors: List[BaseException] = []
    resent = [0]

    def work(first: int) -> None:
        try:
            with cluster.client(timeout=30.0, retry_timeout=60.0) as client:
                for lo in range(first * batch, keys, loaders * batch):
                    for attempt in range(10):
                        pipe = client.pipeline()
                        for k in range(lo, min(lo + batch, keys)):
                            pipe.set(f"key{k:08d}", value)
                        try:
                            pipe.execute()
                            break
                        except TitanStoreError:
                            if attempt == 9:
                                raise
                            resent[0] += 1
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(loaders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started, resent[0]


def catch_up(cluster: Cluster, writer: Writer) -> Tuple[str, float, float]:
    """Adds a node; returns its id, seconds to voter, seconds to applied."""
    started = time.monotonic()
    node_id = cluster.add_node(timeout=1800)
    voter = time.monotonic() - started
    leader = cluster.wait_for_leader(timeout=30)
    target = cluster.node(leader).status()
    assert target is not None
    node = cluster.node(node_id)
    cluster.wait_until(
        lambda: (s := node.status(timeout=5.0)) is not None and s.applied >= target.commit,
        1800,
        f"{node_id} to apply index {target.commit}",
    )
    applied = time.monotonic() - started
    writer.members_changed.set()
    return node_id, voter, applied


def summary(name: str, gaps: List[float]) -> str:
    ms = [g * 1000 for g in gaps]
    return f"{name}: max {max(ms):.0f} ms, median {statistics.median(ms):.0f} ms over {len(ms)} ({', '.join(f'{m:.0f}' for m in ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.environ.get("TITANSTORE_SERVER_BIN"), help="titanstore-server to run")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--loaders", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--transfers", type=int, default=5)
    parser.add_argument("--removals", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="where the nodes' data goes (default: a temp dir)")
    args = parser.parse_args()

    with Cluster(nodes=3, binary=args.binary, data_dir=args.data_dir, startup_timeout=120) as cluster:
        cluster.wait_for_leader(timeout=30)
        took, resent = load(cluster, args.keys, args.value_bytes, args.loaders, args.batch)
        print(
            f"loaded {args.keys} keys of {args.value_bytes} B in {took:.1f} s ({args.keys / took:.0f} keys/s; "
            f"{resent} batches sent again after an error)"
        )
        sys.stdout.flush()
        writer = Writer(cluster)
        writer.start()
        writer.ok_after(time.monotonic())
        catches: List[Tuple[str, float, float]] = []
        node_id, voter, applied = catch_up(cluster, writer)
        catches.append((node_id, voter, applied))
        print(f"catch-up: {node_id} a voter {voter:.1f} s after start, applied the commit index at {applied:.1f} s")
        sys.stdout.flush()

        transfers: List[float] = []
        for _ in range(args.transfers):
            leader = cluster.wait_for_leader(timeout=30)
            voters = sorted(cluster.node_ids)
            target = voters[(voters.index(leader) + 1) % len(voters)]
            start = time.monotonic()
            cluster.transfer_leader(target)
            transfers.append(writer.max_gap(start, time.monotonic()))
        removals: List[float] = []
        for i in range(args.removals):
            leader = cluster.wait_for_leader(timeout=30)
            start = time.monotonic()
            cluster.remove_node(leader)
            writer.members_changed.set()
            cluster.wait_for_leader(timeout=30)
            removals.append(writer.max_gap(start, time.monotonic()))
            node_id, voter, applied = catch_up(cluster, writer)
            catches.append((node_id, voter, applied))
            print(f"catch-up: {node_id} a voter {voter:.1f} s after start, applied the commit index at {applied:.1f} s")
        writer.stop.set()
        writer.join(timeout=30)
        calm = [b - a for a, b in zip(writer.oks, writer.oks[1:])]
        print(f"writer: {len(writer.oks)} OKs, {writer.errors} errors, median gap {statistics.median(calm) * 1000:.2f} ms")
        if transfers:
            print(summary("write unavailability during TRANSFER", transfers))
        if removals:
            print(summary("write unavailability during removal of the leader", removals))
        voters_s = [c[1] for c in catches]
        print(f"catch-up with {args.keys} keys: join -> voter {', '.join(f'{v:.1f}' for v in voters_s)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
