"""A full disk on real processes: each node's data dir on its own small
tmpfs (mounting needs root; skipped with the reason otherwise). The leader's
disk is filled: it steps down, answers writes with ``ERR NOSPACE`` and sends
readers to the leader, a healthy node leads, and once space is freed the node
catches up by itself with nothing lost."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from titanstore import Cluster


def _mount_tmpfs(path: Path, size: str) -> str:
    """Mounts a tmpfs at ``path``; returns why it could not ('' on success)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a size-limited tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if done.returncode == 0 else f"cannot mount tmpfs: {done.stderr.strip()}"


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[Path]:
    mounted: List[Path] = []
    try:
        for i in (1, 2, 3):
            target = tmp_path / f"node{i}"
            why = _mount_tmpfs(target, "16m")
            if why:
                pytest.skip(why)
            mounted.append(target)
        yield tmp_path
    finally:
        for target in mounted:
            subprocess.run(["umount", "-l", str(target)], check=False)


def _ask(addr: str, line: str) -> str:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.decode().strip()


def _fill(directory: Path) -> Path:
    """Writes a filler file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
    return filler


def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(small_disks: Path) -> None:
    with Cluster(nodes=3, data_dir=small_disks) as cluster:
        full = cluster.wait_for_leader(timeout=10)
        addr = cluster.node(full).client_addr
        client = cluster.client(timeout=5, retry_timeout=20)
        client.set("before", "1")
        filler = _fill(cluster.node(full).data_dir)

        # Writes sent to the full node itself are refused once its disk is out
        # of room. (The first refused may have reached the followers before:
        # its outcome is unknown. Those answered NOSPACE never apply.)
        attempts: List[str] = []

        def refused() -> bool:
            attempts.append(_ask(addr, f"SET direct:{len(attempts)} x"))
            return attempts[-1].startswith("ERR NOSPACE")

        cluster.wait_until(refused, timeout=15, what=f"{full} to answer ERR NOSPACE")
        assert "disk is full" in attempts[-1]
        # (Writes acknowledged before the disk ran out of pages stay.)
        acknowledged = [i for i, a in enumerate(attempts) if a == "OK"]
        nospace = [i for i, a in enumerate(attempts) if a.startswith("ERR NOSPACE")]
        status = _ask(addr, "STATUS")
        assert "disk=full" in status and "role=leader" not in status, status

        # A healthy node leads; writes through the client carry on.
        healthy = [n for n in cluster.node_ids if n != full]
        cluster.wait_until(
            lambda: any((s := cluster.node(n).status()) is not None and s.is_leader for n in healthy),
            timeout=10,
            what="a leader with room on its disk",
        )
        for i in range(20):
            client.set(f"while-full:{i}", str(i))
        # Reads go on: the full node cannot apply what it cannot persist, so
        # it sends readers to the leader at once rather than let them wait.
        assert _ask(addr, "GET before").startswith("ERR NOT_LEADER "), _ask(addr, "GET before")
        with cluster.node(full).client(follow_redirects=True, retry_timeout=5) as c:
            assert c.get("before") == "1"
            assert c.get("while-full:19") == "19"

        # Space comes back: the node resumes by itself and catches up.
        filler.unlink()
        target = cluster.wait_until(
            lambda: next((s for n in healthy if (s := cluster.node(n).status()) and s.is_leader), None),
            timeout=10,
            what="the leader's status",
        )
        cluster.wait_until(
            lambda: (s := cluster.node(full).status()) is not None
            and s.applied >= target.commit
            and s.raw.get("disk") == "ok",
            timeout=20,
            what=f"{full} to catch up with room on its disk",
        )
        with cluster.node(full).client(retry_timeout=10, follow_redirects=True) as c:
            assert c.get("while-full:7") == "7"
            for i in nospace:
                assert c.get(f"direct:{i}") is None
            for i in acknowledged:
                assert c.get(f"direct:{i}") == "x"
            c.set("after", "room")
        assert client.get("after") == "room"
