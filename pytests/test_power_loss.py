"""Power loss on real processes: LazyFs (the in-memory FUSE filesystem that
forgets what was not fsynced) on its own, then under a cluster.

Skipped with the reason when this machine has no FUSE; the test script sets
``TITANSTORE_REQUIRE_FUSE=1`` where ``/dev/fuse`` exists, so a missing
``fusermount3`` or a broken mount fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from titanstore import Cluster, HarnessError
from titanstore.power import power_loss_support


def _require_fuse() -> None:
    reason = power_loss_support()
    if reason is None:
        return
    if os.environ.get("TITANSTORE_REQUIRE_FUSE"):
        pytest.fail(f"FUSE is required (TITANSTORE_REQUIRE_FUSE) but: {reason}")
    pytest.skip(reason)


def _mounted(path: Path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


@pytest.fixture
def lazyfs() -> Iterator["tuple[object, Path]"]:
    _require_fuse()
    from titanstore._titanstore import LazyFs

    root = Path(tempfile.mkdtemp(prefix="titanstore-lazyfs-"))
    fs = LazyFs(str(root))
    try:
        yield fs, root
    finally:
        fs.unmount()
        assert not _mounted(root)
        root.rmdir()


def test_power_loss_drops_exactly_what_was_not_fsynced(lazyfs: "tuple[object, Path]") -> None:
    from titanstore._titanstore import LazyFs

    fs, root = lazyfs
    assert isinstance(fs, LazyFs) and _mounted(root)
    synced, unsynced = root / "synced", root / "sub" / "unsynced"
    (root / "sub").mkdir()
    with open(synced, "wb") as f:
        f.write(b"kept")
        f.flush()
        os.fsync(f.fileno())
        f.write(b" and lost")  # after the fsync
    with open(unsynced, "wb") as f:
        f.write(b"never synced")
    # An overwrite in the middle of a synced file, then a truncate, not synced.
    with open(synced, "r+b") as f:
        f.seek(1)
        f.write(b"XX")
        f.truncate(2)
    os.rename(unsynced, root / "sub" / "renamed")
    assert synced.read_bytes() == b"kX"
    assert fs.unsynced()[0] == 4
    writes, _ = fs.power_loss()
    assert writes == 4
    assert synced.read_bytes() == b"kept"
    # Names are durable at once; the data of a never-synced file is gone.
    assert (root / "sub" / "renamed").read_bytes() == b""
    assert fs.unsynced() == (0, 0)
    stats = fs.stats()
    assert stats["power_losses"] == 1 and stats["writes_lost"] == 4 and stats["fsyncs"] >= 1


def test_fsync_from_another_process_and_descriptor_counts(lazyfs: "tuple[object, Path]") -> None:
    fs, root = lazyfs
    path = root / "f"
    path.write_bytes(b"data")
    code = f"import os; fd = os.open({str(path)!r}, os.O_RDONLY); os.fsync(fd)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    fs.power_loss()  # type: ignore[attr-defined]
    assert path.read_bytes() == b"data"


def test_cluster_power_loss_keeps_every_acknowledged_write() -> None:
    _require_fuse()
    with Cluster(nodes=3, power_loss=True) as cluster:
        cluster.wait_for_leader(timeout=20)
        assert all(_mounted(n.data_dir) for n in cluster.nodes)
        with cluster.client(timeout=2, retry_timeout=5) as client:
            for i in range(50):
                client.set(f"k{i}", f"v{i}")
        lost = cluster.power_loss_all()
        assert set(lost) == set(cluster.node_ids)
        assert not any(n.is_running for n in cluster.nodes)
        cluster.start()
        cluster.wait_for_leader(timeout=20)
        with cluster.client(timeout=2, retry_timeout=10) as client:
            assert [client.get(f"k{i}") for i in range(50)] == [f"v{i}" for i in range(50)]
        kinds = [e.kind for e in cluster.timeline.events]
        assert kinds.count("power-loss") == 3
        disks = list(cluster._disks.values())
        assert all(d.stats()["fsyncs"] > 0 for d in disks), "the nodes' data must go through LazyFs"
        dirs = [n.data_dir for n in cluster.nodes]
    assert not any(_mounted(d) for d in dirs)


def test_power_loss_needs_the_cluster_flag() -> None:
    with Cluster(nodes=1) as cluster:
        with pytest.raises(HarnessError, match="power_loss"):
            cluster.power_loss("node1")
