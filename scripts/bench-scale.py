#!/usr/bin/env python3
"""Scale figures on a local 3-node cluster: memory at N keys, restart time,
and a fresh node catching up through a big snapshot. Not a test: the numbers
depend on the machine; run it on a quiet one, with release binaries.

    cargo build --release -p titanstore-core --bin titanstore-server
    python3 scripts/bench-scale.py --keys 1000000

Only the standard library is needed. Phases:

1. load: ``--keys`` keys of ``--value-bytes`` bytes, pipelined SETs from
   ``--loaders`` connections to the leader, while the nodes snapshot.
2. memory: each node's RSS (and its high-water mark) once a snapshot of the
   loaded map is on disk, against the raw bytes of keys and values.
3. restart: a follower is stopped (SIGTERM) and started again; the time from
   its start until it answers a linearizable GET of the last key.
4. install: an empty node joins (``--join``) while a writer keeps writing;
   the time until it is a voter and has applied the leader's commit index.

For every phase: the event-loop passes of each node longer than 10.24 ms
(from ``titanstore_event_loop_pass_duration_seconds``), the longest pass
since start, and whether the leader changed. A writer's longest gap
between two OKs is given for the install phase.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class Node:
    name: str
    raft: int
    client: int
    metrics: int
    data: str
    proc: Optional[subprocess.Popen] = None
    log: str = ""
    extra: List[str] = field(default_factory=list)


def ask(port: int, line: str, timeout: float = 5.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").strip()


def status(node: Node) -> Dict[str, str]:
    try:
        reply = ask(node.client, "STATUS", timeout=1.0)
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in reply.split()[1:] if "=" in kv)


def metrics(node: Node) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def long_passes(text: str) -> int:
    """Passes longer than the 10.24 ms bucket."""
    total = above = None
    for line in text.splitlines():
        if line.startswith("titanstore_event_loop_pass_duration_seconds_count"):
            total = float(line.split()[-1])
        m = re.match(r'titanstore_event_loop_pass_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m and m.group(1) != "+Inf" and abs(float(m.group(1)) - 0.01024) < 1e-9:
            above = float(m.group(2))
    if total is None or above is None:
        return 0
    return int(total - above)


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def rss_mib(pid: int) -> tuple[float, float]:
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


class Cluster:
    def __init__(self, binary: str, root: str, base: int) -> None:
        self.binary = binary
        self.root = root
        self.nodes = [
            Node(f"node{i}", base + i, base + 100 + i, base + 200 + i, os.path.join(root, f"node{i}"))
            for i in (1, 2, 3)
        ]

    def peers(self, me: Node) -> str:
        return ",".join(
            f"{n.name}:127.0.0.1:{n.raft}:{n.client}" for n in self.nodes[:3] if n is not me
        )

    def start(self, node: Node, join: Optional[str] = None) -> None:
        args = [
            self.binary, "--id", node.name, "--port", str(node.raft),
            "--client-port", str(node.client),
            "--advertise-client-addr", f"127.0.0.1:{node.client}",
            "--data-dir", node.data, "--metrics-addr", f"127.0.0.1:{node.metrics}",
            "--log", "info",
        ]
        args += ["--join", join] if join else ["--peers", self.peers(node)]
        log = open(os.path.join(self.root, f"{node.name}.log"), "ab")
        node.proc = subprocess.Popen(args, stdout=log, stderr=log)

    def stop(self, node: Node) -> None:
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def leader(self, deadline: float = 30.0) -> Node:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for n in self.nodes:
                if n.proc and n.proc.poll() is None and status(n).get("role") == "leader":
                    return n
            time.sleep(0.05)
        raise RuntimeError("no leader")


def key(i: int) -> str:
    return f"key{i:010d}"


def load(cluster: Cluster, keys: int, value: str, loaders: int, batch: int) -> float:
    started = time.monotonic()
    done = [0]
    lock = threading.Lock()
    errors: List[BaseException] = []

    def work(first: int) -> None:
        try:
            conn = None
            lo = first * batch
            while lo < keys:
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", cluster.leader().client), timeout=30)
                    reader = conn.makefile("rb")
                hi = min(lo + batch, keys)
                conn.sendall("".join(f"SET {key(k)} {value}\n" for k in range(lo, hi)).encode())
                ok = True
                for _ in range(lo, hi):
                    line = reader.readline()
                    if not line.startswith(b"OK"):
                        ok = False
                if not ok:  # a leader change: the same SETs again, on the new leader
                    conn.close()
                    conn = None
                    continue
                with lock:
                    done[0] += hi - lo
                lo += loaders * batch
            if conn:
                conn.close()
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(loaders)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        if sys.stderr.isatty():
            print(f"\r  loaded {done[0]:,}/{keys:,}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if errors:
        raise errors[0]
    return time.monotonic() - started


class Phase:
    """Long passes and leader changes of every node across one phase."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.before = {n.name: long_passes(metrics(n)) for n in cluster.nodes}
        self.term = status(cluster.leader()).get("term")

    def report(self, name: str) -> None:
        parts = []
        for n in self.cluster.nodes:
            text = metrics(n)
            if not text:
                continue
            longest = gauge(text, "titanstore_event_loop_longest_pass_seconds") * 1000
            parts.append(
                f"{n.name}: {long_passes(text) - self.before.get(n.name, 0)} passes > 10 ms"
                f" (longest since start {longest:.1f} ms)"
            )
        term = status(self.cluster.leader()).get("term")
        changed = "no leader change" if term == self.term else f"term {self.term} -> {term}"
        print(f"  [{name}] {changed}; " + "; ".join(parts))


class Writer(threading.Thread):
    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.oks: List[float] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                if ask(self.cluster.leader().client, f"SET writer {i}").startswith("OK"):
                    self.oks.append(time.monotonic())
                    i += 1
            except (OSError, RuntimeError):
                time.sleep(0.01)

    def max_gap_ms(self) -> float:
        gaps = [b - a for a, b in zip(self.oks, self.oks[1:])]
        return max(gaps, default=0.0) * 1000


def wait_until(what: str, check, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.01)
    raise RuntimeError(f"timed out: {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/titanstore-server")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--loaders", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--base-port", type=int, default=7500)
    ap.add_argument("--keep", action="store_true", help="keep the data dirs")
    args = ap.parse_args()
    if args.keys < 1 or args.value_bytes < 1 or args.loaders < 1 or args.batch < 1:
        ap.error("--keys, --value-bytes, --loaders and --batch must be positive")
    if not os.access(args.binary, os.X_OK):
        ap.error(f"{args.binary} is not an executable (build it: cargo build --release -p titanstore-core --bin titanstore-server)")
    root = tempfile.mkdtemp(prefix="titanstore-scale-")
    cluster = Cluster(os.path.abspath(args.binary), root, args.base_port)
    value = "v" * args.value_bytes
    raw_mib = args.keys * (len(key(0)) + args.value_bytes) / 2**20
    try:
        for n in cluster.nodes:
            cluster.start(n)
        leader = cluster.leader()
        print(f"{args.keys:,} keys of {args.value_bytes} B (raw {raw_mib:.0f} MiB), leader {leader.name}")

        phase = Phase(cluster)
        took = load(cluster, args.keys, value, args.loaders, args.batch)
        print(f"load: {took:.1f} s, {args.keys / took:,.0f} writes/s")
        phase.report("load")

        leader = cluster.leader()
        commit = int(status(leader)["commit"])
        wait_until("a snapshot of the loaded map on every node",
                   lambda: all(int(status(n).get("snapshot_index", 0)) >= commit * 3 // 4
                               for n in cluster.nodes), 120)
        for n in cluster.nodes:
            assert n.proc is not None
            rss, hwm = rss_mib(n.proc.pid)
            print(f"memory: {n.name} RSS {rss:.0f} MiB = {rss / raw_mib:.2f}x raw"
                  f" (high-water {hwm:.0f} MiB = {hwm / raw_mib:.2f}x)")

        follower = next(n for n in cluster.nodes if n is not leader)
        cluster.stop(follower)
        t0 = time.monotonic()
        cluster.start(follower)
        last = key(args.keys - 1)

        def serving() -> bool:
            try:
                return ask(follower.client, f"GET {last}", timeout=1.0).startswith("VALUE")
            except OSError:
                return False

        wait_until("the restarted follower serving", serving, 60)
        print(f"restart: {follower.name} answered a linearizable GET {time.monotonic() - t0:.2f} s after its start")

        phase = Phase(cluster)
        writer = Writer(cluster)
        writer.start()
        fresh = Node("node4", args.base_port + 4, args.base_port + 104, args.base_port + 204,
                     os.path.join(root, "node4"))
        cluster.nodes.append(fresh)
        t0 = time.monotonic()
        cluster.start(fresh, join=",".join(f"127.0.0.1:{n.client}" for n in cluster.nodes[:3]))

        def is_voter() -> bool:
            try:
                members = ask(cluster.leader().client, "MEMBER LIST", timeout=1.0)
            except (OSError, RuntimeError):
                return False
            return f"node4:127.0.0.1:{fresh.raft}:{fresh.client}:voter" in members

        wait_until("node4 a voter", is_voter, 600)
        voter_s = time.monotonic() - t0
        target = int(status(cluster.leader())["commit"])
        wait_until("node4 caught up", lambda: int(status(fresh).get("applied", 0)) >= target, 600)
        writer.stop.set()
        writer.join()
        print(f"install: node4 a voter {voter_s:.2f} s after its start, caught up at"
              f" {time.monotonic() - t0:.2f} s; writer's longest gap {writer.max_gap_ms():.0f} ms"
              f" over {len(writer.oks)} writes")
        phase.report("install")
        assert fresh.proc is not None
        rss, hwm = rss_mib(fresh.proc.pid)
        print(f"memory: node4 RSS {rss:.0f} MiB = {rss / raw_mib:.2f}x raw (high-water {hwm:.0f} MiB)")
        return 0
    finally:
        for n in cluster.nodes:
            cluster.stop(n)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"data and logs kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
