"""Network faults for :class:`~titanstore.Cluster`, named like raft-rs's test
network: ``cut``, ``connect``, ``isolate``, ``partition``, ``heal`` and
latency with jitter, all through the proxy the harness puts on every ordered
pair of nodes. ``mode="reset"`` closes connections and refuses new ones (a
crashed peer, a firewall's REJECT); ``mode="blackhole"`` keeps connections
open and silently drops every byte (``iptables -j DROP``), so peers learn of
the cut only through their own timeouts.

A fault that could hold only one way (a link to a node added after the
harness's spare ids ran out, which older processes dial directly; see
``cluster``) raises :class:`HarnessError` before any link changes.

Arguments that would make a call do nothing (one end of a link, a node in
two groups, a bare ``str`` for a group) raise instead; every fault is
recorded through the cluster's ``_fault``.
"""

from __future__ import annotations

import itertools
from typing import Collection, Dict, Iterable, List, Optional, Set, Tuple

from ._titanstore import Proxy
from .exceptions import HarnessError

__all__ = ["NetworkFaults"]

_MODES = ("reset", "blackhole")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class NetworkFaults:
    """The network-fault half of :class:`~titanstore.Cluster` (a mixin)."""

    _proxies: Dict[Tuple[str, str], Proxy]

    @property
    def node_ids(self) -> List[str]:
        raise NotImplementedError

    def node(self, node_id: str) -> object:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def _fault(self, kind: str, nodes: Tuple[str, ...], detail: str = "") -> None:
        raise NotImplementedError

    def _link_problem(self, a: str, b: str) -> Optional[str]:
        raise NotImplementedError

    def _check_two_sided(self, links: Iterable[Tuple[str, str]]) -> None:
        for a, b in links:
            problem = self._link_problem(a, b)
            if problem is not None:
                raise HarnessError(problem)

    def _check_mode(self, mode: str) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, not {mode!r}")

    def _pair(self, a: str, b: str) -> None:
        self._check_open()
        self.node(a), self.node(b)
        if a == b:
            raise ValueError(f"a link joins two different nodes; got {a!r} twice")

    def _set_link(self, a: str, b: str, mode: str) -> None:
        self._proxies[(a, b)].mode = mode
        self._proxies[(b, a)].mode = mode

    def cut(self, a: str, b: str, mode: str = "reset") -> None:
        """Cuts traffic between ``a`` and ``b`` both ways, closing open connections.

        ``mode="blackhole"`` keeps connections open and drops the bytes instead.
        """
        self._pair(a, b)
        self._check_mode(mode)
        self._check_two_sided([(a, b)])
        self._fault("cut", (a, b), f"mode={mode}")
        self._set_link(a, b, mode)

    def connect(self, a: str, b: str) -> None:
        """Restores the link between ``a`` and ``b``."""
        self._pair(a, b)
        self._fault("connect", (a, b))
        self._set_link(a, b, "pass")

    def isolate(self, node_id: str, mode: str = "reset") -> None:
        """Cuts ``node_id`` off from every other node (clients still reach it)."""
        self._check_open()
        self.node(node_id)
        self._check_mode(mode)
        self._check_two_sided((node_id, other) for other in self.node_ids if other != node_id)
        self._fault("isolate", (node_id,), f"mode={mode}")
        for other in self.node_ids:
            if other != node_id:
                self._set_link(node_id, other, mode)

    def partition(self, *groups: Collection[str], mode: str = "reset") -> None:
        """Splits the cluster: nodes talk only within their group.

        Each group is a collection of node ids (``{"node1"}``, not ``"node1"``);
        no node may be in two groups. Nodes named in no group form one more
        group together.
        """
        self._check_open()
        self._check_mode(mode)
        if not groups:
            raise ValueError("partition needs at least one group of node ids")
        sets: List[Set[str]] = []
        seen: Dict[str, int] = {}
        for i, group in enumerate(groups):
            if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
                raise TypeError(
                    f"partition: group {i + 1} must be a collection of node ids such as {{'node1'}}, "
                    f"not {type(group).__name__} {group!r}"
                )
            members = set(group)
            for node_id in members:
                self.node(node_id)
                if node_id in seen:
                    raise ValueError(f"partition: {node_id!r} is in group {seen[node_id] + 1} and group {i + 1}")
                seen[node_id] = i
            sets.append(members)
        rest = set(self.node_ids) - set(seen)
        if rest:
            sets.append(rest)
        shown = " | ".join("{" + ",".join(sorted(g)) + "}" for g in sets)
        group_of = {n: i for i, g in enumerate(sets) for n in g}
        self._check_two_sided((a, b) for a, b in itertools.combinations(self.node_ids, 2) if group_of[a] != group_of[b])
        self._fault("partition", tuple(self.node_ids), f"{shown} mode={mode}")
        for a, b in itertools.combinations(self.node_ids, 2):
            self._set_link(a, b, "pass" if group_of[a] == group_of[b] else mode)

    def heal(self) -> None:
        """Restores every link and removes added latency."""
        self._check_open()
        self._fault("heal", tuple(self.node_ids))
        for proxy in self._proxies.values():
            proxy.mode = "pass"
            proxy.latency_ms = 0
            proxy.jitter_ms = 0

    def set_latency(self, ms: int, a: Optional[str] = None, b: Optional[str] = None, jitter_ms: int = 0) -> None:
        """Delays traffic by ``ms`` (plus a random ``0..=jitter_ms`` per chunk,
        order kept) on the link a<->b (both given), or on every link. The
        delay does not cap a link's throughput: bytes keep flowing in."""
        self._check_open()
        for name, value in (("ms", ms), ("jitter_ms", jitter_ms)):
            if not _is_int(value):
                raise TypeError(f"set_latency({name}=...) must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"set_latency({name}=...) must be >= 0, not {value}")
        if (a is None) != (b is None):
            raise ValueError("set_latency needs both ends of a link (a and b), or neither for every link")
        if a is not None and b is not None:
            self._pair(a, b)
            affected: Tuple[str, ...] = (a, b)
            if ms or jitter_ms:
                self._check_two_sided([(a, b)])
        else:
            affected = tuple(self.node_ids)
            if ms or jitter_ms:
                self._check_two_sided(itertools.combinations(self.node_ids, 2))
        self._fault("latency", affected, f"ms={ms} jitter_ms={jitter_ms}" if jitter_ms else f"ms={ms}")
        for (x, y), proxy in self._proxies.items():
            if a is None or {x, y} == {a, b}:
                proxy.latency_ms = ms
                proxy.jitter_ms = jitter_ms
