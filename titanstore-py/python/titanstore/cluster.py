"""A harness that runs real local TitanStore clusters for scripts and tests.

Each node is a real process (``python -m titanstore.node`` by default, or a
native ``titanstore-server`` binary) on 127.0.0.1 with its own data dir and log
file. Nodes reach each other only through proxies the harness places on every
ordered pair of nodes, so network faults (:meth:`Cluster.cut`,
:meth:`Cluster.partition`, :meth:`Cluster.isolate`, latency) happen outside
the nodes, which carry no test-only code.

Nothing outlives the harness: :meth:`Cluster.close` (also on exceptions and at
interpreter exit) kills every node and proxy, and nodes are started with a
parent-death signal, so even a SIGKILLed harness leaves none behind.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Type, TypeVar, Union

from ._titanstore import Proxy
from .client import Client, NodeStatus
from .exceptions import HarnessError, TitanStoreError

__all__ = ["Cluster", "ClusterNode"]

T = TypeVar("T")
FlagValue = Union[str, int, float, bool]

_LIVE_CLUSTERS: "weakref.WeakSet[Cluster]" = weakref.WeakSet()


@atexit.register
def _reap_all() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        cluster.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the node gets SIGKILL when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass


_PORT_RANGE = (20_000, 32_000)
_next_port = itertools.count((os.getpid() * 37) % (_PORT_RANGE[1] - _PORT_RANGE[0]))


def _free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that an
    outgoing connection cannot take it before the node binds it."""
    low, high = _PORT_RANGE
    for _ in range(high - low):
        port = low + next(_next_port) % (high - low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no free port in {low}-{high - 1}")


def _flag_args(flags: Dict[str, FlagValue]) -> List[str]:
    args: List[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        else:
            args += [flag, str(value)]
    return args


class ClusterNode:
    """One node of a :class:`Cluster`: its addresses, data dir, log and process."""

    def __init__(self, node_id: str, raft_port: int, client_port: int, data_dir: Path, log_path: Path) -> None:
        self.id = node_id
        self.raft_port = raft_port
        self.client_port = client_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.paused = False

    @property
    def client_addr(self) -> str:
        """``127.0.0.1:<port>`` clients connect to."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    @property
    def is_running(self) -> bool:
        """Started and not exited (a paused node is running)."""
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: float = 5.0, retry_timeout: float = 0.0, follow_redirects: bool = False) -> Client:
        """A client bound to this node only (no redirects, no retries by default)."""
        return Client(self.client_addr, timeout=timeout, retry_timeout=retry_timeout, follow_redirects=follow_redirects)

    def status(self, timeout: float = 1.0) -> Optional[NodeStatus]:
        """The node's STATUS, or None when it does not answer in time."""
        if not self.is_running or self.paused:
            return None
        try:
            with self.client(timeout=timeout) as client:
                return client.status()
        except TitanStoreError:
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.is_running else "stopped")
        return f"<ClusterNode {self.id} client={self.client_addr} {state}>"


class Cluster:
    """A local cluster of real TitanStore nodes, as a context manager.

    >>> with Cluster(nodes=3) as cluster:
    ...     leader = cluster.wait_for_leader(timeout=10)
    ...     cluster.client().set("k", "v")

    ``data_dir``: where node data and logs go (default: a temp dir, removed on
    close unless ``keep_data=True``). ``base_port``: raft ports are
    ``base_port + i`` and client ports ``base_port + 100 + i`` (default: free
    ports). ``binary``: a native ``titanstore-server`` to run instead of
    ``python -m titanstore.node``. Other keyword arguments become node flags:
    ``snapshot_threshold=50`` is ``--snapshot-threshold 50``.
    """

    def __init__(
        self,
        nodes: int = 3,
        data_dir: Optional[Union[str, Path]] = None,
        base_port: Optional[int] = None,
        binary: Optional[Union[str, Path]] = None,
        keep_data: bool = False,
        startup_timeout: float = 15.0,
        **node_flags: FlagValue,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="titanstore-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.keep_data = keep_data
        self.binary = str(binary) if binary is not None else None
        self.startup_timeout = startup_timeout
        self.node_flags = dict(node_flags)
        self._nodes: Dict[str, ClusterNode] = {}
        for i in range(nodes):
            node_id = f"node{i + 1}"
            raft_port = base_port + i if base_port is not None else _free_port()
            client_port = base_port + 100 + i if base_port is not None else _free_port()
            self._nodes[node_id] = ClusterNode(
                node_id, raft_port, client_port, self.data_dir / node_id, self.data_dir / f"{node_id}.log"
            )
        self._proxies: Dict[Tuple[str, str], Proxy] = {}
        self._closed = False
        _LIVE_CLUSTERS.add(self)
        try:
            for a, b in itertools.permutations(self._nodes, 2):
                self._proxies[(a, b)] = Proxy(self._nodes[b].raft_addr)
        except BaseException:
            self.close()
            raise

    # ----- lifecycle -------------------------------------------------------

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def start(self, node_id: Optional[str] = None) -> None:
        """Starts one stopped node on its old data dir, or every stopped node."""
        targets = [self.node(node_id)] if node_id is not None else list(self._nodes.values())
        for node in targets:
            if not node.is_running:
                self._spawn(node)
        for node in targets:
            self._wait_accepting(node)

    def restart(self, node_id: str, graceful: bool = True) -> None:
        """Stops (SIGTERM, or SIGKILL when not graceful) and starts a node."""
        if graceful:
            self.stop(node_id)
        else:
            self.kill(node_id)
        self.start(node_id)

    def close(self) -> None:
        """Kills every node and proxy; removes the temp data dir unless kept."""
        if self._closed:
            return
        self._closed = True
        for node in self._nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            node.paused = False
        for proxy in self._proxies.values():
            proxy.close()
        _LIVE_CLUSTERS.discard(self)
        if self._owns_dir and not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # ----- nodes -----------------------------------------------------------

    @property
    def nodes(self) -> List[ClusterNode]:
        return list(self._nodes.values())

    @property
    def node_ids(self) -> List[str]:
        return list(self._nodes)

    def node(self, node_id: str) -> ClusterNode:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise ValueError(f"no node {node_id!r}; nodes are {', '.join(self._nodes)}") from None

    def client(self, timeout: float = 5.0, retry_timeout: float = 10.0) -> Client:
        """A client that knows every node and follows redirects."""
        return Client([n.client_addr for n in self._nodes.values()], timeout=timeout, retry_timeout=retry_timeout)

    def _command(self, node: ClusterNode) -> List[str]:
        peers = ",".join(
            f"{other.id}:127.0.0.1:{self._proxies[(node.id, other.id)].port}:{other.client_port}"
            for other in self._nodes.values()
            if other.id != node.id
        )
        args = [
            "--id", node.id,
            "--port", str(node.raft_port),
            "--client-port", str(node.client_port),
            "--advertise-client-addr", node.client_addr,
            "--advertise-raft-addr", node.raft_addr,
            "--data-dir", str(node.data_dir),
        ]
        if peers:
            args += ["--peers", peers]
        args += _flag_args(self.node_flags)
        if self.binary is not None:
            return [self.binary, *args]
        return [sys.executable, "-m", "titanstore.node", *args]

    def _spawn(self, node: ClusterNode) -> None:
        log = open(node.log_path, "ab")
        try:
            log.write(f"\n--- harness: starting {node.id} at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            node.process = subprocess.Popen(
                self._command(node),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()
        node.paused = False

    def _wait_accepting(self, node: ClusterNode) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if node.process is None or node.process.poll() is not None:
                code = node.process.returncode if node.process is not None else None
                raise self._error(f"{node.id} exited during start-up (exit code {code})")
            try:
                with socket.create_connection(("127.0.0.1", node.client_port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._error(f"{node.id} did not accept clients within {self.startup_timeout} s")
            time.sleep(0.02)

    def kill(self, node_id: str) -> None:
        """SIGKILL: the node gets no chance to flush or say goodbye."""
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()
        node.paused = False

    def stop(self, node_id: str, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        node = self.node(node_id)
        if node.process is None or node.process.poll() is not None:
            return node.process.returncode if node.process is not None else None
        if node.paused:
            self.resume(node_id)
        node.process.terminate()
        try:
            return node.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
            raise self._error(f"{node_id} did not stop within {timeout} s of SIGTERM") from None

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the node freezes mid-flight, as in a long GC pause or VM stall."""
        node = self._running(node_id)
        os.kill(node.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        node.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT after :meth:`pause`."""
        node = self._running(node_id)
        os.kill(node.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    def _running(self, node_id: str) -> ClusterNode:
        node = self.node(node_id)
        if not node.is_running:
            raise self._error(f"{node_id} is not running")
        return node

    # ----- leadership ------------------------------------------------------

    def statuses(self) -> Dict[str, Optional[NodeStatus]]:
        """Every node's STATUS (None for nodes that are down, paused or silent)."""
        return {node.id: node.status() for node in self._nodes.values()}

    def leader(self) -> Optional[str]:
        """The leader a majority of the cluster currently follows, if any."""
        statuses = [s for s in self.statuses().values() if s is not None]
        majority = len(self._nodes) // 2 + 1
        for status in statuses:
            if not status.is_leader:
                continue
            followers = sum(1 for s in statuses if s.leader == status.id and s.term == status.term)
            if followers >= majority:
                return status.id
        return None

    def wait_for_leader(self, timeout: float = 10.0) -> str:
        """Waits until a majority follows one leader; returns its id."""
        return self.wait_until(self.leader, timeout, "a leader followed by a majority")

    def wait_until(self, probe: Callable[[], Optional[T]], timeout: float, what: str) -> T:
        """Polls ``probe`` until it returns something other than None/False."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise self._error(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    # ----- network faults --------------------------------------------------

    def _set_link(self, a: str, b: str, mode: str) -> None:
        self.node(a), self.node(b)
        if a == b:
            return
        self._proxies[(a, b)].mode = mode
        self._proxies[(b, a)].mode = mode

    def cut(self, a: str, b: str, mode: str = "reset") -> None:
        """Cuts traffic between ``a`` and ``b`` both ways, closing open connections.

        ``mode="blackhole"`` swallows traffic instead of refusing it.
        """
        self._set_link(a, b, mode)

    def connect(self, a: str, b: str) -> None:
        """Restores the link between ``a`` and ``b``."""
        self._set_link(a, b, "pass")

    def isolate(self, node_id: str, mode: str = "reset") -> None:
        """Cuts ``node_id`` off from every other node (clients still reach it)."""
        for other in self._nodes:
            if other != node_id:
                self._set_link(node_id, other, mode)

    def partition(self, *groups: Iterable[str], mode: str = "reset") -> None:
        """Splits the cluster: nodes talk only within their group.

        Nodes named in no group form one more group together.
        """
        sets: List[Set[str]] = [set(g) for g in groups]
        for group in sets:
            for node_id in group:
                self.node(node_id)
        named = set().union(*sets) if sets else set()
        rest = set(self._nodes) - named
        if rest:
            sets.append(rest)
        group_of = {n: i for i, g in enumerate(sets) for n in g}
        for a, b in itertools.combinations(self._nodes, 2):
            self._set_link(a, b, "pass" if group_of[a] == group_of[b] else mode)

    def heal(self) -> None:
        """Restores every link and removes added latency."""
        for proxy in self._proxies.values():
            proxy.mode = "pass"
            proxy.latency_ms = 0

    def set_latency(self, ms: int, a: Optional[str] = None, b: Optional[str] = None) -> None:
        """Delays traffic by ``ms`` on the link a<->b, or on every link."""
        for (x, y), proxy in self._proxies.items():
            if a is None or {x, y} == {a, b}:
                proxy.latency_ms = ms

    # ----- diagnostics -----------------------------------------------------

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every node's log."""
        return "\n".join(f"--- {n.id} ({n.log_path}) ---\n{n.log_tail(lines)}" for n in self._nodes.values())

    def _error(self, message: str) -> HarnessError:
        return HarnessError(f"{message}\n{self.logs()}")

    def __repr__(self) -> str:
        return f"<Cluster {len(self._nodes)} nodes at {self.data_dir}>"
