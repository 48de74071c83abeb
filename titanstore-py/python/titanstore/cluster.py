"""A harness that runs real local TitanStore clusters for scripts and tests.

Each node is a real process (``python -m titanstore.node`` by default, or a
native ``titanstore-server`` binary) on 127.0.0.1 with its own data dir and log
file. Nodes reach each other only through proxies the harness places on every
ordered pair of nodes, so network faults (:meth:`Cluster.cut`,
:meth:`Cluster.partition`, :meth:`Cluster.isolate`, latency) happen outside
the nodes, which carry no test-only code (see ``faults``).

Nodes added at runtime (:meth:`Cluster.add_node`) are behind proxies both
ways too. A running node dials a member at the address its replicated
configuration holds, unless the node-local ``--peer-addr ID=HOST:PORT``
flag (a plain server feature: reach a member through a proxy, NAT or
tunnel) overrides it, and the override may name an id that is not a member
yet. So the cluster reserves ``spare_nodes`` ids up front (``node4`` and
``node5`` for three nodes), with proxies on every link to them, and starts
every node with ``--peer-addr`` for each of them; a removed node's id goes
back to that pool (a fresh node with an empty data dir may take it, as the
spec allows). ``add_node`` takes an id from the pool, so every running node
already reaches the new one through its own proxy and a partition cuts
both directions. Only a node added when the pool is empty has links that
older processes dial directly; faults on such a link raise
:class:`HarnessError` rather than cut one way (restarting the older node
routes it). The server needs no change and no harness-only hook.

Nothing outlives the harness: :meth:`Cluster.close` (also on exceptions and at
interpreter exit) kills every node and proxy, and nodes are forked by one
long-lived spawner thread with a parent-death signal (see ``_process``), so
even a SIGKILLed harness leaves none behind, whichever thread started them.

Every fault is recorded in :attr:`Cluster.timeline` and in the affected
nodes' logs; a node that dies without a harness call is reported in later
:class:`HarnessError` messages, in :meth:`Cluster.statuses` and in the
pytest plugin's failure report.
"""

from __future__ import annotations

import atexit
import difflib
import itertools
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
import weakref
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union

from . import _process
from .faults import NetworkFaults, _is_int
from ._titanstore import LazyFs, Proxy
from .client import DEFAULT_MAX_LINE_BYTES, Client, Member, NodeStatus
from .exceptions import HarnessError, TitanStoreError
from .power import power_loss_support
from .timeline import Timeline

__all__ = ["Cluster", "ClusterNode", "Statuses"]

T = TypeVar("T")
FlagValue = Union[str, int, float, bool]

_LIVE_CLUSTERS: "weakref.WeakSet[Cluster]" = weakref.WeakSet()


@atexit.register
def _reap_all() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        cluster.close()


_PORT_RANGE = (20_000, 32_000)
_next_port = itertools.count((os.getpid() * 37) % (_PORT_RANGE[1] - _PORT_RANGE[0]))
_port_lock = threading.Lock()


def _free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that an
    outgoing connection cannot take it before the node binds it."""
    low, high = _PORT_RANGE
    for _ in range(high - low):
        with _port_lock:
            port = low + next(_next_port) % (high - low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no free port in {low}-{high - 1}")


#: Flags the harness sets itself for every node.
_HARNESS_FLAGS = frozenset(
    {
        "id", "port", "client-port", "advertise-client-addr", "advertise-raft-addr", "data-dir", "peers", "bind",
        "join", "join-as-learner", "peer-addr",
    }
)  # fmt: skip
_MAX_MESSAGE = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ClusterNode:
    """One node of a :class:`Cluster`: its addresses, data dir, log and process."""

    def __init__(
        self,
        node_id: str,
        raft_port: int,
        client_port: int,
        data_dir: Path,
        log_path: Path,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.id = node_id
        self.raft_port = raft_port
        self.client_port = client_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.max_line_bytes = max_line_bytes
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.paused = False
        # Set before the harness ends the process, so its exit is not "unexpected".
        self.exit_expected = False
        # The process whose exit was already reported (once per process).
        self.exit_reported: Optional["subprocess.Popen[bytes]"] = None
        # Between spawn and ready (or failed start).
        self.starting = False
        # Where this run's output starts in the log.
        self.log_offset = 0
        # Added at runtime: started with --join (and --peer-addr through proxies).
        self.joins = False
        self.join_as_learner = False
        # Ids the running process reaches through the harness's proxies
        # (its --peers and --peer-addr); any other member it dials directly.
        self.routed: frozenset[str] = frozenset()

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
        return Client(
            self.client_addr,
            timeout=timeout,
            retry_timeout=retry_timeout,
            follow_redirects=follow_redirects,
            max_line_bytes=self.max_line_bytes,
        )

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
        return "\n".join(_ANSI.sub("", line) for line in text.splitlines()[-lines:])

    def log_of_this_run(self) -> str:
        """What the current (or last) process wrote to the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return _ANSI.sub("", log.read().decode("utf-8", "replace"))
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.is_running else "stopped")
        return f"<ClusterNode {self.id} client={self.client_addr} {state}>"


class Statuses(Dict[str, Optional[NodeStatus]]):
    """:meth:`Cluster.statuses`: node id -> STATUS (None when down, paused or
    silent), plus ``unexpected_exits``: nodes that died without a harness call."""

    def __init__(self, statuses: Dict[str, Optional[NodeStatus]], unexpected_exits: List[str]) -> None:
        super().__init__(statuses)
        self.unexpected_exits = unexpected_exits

    def __repr__(self) -> str:
        base = super().__repr__()
        if not self.unexpected_exits:
            return base
        return f"{base} (died unexpectedly: {', '.join(self.unexpected_exits)})"


class Cluster(NetworkFaults, _process._Watched):
    """A local cluster of real TitanStore nodes, as a context manager.

    >>> with Cluster(nodes=3) as cluster:
    ...     leader = cluster.wait_for_leader(timeout=10)
    ...     cluster.client().set("k", "v")

    ``data_dir``: where node data and logs go (default: a temp dir, removed on
    close unless ``keep_data=True``). ``base_port``: raft ports are
    ``base_port + i`` and client ports ``base_port + 100 + i`` (default: free
    ports). ``binary``: a native ``titanstore-server`` to run instead of
    ``python -m titanstore.node``. Other keyword arguments become node flags:
    ``snapshot_threshold=50`` is ``--snapshot-threshold 50``; they are checked
    against the server's ``--help`` here, so a misspelt flag fails at once.
    ``power_loss=True`` puts every node's data dir on a :class:`LazyFs` (an
    in-memory FUSE filesystem that forgets what was not fsynced) so that
    :meth:`power_loss` can pull the plug; it raises :class:`HarnessError`
    saying why when this machine cannot (see :mod:`titanstore.power`).
    ``spare_nodes``: ids reserved for :meth:`add_node` with proxies on every
    link (see the module doc); more nodes than that may be added while none
    is removed, but network faults on their links to nodes started earlier
    raise until those restart.
    """

    def __init__(
        self,
        nodes: int = 3,
        data_dir: Optional[Union[str, Path]] = None,
        base_port: Optional[int] = None,
        binary: Optional[Union[str, Path]] = None,
        keep_data: bool = False,
        startup_timeout: float = 15.0,
        power_loss: bool = False,
        spare_nodes: int = 2,
        **node_flags: FlagValue,
    ) -> None:
        # Everything is checked before a temp dir or proxy exists.
        if not _is_int(nodes):
            raise TypeError(f"Cluster(nodes=...) must be an int, not {type(nodes).__name__}")
        if nodes < 1:
            raise ValueError(f"Cluster(nodes=...) must be at least 1, not {nodes}")
        if not _is_int(spare_nodes) or spare_nodes < 0:
            raise ValueError(f"Cluster(spare_nodes=...) must be an int >= 0, not {spare_nodes!r}")
        slots = nodes + spare_nodes
        if base_port is not None:
            if not _is_int(base_port):
                raise TypeError(f"Cluster(base_port=...) must be an int, not {type(base_port).__name__}")
            if not 1 <= base_port <= 65535 - 100 - slots:
                raise ValueError(f"Cluster(base_port=...) must be in 1..{65535 - 100 - slots}, not {base_port}")
        if not _is_number(startup_timeout) or startup_timeout <= 0:
            raise ValueError(f"Cluster(startup_timeout=...) must be a number > 0, not {startup_timeout!r}")
        if binary is not None and not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise ValueError(f"Cluster(binary=...): {str(binary)!r} is not an executable file")
        self.binary = str(binary) if binary is not None else None
        self.node_flags = dict(node_flags)
        self._check_node_flags()
        max_line_bytes = self.node_flags.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)
        self._max_line_bytes = int(max_line_bytes)

        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="titanstore-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.keep_data = keep_data
        self.startup_timeout = float(startup_timeout)
        self.timeline = Timeline()
        self._lock = threading.RLock()
        self._unexpected: List[str] = []
        self._nodes: Dict[str, ClusterNode] = {}
        # Ids with proxies on every link that are not members: the spares,
        # then removed nodes in the order they left (add_node takes the first).
        self._vacant: Dict[str, ClusterNode] = {}
        for i in range(slots):
            node_id = f"node{i + 1}"
            raft_port = base_port + i if base_port is not None else _free_port()
            client_port = base_port + 100 + i if base_port is not None else _free_port()
            (self._nodes if i < nodes else self._vacant)[node_id] = ClusterNode(
                node_id,
                raft_port,
                client_port,
                self.data_dir / node_id,
                self.data_dir / f"{node_id}.log",
                self._max_line_bytes,
            )
        self._proxies: Dict[Tuple[str, str], Proxy] = {}
        self._disks: Dict[str, LazyFs] = {}
        self.power_loss_enabled = bool(power_loss)
        if self.power_loss_enabled:
            reason = power_loss_support()
            if reason is not None:
                raise HarnessError(f"Cluster(power_loss=True) cannot run here: {reason}")
        self._closed = False
        _LIVE_CLUSTERS.add(self)
        try:
            known = {**self._nodes, **self._vacant}
            for a, b in itertools.permutations(known, 2):
                self._proxies[(a, b)] = Proxy(known[b].raft_addr)
            for node in self._nodes.values():
                self._mount_disk(node)
        except BaseException:
            self.close()
            raise
        _process.watch(self)

    def _server_command(self) -> List[str]:
        if self.binary is not None:
            return [self.binary]
        return [sys.executable, "-m", "titanstore.node"]

    def _check_node_flags(self) -> None:
        if not self.node_flags:
            return
        known = _process.server_flags(self._server_command())
        settable = sorted(known - _HARNESS_FLAGS - {"help", "version"})
        for name, value in self.node_flags.items():
            flag = name.replace("_", "-")
            if flag in _HARNESS_FLAGS:
                raise ValueError(f"Cluster({name}=...): --{flag} is set by the harness for each node")
            if flag not in known:
                close = difflib.get_close_matches(flag, settable, n=1)
                hint = f"; did you mean {close[0].replace('-', '_')}?" if close else ""
                raise TypeError(
                    f"Cluster() got an unknown node flag {name!r} (--{flag}){hint} "
                    f"Node flags: {', '.join(f.replace('-', '_') for f in settable)}"
                )
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"Cluster({name}=...) must be a str, int, float or bool, not {type(value).__name__}")
        limit = self.node_flags.get("max_line_bytes")
        if limit is not None and (not _is_int(limit) or int(limit) < 1):
            raise ValueError(f"Cluster(max_line_bytes=...) must be an int >= 1, not {limit!r}")

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
        """Starts one stopped node on its old data dir, or every stopped node.

        Returns once each started node is alive, bound its own ports and
        answers ``STATUS`` with its id; a node that exits first fails the
        start with a :class:`HarnessError` naming it and its exit code.
        """
        self._check_open()
        targets = [self.node(node_id)] if node_id is not None else list(self._nodes.values())
        started = [node for node in targets if not node.is_running]
        for node in started:
            self._spawn(node)
        try:
            for node in started:
                self._wait_ready(node)
        finally:
            for node in started:
                node.starting = False

    def restart(self, node_id: str, graceful: bool = True) -> None:
        """Stops (SIGTERM, or SIGKILL when not graceful) and starts a node."""
        if graceful:
            self.stop(node_id)
        else:
            self.kill(node_id)
        self.start(node_id)

    # ----- membership -----------------------------------------------------

    def add_node(self, learner: bool = False, timeout: float = 30.0) -> str:
        """Starts a new node that joins the running cluster (``--join``) and
        returns its id once it is a voter (or, with ``learner``, a learner).

        The id comes from the pool of spare and removed ids (see the module
        doc), so every link to the new node goes through proxies both ways
        and network faults on it are two-sided; a removed id is reused with
        an empty data dir. With the pool empty the node gets a new id, and
        faults on its links to nodes started before it raise until those
        nodes restart.
        """
        self._check_open()
        with self._lock:
            if self._vacant:
                node_id = next(iter(self._vacant))
                node = self._vacant.pop(node_id)
                shutil.rmtree(node.data_dir, ignore_errors=True)  # a removed id rejoins empty
                node.exit_reported = None
                for key in [k for k in self._proxies if node_id in k]:
                    proxy = self._proxies[key]
                    proxy.mode = "pass"
                    proxy.latency_ms = 0
                    proxy.jitter_ms = 0
            else:
                n = len(self._nodes) + 1
                while f"node{n}" in self._nodes:
                    n += 1
                node_id = f"node{n}"
                node = ClusterNode(
                    node_id,
                    _free_port(),
                    _free_port(),
                    self.data_dir / node_id,
                    self.data_dir / f"{node_id}.log",
                    self._max_line_bytes,
                )
                for other in self._nodes:
                    self._proxies[(node_id, other)] = Proxy(self._nodes[other].raft_addr)
                    self._proxies[(other, node_id)] = Proxy(node.raft_addr)
            node.joins = True
            node.join_as_learner = bool(learner)
            self._nodes[node_id] = node
            self._mount_disk(node)
        self._fault("add-node", (node_id,), "learner" if learner else "voter")
        try:
            self.start(node_id)
            self._wait_member(node_id, voter=not learner, timeout=timeout)
        except TitanStoreError:
            self._abandon(node_id)
            raise
        return node_id

    def _abandon(self, node_id: str) -> None:
        """Undoes an :meth:`add_node` that failed: the node leaves the
        configuration (when listed) and the harness; when the cluster cannot
        remove it now, it stays a node of the harness, running."""
        try:
            if self._listed(node_id):
                with self.client(timeout=2.0, retry_timeout=5.0) as client:
                    client.remove_member(node_id)
        except TitanStoreError:
            if self._listed(node_id):
                return
        self._forget(node_id)

    def _leader_members(self) -> Optional[List[Member]]:
        """``MEMBER LIST`` of the leader a majority follows (a lagging or
        cut-off node may list an older configuration); None without one."""
        leader = self.leader()
        if leader is None:
            return None
        try:
            with self.node(leader).client(timeout=2.0) as client:
                return client.members()
        except TitanStoreError:
            return None

    def _listed(self, node_id: str) -> bool:
        """Whether the leader's configuration lists ``node_id`` (True when
        no leader answers: nobody can tell it is gone)."""
        members = self._leader_members()
        return members is None or any(m.id == node_id for m in members)

    def _forget(self, node_id: str) -> None:
        """Stops a node that is no member and puts its id back in the pool."""
        self.kill(node_id)
        with self._lock:
            node = self._nodes.pop(node_id)
            node.exit_expected = True
            node.paused = False
            # Its proxies stay: running nodes know them, and add_node may reuse the id.
            self._vacant[node_id] = node
            for key in [k for k in self._proxies if node_id in k]:
                self._proxies[key].mode = "pass"

    def _wait_member(self, node_id: str, voter: bool, timeout: float) -> None:
        role = "voter" if voter else "learner"

        def listed() -> bool:
            members = self._leader_members()
            return members is not None and any(m.id == node_id and m.voter == voter for m in members)

        self.wait_until(listed, timeout, f"{node_id} to be a {role}")

    def remove_node(self, node_id: str, timeout: float = 10.0) -> None:
        """Removes a member from the cluster (the leader too), then stops it.

        ``timeout`` bounds the retries of the request and, when it fails,
        the wait for a change that may still commit; a removal that commits
        later still is found by :meth:`forget_removed`."""
        self._check_open()
        self.node(node_id)
        self._fault("remove-node", (node_id,))
        with self.client(timeout=min(timeout, 5.0), retry_timeout=timeout) as client:
            try:
                client.remove_member(node_id)
            except TitanStoreError:
                # The change may still commit (a reply lost, a leader that
                # lost its quorum before the commit): give it a moment.
                deadline = time.monotonic() + timeout
                while self._listed(node_id):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        self._forget(node_id)

    def forget_removed(self) -> List[str]:
        """Stops and forgets the nodes the cluster removed without a
        :meth:`remove_node` that saw it (a removal that committed after its
        call gave up); returns their ids."""
        self._check_open()
        gone: List[str] = []
        for node in self.nodes:
            status = node.status()
            if status is not None and status.role == "removed" and not self._listed(node.id):
                self._fault("removed", (node.id,), "the cluster removed it after remove_node gave up")
                self._forget(node.id)
                gone.append(node.id)
        return gone

    def replace_node(self, node_id: str) -> None:
        """Replaces a node whose disk is lost: kill it, wipe its data dir,
        remove it, and add a fresh node with the same id (``--join``); returns
        once it is a voter again."""
        self._check_open()
        node = self.node(node_id)
        self._fault("replace-node", (node_id,))
        self.kill(node_id)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        with self.client() as client:
            client.remove_member(node_id)
        node.joins = True
        node.join_as_learner = False
        self.start(node_id)
        self._wait_member(node_id, voter=True, timeout=30.0)

    def transfer_leader(self, to: Optional[str] = None) -> str:
        """Moves leadership to ``to`` (or the most caught-up voter); returns the new leader."""
        self._check_open()
        if to is not None:
            self.node(to)
        self._fault("transfer", (to,) if to else (), "")
        with self.client() as client:
            client.transfer_leader(to)
        if to is not None:
            target: str = to
            self.wait_until(lambda: self.leader() == target, 10.0, f"{target} to lead")
            return target
        return self.wait_for_leader()

    def close(self) -> None:
        """Kills every node and proxy; removes the temp data dir unless kept."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            everyone = [*self._nodes.values(), *self._vacant.values()]
            for node in everyone:
                node.exit_expected = True
        for node in everyone:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            node.paused = False
        for proxy in self._proxies.values():
            proxy.close()
        for disk in self._disks.values():
            try:
                disk.unmount()
            except HarnessError:
                pass
        self._disks.clear()
        _LIVE_CLUSTERS.discard(self)
        if self._owns_dir and not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise HarnessError("cluster is closed")

    # ----- nodes -----------------------------------------------------------

    @property
    def nodes(self) -> List[ClusterNode]:
        return list(self._nodes.values())

    @property
    def node_ids(self) -> List[str]:
        return list(self._nodes)

    def node(self, node_id: str) -> ClusterNode:
        if not isinstance(node_id, str):
            raise TypeError(f"a node id must be a str such as 'node1', not {type(node_id).__name__}")
        try:
            return self._nodes[node_id]
        except KeyError:
            raise ValueError(f"no node {node_id!r}; nodes are {', '.join(self._nodes)}") from None

    def client(self, timeout: float = 5.0, retry_timeout: float = 10.0) -> Client:
        """A client that knows every node and follows redirects."""
        self._check_open()
        return Client(
            [n.client_addr for n in self._nodes.values()],
            timeout=timeout,
            retry_timeout=retry_timeout,
            max_line_bytes=self._max_line_bytes,
        )

    def _command(self, node: ClusterNode) -> List[str]:
        """The node's command line; also sets ``node.routed`` for the process."""
        others = [other for other in self._nodes.values() if other.id != node.id]
        peers = [] if node.joins else [other for other in others if not other.joins]
        args = [
            "--id", node.id,
            "--port", str(node.raft_port),
            "--client-port", str(node.client_port),
            "--advertise-client-addr", node.client_addr,
            "--advertise-raft-addr", node.raft_addr,
            "--data-dir", str(node.data_dir),
        ]  # fmt: skip
        if node.joins:
            # A new member: it asks the running nodes to add it.
            # (A paused node would hold the request until its timeout.)
            join = ",".join(o.client_addr for o in others if o.is_running and not o.paused)
            args += ["--join", join or others[0].client_addr]
            if node.join_as_learner:
                args.append("--join-as-learner")
        elif peers:
            args += ["--peers", ",".join(
                f"{o.id}:127.0.0.1:{self._proxies[(node.id, o.id)].port}:{o.client_port}" for o in peers
            )]  # fmt: skip
        # Every other member, spare and removed id is reached through this
        # node's proxy to it, also one that joins after this node started.
        listed = {o.id for o in peers}
        via = [i for i in (*self._nodes, *self._vacant) if i != node.id and (node.id, i) in self._proxies]
        override = [i for i in via if i not in listed]
        if override:
            args += ["--peer-addr", ",".join(f"{i}=127.0.0.1:{self._proxies[(node.id, i)].port}" for i in override)]
        node.routed = frozenset(via)
        args += _flag_args(self.node_flags)
        return [*self._server_command(), *args]

    def _link_problem(self, a: str, b: str) -> Optional[str]:
        """Why a fault on the link a<->b could not hold both ways, or None."""
        for x, y in ((a, b), (b, a)):
            node = self._nodes[x]
            if node.is_running and y not in node.routed:
                return (
                    f"the link {a}<->{b} cannot be cut both ways: {x} was started before {y} was added "
                    f"(spare ids used up) and dials it directly; restart {x}, or make the Cluster with more spare_nodes"
                )
        return None

    def _spawn(self, node: ClusterNode) -> None:
        self._fault("start", (node.id,))
        with self._lock:
            node.starting = True  # a death now is reported by the start itself
        # Not under the lock: the spawner thread takes it to poll for exits.
        with open(node.log_path, "ab") as log:
            node.log_offset = log.tell()
            process = _process.spawn(self._command(node), log)
        with self._lock:
            node.process = process
            node.exit_expected = False
            node.paused = False

    def _wait_ready(self, node: ClusterNode) -> None:
        deadline = time.monotonic() + self.startup_timeout
        listening = f"titanstore node {node.id} listening "
        bound = False
        while True:
            process = node.process
            assert process is not None
            code = process.poll()
            if code is not None:
                with self._lock:
                    node.exit_reported = process
                    node.starting = False
                output = node.log_of_this_run().splitlines()
                lines = [line for line in output if line.strip() and not line.startswith("--- harness ")]
                last = _shorten(lines[-1].strip(), 160) if lines else "(no output)"
                self._fault("died", (node.id,), f"exit code {code} during start-up")
                raise self._error(f"{node.id} exited during start-up with exit code {code}: {last}")
            # The log proves this process bound the ports; STATUS that it answers there.
            bound = bound or listening in node.log_of_this_run()
            if bound:
                status = node.status(timeout=0.5)
                if status is not None and status.id == node.id:
                    return
            if time.monotonic() > deadline:
                raise self._error(f"{node.id} did not answer STATUS within {self.startup_timeout} s")
            time.sleep(0.02)

    def kill(self, node_id: str) -> None:
        """SIGKILL: the node gets no chance to flush or say goodbye."""
        self._check_open()
        node = self.node(node_id)
        with self._lock:
            self.poll_exits()  # a death before this call stays reported
            process = node.process if node.is_running else None
            node.exit_expected = True
        if process is not None:
            self._fault("kill", (node_id,))
            process.kill()
            process.wait()
        node.paused = False

    def stop(self, node_id: str, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self._check_open()
        node = self.node(node_id)
        with self._lock:
            self.poll_exits()
            process = node.process
            if process is None or process.poll() is not None:
                return process.returncode if process is not None else None
            node.exit_expected = True
        self._fault("stop", (node_id,))
        if node.paused:
            os.kill(process.pid, signal.SIGCONT)
            node.paused = False
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise self._error(f"{node_id} did not stop within {timeout} s of SIGTERM") from None

    def _mount_disk(self, node: ClusterNode) -> None:
        if not self.power_loss_enabled or node.id in self._disks:
            return
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self._disks[node.id] = LazyFs(str(node.data_dir))

    def power_loss(self, node_id: str) -> Tuple[int, int]:
        """Pulls the plug: SIGKILL, then every write the node did not fsync
        is dropped from its disk. Returns ``(writes, bytes)`` lost. Needs
        ``Cluster(power_loss=True)``; start the node again with :meth:`start`."""
        self._check_open()
        node = self.node(node_id)
        disk = self._disks.get(node_id)
        if disk is None:
            reason = power_loss_support() or "the cluster was made without power_loss=True"
            raise HarnessError(f"power_loss({node_id!r}) is not available: {reason}")
        with self._lock:
            self.poll_exits()
            process = node.process if node.is_running else None
            node.exit_expected = True
        if process is not None:
            process.kill()
            process.wait()
        node.paused = False
        lost = disk.power_loss()
        self._fault("power-loss", (node_id,), f"unsynced writes dropped={lost[0]} bytes={lost[1]}")
        return lost

    def power_loss_all(self) -> Dict[str, Tuple[int, int]]:
        """:meth:`power_loss` on every node at once (every process is killed
        before any disk forgets): the whole cluster loses power."""
        self._check_open()
        for node in self.nodes:
            if node.id not in self._disks:
                self.power_loss(node.id)  # raises with the reason
        with self._lock:
            self.poll_exits()
            running = [n for n in self.nodes if n.is_running]
            for node in running:
                node.exit_expected = True
        for node in running:
            assert node.process is not None
            node.process.kill()
        for node in running:
            assert node.process is not None
            node.process.wait()
            node.paused = False
        return {n.id: self.power_loss(n.id) for n in self.nodes}

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the node freezes mid-flight, as in a long GC pause or VM stall."""
        node = self._running(node_id)
        self._fault("pause", (node_id,))
        os.kill(node.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        node.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT after :meth:`pause`."""
        node = self._running(node_id)
        self._fault("resume", (node_id,))
        os.kill(node.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    def _running(self, node_id: str) -> ClusterNode:
        self._check_open()
        node = self.node(node_id)
        if not node.is_running:
            raise self._error(f"{node_id} is not running")
        return node

    # ----- unexpected exits ------------------------------------------------

    def poll_exits(self) -> None:
        """Records nodes that exited without a harness call (the spawner thread
        calls this every 50 ms; harness errors and :meth:`statuses` too)."""
        with self._lock:
            if self._closed:
                return
            for node in self._nodes.values():
                process = node.process
                if process is None or node.exit_expected or node.starting or node.exit_reported is process:
                    continue
                code = process.poll()
                if code is None:
                    continue
                node.exit_reported = process
                self._unexpected.append(f"{node.id} (exit code {code})")
                self._fault("died", (node.id,), f"exit code {code}, not by a harness call")

    @property
    def unexpected_exits(self) -> List[str]:
        """Nodes that died without a harness call, as ``"node2 (exit code -9)"``."""
        self.poll_exits()
        with self._lock:
            return list(self._unexpected)

    # ----- leadership ------------------------------------------------------

    def statuses(self) -> Statuses:
        """Every node's STATUS (None for nodes that are down, paused or silent);
        ``.unexpected_exits`` lists nodes that died without a harness call."""
        self._check_open()
        statuses = {node.id: node.status() for node in self.nodes}
        return Statuses(statuses, self.unexpected_exits)

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
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise self._error(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    # ----- diagnostics -----------------------------------------------------

    def _fault(self, kind: str, nodes: Tuple[str, ...], detail: str = "") -> None:
        """Records a harness action in the timeline and in the affected nodes' logs."""
        event = self.timeline.add(kind, nodes, detail)
        line = f"--- harness {event.utc} (monotonic {event.t:.6f}): {kind} {','.join(nodes)} {detail}".rstrip()
        data = f"{line} ---\n".encode()
        for node_id in nodes:
            try:
                with open(self._nodes[node_id].log_path, "ab") as log:
                    log.write(data)
            except OSError:
                pass

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every node's log."""
        return "\n".join(f"--- {n.id} ({n.log_path}) ---\n{n.log_tail(lines)}" for n in self.nodes)

    def _error(self, message: str) -> HarnessError:
        exits = self.unexpected_exits
        if exits:
            message = f"{message}; died unexpectedly: {', '.join(exits)}"
        return HarnessError(_shorten(message, _MAX_MESSAGE), logs=self.logs(), unexpected_exits=exits)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Cluster {len(self._nodes)} nodes at {self.data_dir}{state}>"
