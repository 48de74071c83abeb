"""The harness itself: no leaks, clear errors, the node entry points."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from titanstore import Cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); check its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_close_kills_every_node_and_removes_temp_data() -> None:
    cluster = Cluster(nodes=3)
    with cluster:
        cluster.wait_for_leader(timeout=10)
        pids = [n.pid for n in cluster.nodes]
        cluster.pause(cluster.node_ids[0])
        data_dir = cluster.data_dir
    assert all(pid is not None and not _alive(pid) for pid in pids)
    assert not data_dir.exists()


def test_exception_inside_the_block_still_cleans_up() -> None:
    pids = []
    with pytest.raises(RuntimeError):
        with Cluster(nodes=1) as cluster:
            pids = [n.pid for n in cluster.nodes]
            raise RuntimeError("boom")
    assert pids and all(pid is not None and not _alive(pid) for pid in pids)


def test_keep_data_and_explicit_dir(tmp_path: Path) -> None:
    with Cluster(nodes=1, data_dir=tmp_path / "c") as cluster:
        cluster.wait_for_leader(timeout=10)
        cluster.client().set("k", "v")
    assert (tmp_path / "c" / "node1").is_dir()
    assert "node1" in (tmp_path / "c" / "node1.log").read_text() or (tmp_path / "c" / "node1.log").exists()


def test_killed_harness_leaves_no_node_behind(tmp_path: Path) -> None:
    script = tmp_path / "harness.py"
    pidfile = tmp_path / "pids"
    script.write_text(
        "import os, signal\n"
        "from titanstore import Cluster\n"
        f"c = Cluster(nodes=2, data_dir={str(tmp_path / 'data')!r})\n"
        "c.start()\n"
        f"open({str(pidfile)!r}, 'w').write(' '.join(str(n.pid) for n in c.nodes))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, str(script)], timeout=60)
    pids = [int(p) for p in pidfile.read_text().split()]
    import time

    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def test_python_node_entry_point_parses_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "titanstore.node", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "--peers" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "titanstore.node", "--id", "n1", "--peers", "n1:h:1:2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "itself" in bad.stderr


def test_installed_console_script() -> None:
    exe = shutil.which("titanstore-server")
    assert exe is not None, "pip install should provide the titanstore-server command"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "titanstore-server" in out.stdout


def test_native_binary_can_back_the_harness() -> None:
    binary = os.environ.get("TITANSTORE_SERVER_BIN")
    if not binary:
        pytest.skip("TITANSTORE_SERVER_BIN not set")
    with Cluster(nodes=3, binary=binary) as cluster:
        cluster.wait_for_leader(timeout=10)
        cluster.client().set("native", "yes")
        assert cluster.client().get("native") == "yes"
