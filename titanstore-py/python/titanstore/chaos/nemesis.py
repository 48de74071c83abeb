"""The chaos runner's nemesis: a seeded, overlapping fault schedule applied
to a :class:`~titanstore.Cluster`, with every fault verified as applied.

The schedule (when each fault starts, how long it holds, its random choices)
comes from the seed alone. What a fault hits is decided when it is applied,
from the cluster as it is then: ``kill-leader`` asks every node's ``STATUS``
for the leader at that moment and records it as ``leader_before``. A fault
that cannot be applied (no leader to aim at, too many nodes already down) is
counted as skipped, never as applied. Network faults stack: each active
fault owns the links it cuts, and a link passes again only when no active
fault still cuts it.

Membership faults change who the cluster is: ``add-node`` starts a fresh
node that joins (``Cluster.add_node``, behind proxies both ways, so later
network faults hit it like any member), ``remove-node`` removes a member
that is up (the first one aims at the leader, later ones half the time) and
stops it, ``transfer`` moves leadership to a random other voter. The
cluster stays between 3 voters and the starting size + 2 (``max_members``),
a removal must leave the nodes that are up a majority of the new
configuration, and a network fault applied before a node (re)joined never
cuts that node's links.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from ..cluster import Cluster
from ..exceptions import TitanStoreError
from ..power import power_loss_support

__all__ = [
    "FAULT_KINDS", "MEMBERSHIP_KINDS", "MIN_VOTERS", "OPT_IN_KINDS", "AppliedFault", "Nemesis", "PlannedFault", "plan", "supported_kinds",
]  # fmt: skip

#: Every fault kind the runner knows, in the order they are documented.
FAULT_KINDS = (
    "kill",
    "kill-leader",
    "pause",
    "partition",
    "bridge",
    "isolate-leader",
    "slow-net",
    "power-loss",
    "transfer",
    "add-node",
    "remove-node",
)

#: Kinds a run without ``faults`` leaves out: name them to run them. Under
#: heavy overlapping faults a join or a removal can hold the nemesis for
#: seconds (it waits for the change), which stretches the faults in force;
#: runs stay correct but miss coverage more often than without them.
OPT_IN_KINDS = ("add-node", "remove-node")

#: Faults that change the members or the leader at once (no hold).
MEMBERSHIP_KINDS = frozenset({"transfer", "add-node", "remove-node"})

#: A run never shrinks the cluster below this many voters.
MIN_VOTERS = 3

Link = FrozenSet[str]

#: Faults that take a node down; at most a minority at once.
_PROCESS_KINDS = frozenset({"kill", "kill-leader", "pause", "power-loss"})

#: A fault that cannot be applied when due is tried again this many times, 0.5 s apart.
_RETRIES = 4


def supported_kinds() -> Tuple[Tuple[str, ...], Dict[str, str]]:
    """The kinds this machine can run, and why each other kind cannot."""
    unsupported: Dict[str, str] = {}
    reason = power_loss_support()
    if reason is not None:
        unsupported["power-loss"] = reason
    return tuple(k for k in FAULT_KINDS if k not in unsupported), unsupported


@dataclass(frozen=True)
class PlannedFault:
    """One fault of the seeded schedule; times in seconds from the run's start."""

    index: int
    kind: str
    at: float
    hold: float
    seed: int
    #: The first of its kind: tried until it applies or the run ends, so
    #: every chosen kind happens in a run long enough to hold it.
    must: bool = False


def plan(kinds: Tuple[str, ...], duration: float, seed: int, quiet_tail: float = 2.0) -> List[PlannedFault]:
    """The seeded schedule: faults start every 0.5-2.5 s and hold 1-4 s, so
    they overlap; none starts in the last ``quiet_tail`` seconds. Every kind
    comes once (in a seeded order, 0.6-1.4 s apart, holding 1-2.5 s) before
    any comes twice."""
    rng = random.Random(seed)
    faults: List[PlannedFault] = []
    first = list(kinds)
    rng.shuffle(first)
    t = rng.uniform(0.8, 1.5)
    while kinds and t < duration - quiet_tail:
        must = bool(first)
        kind = first.pop(0) if first else rng.choice(kinds)
        hold = 0.0 if kind in MEMBERSHIP_KINDS else rng.uniform(1.0, 2.5 if must else 4.0)
        hold = min(hold, max(duration - t - 0.5, 0.0))
        faults.append(PlannedFault(len(faults), kind, t, hold, rng.randrange(1 << 32), must))
        # The first round comes faster, so short runs still see every kind.
        t += rng.uniform(0.6, 1.4) if first else rng.uniform(0.5, 2.5)
    return faults


@dataclass
class AppliedFault:
    """A fault as it happened (a line of ``faults.jsonl``)."""

    index: int
    kind: str
    at: float
    targets: Tuple[str, ...]
    leader_before: Optional[str]
    detail: str
    verified: bool
    overlapping: int
    ended: Optional[float] = None
    leader_on_minority: bool = False
    # Network faults: the links this fault cuts and how; latency per link.
    links: Dict[Link, str] = field(default_factory=dict, repr=False)
    latency: Dict[Link, Tuple[int, int]] = field(default_factory=dict, repr=False)


class Nemesis:
    """Runs a schedule against ``cluster`` on the calling thread (:meth:`run`)."""

    def __init__(
        self,
        cluster: Cluster,
        schedule: List[PlannedFault],
        started: float,
        stop: threading.Event,
        log: Callable[[str], None] = lambda _line: None,
        max_members: Optional[int] = None,
    ) -> None:
        self.cluster = cluster
        #: ``add-node`` never grows the cluster past this (default: its size + 2).
        self.max_members = max_members if max_members is not None else len(cluster.node_ids) + 2
        self.schedule = schedule
        self.started = started
        self.stop = stop
        self.log = log
        self.applied: List[AppliedFault] = []
        self.skipped: Dict[str, int] = {}
        #: The last reason each kind could not be applied.
        self.skip_reasons: Dict[str, str] = {}
        self.errors: List[str] = []
        self._active: Dict[int, AppliedFault] = {}
        self._down: Set[str] = set()  # killed, paused or powered off by a fault
        self._lock = threading.Lock()
        self._paused_once = False
        self._removed_once = False
        self._blackholed_once = False
        self._final = True
        #: When each member joined (run seconds; the first members at 0): a
        #: network fault only cuts links between nodes that were members
        #: when it was applied, never a removed id's successor.
        self._joined: Dict[str, float] = {n: 0.0 for n in cluster.node_ids}

    # ----- the loop --------------------------------------------------------

    def run(self) -> None:
        """Applies and ends faults on schedule until it is done or ``stop`` is set."""
        events: List[Tuple[float, int, int, PlannedFault]] = []
        counter = itertools.count()
        attempts: Dict[int, int] = {}
        waiting: Set[int] = set()  # first faults of a process kind not yet applied
        for fault in self.schedule:
            heapq.heappush(events, (fault.at, 1, next(counter), fault))
        while events and not self.stop.is_set():
            at, is_start, _, fault = heapq.heappop(events)
            self._sleep_until(self.started + at)
            if self.stop.is_set():
                break
            try:
                if is_start and not fault.must and fault.kind in _PROCESS_KINDS and waiting:
                    # A node slot is owed to a first fault of its kind.
                    self.skipped[fault.kind] = self.skipped.get(fault.kind, 0) + 1
                    self.skip_reasons[fault.kind] = "yielded to the first fault of a kind still waiting"
                    continue
                if is_start:
                    retry = fault.must or attempts.get(fault.index, 0) < _RETRIES
                    applied = self._start(fault, final=not retry)
                    if fault.must and fault.kind in _PROCESS_KINDS:
                        if applied is None:
                            waiting.add(fault.index)
                        else:
                            waiting.discard(fault.index)
                    if applied is not None:
                        heapq.heappush(events, (self._now() + fault.hold, 0, next(counter), fault))
                    elif retry:
                        # Not applicable now (no leader yet, too many nodes down): try again soon.
                        attempts[fault.index] = attempts.get(fault.index, 0) + 1
                        heapq.heappush(events, (self._now() + 0.5, 1, next(counter), fault))
                else:
                    self._end(fault.index)
            except TitanStoreError as err:
                self.errors.append(f"{fault.kind} #{fault.index}: {err}")
                self.log(f"nemesis: {fault.kind} #{fault.index} failed: {err}")
        for _, is_start, _, fault in events:
            if is_start:
                self.skipped[fault.kind] = self.skipped.get(fault.kind, 0) + 1
                why = self.skip_reasons.get(fault.kind, "not due yet")
                if not why.startswith("the run ended first"):
                    self.skip_reasons[fault.kind] = f"the run ended first (last try: {why})"
                self.log(f"nemesis: {fault.kind} #{fault.index} skipped: {self.skip_reasons[fault.kind]}")

    def _sleep_until(self, deadline: float) -> None:
        self.stop.wait(max(0.0, deadline - time.monotonic()))

    def heal_all(self) -> None:
        """Ends every active fault, then heals the network and starts every node."""
        for index in sorted(self._active):
            try:
                self._end(index)
            except TitanStoreError as err:
                self.errors.append(f"ending #{index}: {err}")
        self.cluster.heal()
        for node in self.cluster.nodes:
            if node.paused:
                self.cluster.resume(node.id)
        self.cluster.start()
        self.cluster.wait_for_leader(timeout=30)
        self._forget_removed()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    # ----- applying --------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _leader(self, wait: float) -> Optional[str]:
        deadline = time.monotonic() + wait
        while True:
            leader = self.cluster.leader()
            if leader is not None or time.monotonic() >= deadline or self.stop.is_set():
                return leader
            time.sleep(0.05)

    def _skip(self, fault: PlannedFault, why: str) -> None:
        self.skip_reasons[fault.kind] = why
        if self._final:
            self.skipped[fault.kind] = self.skipped.get(fault.kind, 0) + 1
            self.log(f"nemesis: {fault.kind} #{fault.index} skipped: {why}")

    def _start(self, fault: PlannedFault, final: bool = True) -> Optional[AppliedFault]:
        """Applies ``fault``, or returns None when it cannot be applied now
        (counted as skipped only on the ``final`` attempt)."""
        self._final = final
        rng = random.Random(fault.seed)
        self._forget_removed()
        ids = self.cluster.node_ids
        # The first pause always aims at the leader, later ones half the time.
        wants_leader = fault.kind in ("kill-leader", "isolate-leader", "transfer", "add-node") or (
            fault.kind in ("pause", "remove-node")
            and (not (self._paused_once if fault.kind == "pause" else self._removed_once) or rng.random() < 0.5)
        )
        leader = self._leader(2.0 if wants_leader or fault.kind in MEMBERSHIP_KINDS else 0.0)
        up = [n for n in ids if n not in self._down]
        may_take_down = len(self._down) < (len(ids) - 1) // 2
        at = self._now()
        overlapping = self.active
        targets: Tuple[str, ...]
        detail = ""
        links: Dict[Link, str] = {}
        latency: Dict[Link, Tuple[int, int]] = {}
        minority = False

        if fault.kind in ("kill", "kill-leader", "pause", "power-loss"):
            if not may_take_down:
                self._skip(fault, f"{len(self._down)} nodes already down")
                return None
            if fault.kind == "kill-leader" or (fault.kind == "pause" and wants_leader):
                if leader is None or leader in self._down:
                    self._skip(fault, "no leader")
                    return None
                target = leader
            else:
                target = rng.choice(up)
            targets = (target,)
            if fault.kind in ("kill", "kill-leader"):
                self.cluster.kill(target)
                verified = not self.cluster.node(target).is_running
            elif fault.kind == "pause":
                self.cluster.pause(target)
                self._paused_once = True
                verified = _stopped(self.cluster.node(target).pid)
            else:
                writes, lost = self.cluster.power_loss(target)
                detail = f"unsynced writes dropped={writes} bytes={lost}"
                verified = not self.cluster.node(target).is_running
            self._down.add(target)
        elif fault.kind in ("partition", "bridge", "isolate-leader"):
            # The first cut drops silently; later ones pick blackhole or reset.
            mode = rng.choice(("blackhole", "reset")) if self._blackholed_once else "blackhole"
            detail = f"mode={mode}"
            if fault.kind == "isolate-leader":
                if leader is None:
                    self._skip(fault, "no leader")
                    return None
                groups = [{leader}, set(ids) - {leader}]
                cut = _cuts_between(groups)
            else:
                shuffled = list(ids)
                rng.shuffle(shuffled)
                if fault.kind == "partition":
                    size = rng.randint(1, (len(ids) - 1) // 2) if len(ids) > 2 else 1
                    groups = [set(shuffled[:size]), set(shuffled[size:])]
                    cut = _cuts_between(groups)
                else:
                    if len(ids) < 3:
                        self._skip(fault, "a bridge needs 3 nodes")
                        return None
                    bridge, rest = shuffled[0], shuffled[1:]
                    half = len(rest) // 2
                    groups = [set(rest[:half]), set(rest[half:])]
                    cut = _cuts_between(groups)
                    detail += f" bridge={bridge}"
            detail += " groups=" + "|".join(",".join(sorted(g)) for g in groups)
            links = {link: mode for link in cut}
            targets = tuple(sorted({n for link in cut for n in link}))
            if leader is not None:
                reachable = {leader} | {n for n in ids if n != leader and frozenset((leader, n)) not in cut}
                minority = len(reachable) < len(ids) // 2 + 1
        elif fault.kind == "slow-net":
            ms, jitter = rng.randint(20, 150), rng.randint(0, 100)
            scope = rng.choice(ids + ["all"])
            pairs = [frozenset(p) for p in itertools.combinations(ids, 2)]
            chosen = [p for p in pairs if scope == "all" or scope in p]
            latency = {p: (ms, jitter) for p in chosen}
            targets = tuple(ids) if scope == "all" else (scope,)
            detail = f"ms={ms} jitter_ms={jitter}"
        elif fault.kind == "transfer":
            # A voter the leader reaches: a cut one could never take over.
            modes = self._wanted()[0]
            voters = [n for n in up if n != leader and frozenset((leader, n)) not in modes]
            if leader is None or not voters:
                self._skip(fault, "no leader" if leader is None else "no other voter up")
                return None
            to = rng.choice(voters)
            targets = (to,)
            try:
                new = self.cluster.transfer_leader(to)
            except TitanStoreError as err:
                self._skip(fault, f"transfer refused: {err}")
                return None
            verified = new == to
        elif fault.kind == "add-node":
            if len(ids) >= self.max_members:
                self._skip(fault, f"{len(ids)} members already (this run allows {self.max_members})")
                return None
            if leader is None:
                self._skip(fault, "no leader")
                return None
            try:
                added = self.cluster.add_node(timeout=6.0)
            except TitanStoreError as err:
                self._skip(fault, f"add refused: {err}")
                return None
            self._joined[added] = self._now()
            targets = (added,)
            detail = f"members={len(ids) + 1}"
            verified = self._voter(added)
        elif fault.kind == "remove-node":
            if len(ids) <= MIN_VOTERS:
                self._skip(fault, f"only {len(ids)} members (a run keeps at least {MIN_VOTERS} voters)")
                return None
            if leader is None:
                self._skip(fault, "no leader")
                return None
            if wants_leader and leader not in self._down:
                target = leader
            else:
                choices = [n for n in up if n != leader]
                if not choices:
                    self._skip(fault, "no follower up")
                    return None
                target = rng.choice(choices)
            # The nodes up after the change must commit it and go on: a
            # majority of the new configuration that the active cuts leave connected.
            reach = self._largest_group([n for n in up if n != target])
            if reach < (len(ids) - 1) // 2 + 1:
                self._skip(fault, f"removing {target} would leave no connected majority up ({reach} of {len(ids) - 1})")
                return None
            try:
                self.cluster.remove_node(target, timeout=3.0)
            except TitanStoreError as err:
                self._skip(fault, f"remove refused: {err}")
                return None
            self._joined.pop(target, None)
            self._removed_once = self._removed_once or target == leader
            targets = (target,)
            detail = f"members={len(ids) - 1}" + (" leader" if target == leader else "")
            # remove_node returned: the change committed, or the leader no longer lists it.
            members = self.cluster._leader_members()
            verified = target not in self.cluster.node_ids and (members is None or all(m.id != target for m in members))
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

        applied = AppliedFault(
            fault.index, fault.kind, at, targets, leader, detail, False, overlapping,
            leader_on_minority=minority, links=links, latency=latency,
        )  # fmt: skip
        if links or latency:
            with self._lock:
                self._active[fault.index] = applied
            self._apply_network()
            verified = self._network_matches()
            self._blackholed_once = self._blackholed_once or "blackhole" in links.values()
        applied.verified = verified
        with self._lock:
            if fault.kind in MEMBERSHIP_KINDS:
                applied.ended = self._now()
            else:
                self._active[fault.index] = applied
            self.applied.append(applied)
        self.log(
            f"nemesis: {fault.kind} {','.join(targets)} (leader {leader or '-'}) {detail}".rstrip()
            + ("" if verified else " NOT VERIFIED")
        )
        return applied

    def _forget_removed(self) -> None:
        """Drops the nodes a removal that committed late took out."""
        for node_id in self.cluster.forget_removed():
            self._joined.pop(node_id, None)
            self._down.discard(node_id)
            self.log(f"nemesis: {node_id} was removed by a change that committed after its call gave up")

    def _end(self, index: int) -> None:
        with self._lock:
            fault = self._active.pop(index, None)
        if fault is None:
            return
        if fault.kind in _PROCESS_KINDS and fault.targets[0] not in self.cluster.node_ids:
            pass  # removed meanwhile (see _forget_removed)
        elif fault.kind in ("kill", "kill-leader", "power-loss"):
            self.cluster.start(fault.targets[0])
            self._down.discard(fault.targets[0])
        elif fault.kind == "pause":
            self.cluster.resume(fault.targets[0])
            self._down.discard(fault.targets[0])
        else:
            self._apply_network()
        fault.ended = self._now()

    # ----- the network as the active faults make it ------------------------

    def _wanted(self) -> Tuple[Dict[Link, str], Dict[Link, Tuple[int, int]]]:
        modes: Dict[Link, str] = {}
        delays: Dict[Link, Tuple[int, int]] = {}
        with self._lock:
            active = list(self._active.values())
        for fault in active:
            for link, mode in fault.links.items():
                # A blackhole wins over a reset: it is the harsher of the two.
                if self._holds(link, fault) and modes.get(link) != "blackhole":
                    modes[link] = mode
            for link, (ms, jitter) in fault.latency.items():
                if not self._holds(link, fault):
                    continue
                old = delays.get(link, (0, 0))
                delays[link] = (max(old[0], ms), max(old[1], jitter))
        return modes, delays

    def _apply_network(self) -> None:
        modes, delays = self._wanted()
        for a, b in itertools.combinations(self.cluster.node_ids, 2):
            link = frozenset((a, b))
            mode = modes.get(link, "pass")
            if self._link_mode(a, b) != mode:
                if mode == "pass":
                    self.cluster.connect(a, b)
                else:
                    self.cluster.cut(a, b, mode=mode)
            ms, jitter = delays.get(link, (0, 0))
            if self._link_latency(a, b) != (ms, jitter):
                self.cluster.set_latency(ms, a, b, jitter_ms=jitter)

    def _link_mode(self, a: str, b: str) -> str:
        return self.cluster._proxies[(a, b)].mode

    def _link_latency(self, a: str, b: str) -> Tuple[int, int]:
        proxy = self.cluster._proxies[(a, b)]
        return proxy.latency_ms, proxy.jitter_ms

    def _largest_group(self, nodes: List[str]) -> int:
        """The most of ``nodes`` that reach each other over links no active fault cuts."""
        modes = self._wanted()[0]
        left, best = set(nodes), 0
        while left:
            group, todo = set(), [left.pop()]
            while todo:
                n = todo.pop()
                group.add(n)
                near = {m for m in left if frozenset((n, m)) not in modes}
                left -= near
                todo += near
            best = max(best, len(group))
        return best

    def _holds(self, link: Link, fault: AppliedFault) -> bool:
        """Whether ``fault`` still cuts (or slows) ``link``: both ends are
        members that were members when it was applied."""
        return all(n in self._joined and self._joined[n] <= fault.at for n in link)

    def _voter(self, node_id: str) -> bool:
        """The leader's configuration lists ``node_id`` as a voter."""
        members = self.cluster._leader_members()
        return members is not None and any(m.id == node_id and m.voter for m in members)

    def _network_matches(self) -> bool:
        """Reads every proxy between members back: the links are as the active faults want."""
        modes, delays = self._wanted()
        members = set(self.cluster.node_ids)
        for (a, b), proxy in list(self.cluster._proxies.items()):
            if a not in members or b not in members:
                continue
            link = frozenset((a, b))
            if proxy.mode != modes.get(link, "pass"):
                return False
            if (proxy.latency_ms, proxy.jitter_ms) != delays.get(link, (0, 0)):
                return False
        return True


def _cuts_between(groups: List[Set[str]]) -> Set[Link]:
    return {frozenset((a, b)) for g, h in itertools.combinations(groups, 2) for a in g for b in h}


def _stopped(pid: Optional[int]) -> bool:
    """True when the process is stopped (``T`` in ``/proc/<pid>/stat``)."""
    if pid is None:
        return False
    deadline = time.monotonic() + 1.0
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("T", "t"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
