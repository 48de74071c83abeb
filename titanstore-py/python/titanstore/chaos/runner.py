"""``titanstore.chaos.run``: one chaos run from start to verdict.

Real node processes through :class:`~titanstore.Cluster`; ``clients``
threads, each starting at a random node as real users do, write unique
values, delete and read ``keys`` keys; the :class:`~.nemesis.Nemesis`
applies the seeded fault schedule meanwhile. At the end every fault is
undone, the cluster must converge (every node applied the same index), every
key is read on every node and once through the leader, and the whole
history is checked for linearizability and for acknowledged writes that the
final state lost. Coverage is counted from what happened, and a run fails
when a required coverage count is zero.
"""

from __future__ import annotations

import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple, Union

from .._titanstore import CheckResult
from ..client import Client
from ..cluster import Cluster, FlagValue
from ..exceptions import ConflictError, TitanStoreError
from .history import History, Operation, check_operations
from .nemesis import FAULT_KINDS, MEMBERSHIP_KINDS, OPT_IN_KINDS, AppliedFault, Nemesis, plan, supported_kinds

__all__ = ["COVERAGE", "RunResult", "run", "lost_writes"]

#: Coverage names, counted from the run.
COVERAGE = (
    "leader-changes",
    "leader-kills",
    "leader-pauses",
    "leader-minority-partitions",
    "silent-drops",
    "snapshot-installs",
    "power-losses",
    "overlapping-faults",
    "transfers",
    "nodes-added",
    "nodes-removed",
    "leader-removals",
)

_LEADER_FAULTS = {
    "kill", "kill-leader", "pause", "partition", "bridge", "isolate-leader", "power-loss", "transfer", "remove-node",
}  # fmt: skip
_LAGGING_FAULTS = {"kill", "kill-leader", "partition", "bridge", "isolate-leader", "power-loss"}
_SNAPSHOT_INSTALL_LINE = "installing snapshot from leader"


def default_required(kinds: Sequence[str], snapshot_threshold: Optional[int]) -> List[str]:
    """The coverage a run with these fault kinds must reach."""
    chosen = set(kinds)
    required = []
    if chosen & _LEADER_FAULTS:
        required.append("leader-changes")
    if "kill-leader" in chosen:
        required.append("leader-kills")
    if "pause" in chosen:
        required.append("leader-pauses")
    if "isolate-leader" in chosen:
        required.append("leader-minority-partitions")
    if chosen & {"partition", "bridge", "isolate-leader"}:
        required.append("silent-drops")
    if snapshot_threshold and chosen & _LAGGING_FAULTS:
        required.append("snapshot-installs")
    if "power-loss" in chosen:
        required.append("power-losses")
    if len(chosen - MEMBERSHIP_KINDS) > 1:
        required.append("overlapping-faults")
    if "transfer" in chosen:
        required.append("transfers")
    if "add-node" in chosen:
        required.append("nodes-added")
    if "remove-node" in chosen:
        required += ["nodes-removed", "leader-removals"]
    return required


@dataclass
class RunResult:
    """What a chaos run did and found; ``passed`` and ``exit_code`` judge it."""

    seed: int
    command: str
    nodes: int
    duration_s: float
    clients: int
    keys: int
    reads: str
    fault_kinds: List[str]
    unsupported: Dict[str, str]
    ops: Dict[str, int]
    faults: Dict[str, int]
    skipped_faults: Dict[str, int]
    skip_reasons: Dict[str, str]
    coverage: Dict[str, int]
    required: List[str]
    check: Optional[CheckResult]
    operations: List[Operation]
    applied_faults: List[AppliedFault]
    lost_writes: List[Operation]
    divergent_keys: Dict[str, Dict[str, Optional[str]]]
    converged: bool
    elapsed_s: float
    errors: List[str] = field(default_factory=list)
    report_dir: Optional[Path] = None
    started_wall: float = 0.0

    @property
    def verdict(self) -> str:
        """The checker's verdict: ``"ok"``, ``"violation"`` or ``"unknown"``."""
        return self.check.verdict if self.check is not None else "unknown"

    @property
    def linearizable(self) -> Optional[bool]:
        """True / False, or None when the checker ran out of budget."""
        return {"ok": True, "violation": False}.get(self.verdict)

    @property
    def missing_coverage(self) -> List[str]:
        return [name for name in self.required if self.coverage.get(name, 0) == 0]

    @property
    def counterexample(self) -> List[Operation]:
        """The operations the checker's explanation names (empty when ok)."""
        if self.check is None or self.check.ok:
            return []
        return [self.operations[i] for i in self.check.ops if i < len(self.operations)]

    @property
    def passed(self) -> bool:
        return (
            self.linearizable is True
            and not self.lost_writes
            and not self.divergent_keys
            and self.converged
            and not self.missing_coverage
        )

    @property
    def exit_code(self) -> int:
        """0 passed; 1 an anomaly (not linearizable, lost or divergent data);
        2 no anomaly but not proven either (coverage missing, no convergence,
        checker out of budget)."""
        if self.passed:
            return 0
        if self.linearizable is False or self.lost_writes or self.divergent_keys:
            return 1
        return 2

    def format(self) -> str:
        """The closing summary, as the command line prints it."""
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [
            f"titanstore chaos: seed {self.seed}, {self.nodes} nodes, {self.clients} clients, "
            f"{self.keys} keys, {self.duration_s:g} s, reads {self.reads}",
            f"  operations: {self.ops.get('ok', 0)} ok, {self.ops.get('fail', 0)} fail, "
            f"{self.ops.get('unknown', 0)} unknown",
            f"  faults applied: {faults}",
        ]
        for kind, count in sorted(self.skipped_faults.items()):
            lines.append(f"  faults skipped: {kind} {count} ({self.skip_reasons.get(kind, '?')})")
        for kind, why in sorted(self.unsupported.items()):
            lines.append(f"  not run here: {kind}: {why}")
        lines.append("  coverage:")
        for name in COVERAGE:
            mark = " (required)" if name in self.required else ""
            flag = "  MISSING" if name in self.missing_coverage else ""
            lines.append(f"    {name:28} {self.coverage.get(name, 0):5}{mark}{flag}")
        check = self.check
        if check is not None:
            lines.append(
                f"  linearizable: {self.verdict} ({check.checked} operations checked in {check.elapsed:.2f} s)"
            )
            if not check.ok:
                key = check.key.decode("utf-8", "backslashreplace") if check.key is not None else "?"
                lines.append(f"    key {key}: {check.explanation}")
                lines += [f"    {op}" for op in self.counterexample[:20]]
        lines.append(f"  converged: {'yes' if self.converged else 'NO'}")
        lines.append(f"  lost acknowledged writes: {len(self.lost_writes)}")
        lines += [f"    {op}" for op in self.lost_writes[:10]]
        for key, values in sorted(self.divergent_keys.items()):
            lines.append(f"  DIVERGENT key {key}: {values}")
        for error in self.errors[:10]:
            lines.append(f"  error: {error}")
        if self.report_dir is not None:
            lines.append(f"  report: {self.report_dir / 'report.html'}")
        lines.append(f"  replay: {self.command}")
        verdict = "PASSED" if self.passed else ("ANOMALY FOUND" if self.exit_code == 1 else "NOT PROVEN")
        lines.append(f"  result: {verdict} (exit {self.exit_code})")
        return "\n".join(lines)


def lost_writes(ops: Sequence[Operation], final: Dict[bytes, Optional[bytes]]) -> List[Operation]:
    """Acknowledged writes and deletes the final state cannot have kept.

    Every written value is unique. With ``final[key]`` written by ``x``, an ok
    write ``w`` is lost when no write could be ordered after it that explains
    the final value: ``x`` returned before ``w`` was called (or ``x`` does
    not exist). A final "missing" is explained by a delete not entirely
    before ``w``.
    """
    by_key: Dict[bytes, List[Operation]] = {}
    for op in ops:
        if op.kind in ("write", "delete", "cas") and op.outcome != "fail":
            by_key.setdefault(op.key, []).append(op)
    lost: List[Operation] = []
    for key, writes in by_key.items():
        if key not in final:
            continue
        value = final[key]
        if value is None:
            explainers = [w for w in writes if w.kind == "delete" or (w.kind == "cas" and w.value is None)]
        else:
            explainers = [w for w in writes if w.kind in ("write", "cas") and w.value == value]
        for w in writes:
            if w.outcome != "ok" or w in explainers:
                continue
            if not any(x.ret > w.call for x in explainers):
                lost.append(w)
    return sorted(lost, key=lambda op: op.call)


class _Progress:
    """The live progress line on stderr (redrawn in place on a terminal)."""

    def __init__(self, out: Optional[IO[str]], duration: float) -> None:
        self.out = out
        self.duration = duration
        self.tty = bool(out is not None and out.isatty())
        self._last = 0.0

    def show(self, elapsed: float, counts: Dict[str, int], applied: int, active: int, leader: Optional[str]) -> None:
        if self.out is None:
            return
        line = (
            f"[{elapsed:6.1f}/{self.duration:g} s] ops ok {counts.get('ok', 0)} fail {counts.get('fail', 0)} "
            f"unknown {counts.get('unknown', 0)} | faults {applied} applied, {active} active | leader {leader or '-'}"
        )
        if self.tty:
            self.out.write("\r\x1b[K" + line)
            self.out.flush()
        elif elapsed - self._last >= 5.0 or elapsed == 0.0:
            self._last = elapsed
            self.out.write(line + "\n")
            self.out.flush()

    def message(self, text: str) -> None:
        if self.out is None:
            return
        self.out.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.out.flush()


def _replay_command(args: Dict[str, object]) -> str:
    parts = [sys.executable, "-m", "titanstore.chaos"]
    for name, value in args.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


class _Members:
    """The client addresses of the cluster's members now, for clients that
    follow membership changes (a removed node is not asked again, an added
    one is)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def addrs(self) -> Tuple[str, ...]:
        return tuple(node.client_addr for node in self.cluster.nodes)

    def local(self, addr: str) -> Optional[Client]:
        """A client bound to the member at ``addr`` only (stale reads)."""
        node = next((n for n in self.cluster.nodes if n.client_addr == addr), None)
        return node.client(timeout=1.0) if node is not None else None


def _worker(
    root: History,
    members: _Members,
    stale_reads: bool,
    keys: List[str],
    process: str,
    seed: int,
    stop: threading.Event,
) -> None:
    rng = random.Random(seed)
    serial = 0
    known: Tuple[str, ...] = ()
    opened: List[Client] = []
    history = stale = root
    try:
        while not stop.is_set():
            addrs = members.addrs()
            if addrs != known:
                # The members changed (or this is the start): a client as a
                # user would make from the new list, starting at a random node.
                known = addrs
                for client in opened:
                    client.close()
                offset = rng.randrange(len(addrs))
                client = Client(list(addrs[offset:] + addrs[:offset]), timeout=1.0, retry_timeout=1.0)
                opened = [client]
                history = stale = root.with_client(client, process)
                local = members.local(addrs[offset]) if stale_reads else None
                if local is not None:
                    opened.append(local)
                    stale = root.with_client(local, process)
            key = rng.choice(keys)
            roll = rng.random()
            try:
                if roll < 0.5:
                    if stale_reads:
                        stale.sget_bytes(key)
                    else:
                        history.get_bytes(key)
                elif roll < 0.80:
                    serial += 1
                    history.set(key, f"{process}-{serial}")
                elif roll < 0.92:
                    # Read-modify-write by revision: CONFLICT is an answer too.
                    serial += 1
                    found = history.get_rev(key)
                    try:
                        history.cas(key, f"{process}-{serial}", found[1] if found else 0)
                    except ConflictError:
                        pass
                else:
                    history.delete(key)
            except (TitanStoreError, OSError, ValueError):
                stop.wait(0.05)
            stop.wait(rng.uniform(0, 0.01))
    finally:
        for client in opened:
            client.close()


def run(
    nodes: int = 5,
    duration: float = 60.0,
    seed: Optional[int] = None,
    clients: int = 10,
    keys: int = 8,
    faults: Optional[Sequence[str]] = None,
    snapshot_threshold: Optional[int] = 200,
    report: Optional[Union[str, Path]] = None,
    reads: str = "linearizable",
    required: Optional[Sequence[str]] = None,
    binary: Optional[Union[str, Path]] = None,
    check_timeout: float = 60.0,
    progress: Optional[IO[str]] = None,
    node_flags: Optional[Dict[str, FlagValue]] = None,
) -> RunResult:
    """Runs one chaos run and returns what it found (see the module doc).

    ``faults``: fault kinds (default: every kind this machine supports but
    the opt-in ``add-node`` and ``remove-node``, see ``nemesis.OPT_IN_KINDS``);
    ``reads``: ``"linearizable"`` (GET) or ``"stale"`` (SGET on a random
    node, a canary the checker must flag); ``required``: coverage names that
    must be non-zero (default: what the chosen kinds should produce);
    ``report``: a directory to write the report folder to; ``progress``: a
    stream for the live progress line and the fault log (``sys.stderr``).
    """
    if reads not in ("linearizable", "stale"):
        raise ValueError(f"reads must be 'linearizable' or 'stale', not {reads!r}")
    if nodes < 1 or clients < 1 or keys < 1 or duration <= 0:
        raise ValueError("nodes, clients and keys must be >= 1 and duration > 0")
    supported, unsupported = supported_kinds()
    if faults is None:
        kinds = [k for k in supported if k not in OPT_IN_KINDS]
        skipped_kinds = dict(unsupported)
    else:
        kinds = list(dict.fromkeys(faults))
        for kind in kinds:
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; kinds are {', '.join(FAULT_KINDS)}")
            if kind in unsupported:
                raise ValueError(f"fault kind {kind!r} cannot run here: {unsupported[kind]}")
        skipped_kinds = {}
    if seed is None:
        seed = random.randrange(1 << 31)
    wanted = list(required) if required is not None else default_required(kinds, snapshot_threshold)
    for name in wanted:
        if name not in COVERAGE:
            raise ValueError(f"unknown coverage name {name!r}; names are {', '.join(COVERAGE)}")
    command = _replay_command(
        {
            "nodes": nodes, "duration": duration, "seed": seed, "clients": clients, "keys": keys,
            "faults": ",".join(kinds) if kinds else None, "snapshot_threshold": snapshot_threshold,
            "reads": reads if reads != "linearizable" else None,
            "require": ",".join(wanted) if required is not None else None,
            "binary": binary, "report": report,
        }
    )  # fmt: skip
    flags: Dict[str, Any] = dict(node_flags or {})
    if snapshot_threshold:
        flags["snapshot_threshold"] = snapshot_threshold
    key_names = [f"k{i}" for i in range(keys)]
    show = _Progress(progress, duration)
    report_dir = Path(report) if report is not None else None
    work = Path(tempfile.mkdtemp(prefix="titanstore-chaos-"))
    errors: List[str] = []
    started_wall = time.time()
    try:
        power = "power-loss" in kinds
        with Cluster(nodes=nodes, data_dir=work / "cluster", binary=binary, power_loss=power, **flags) as cluster:
            cluster.wait_for_leader(timeout=30)
            result = _run_cluster(
                cluster, kinds, duration, seed, clients, key_names, reads, check_timeout, show, errors
            )
            # Every node that ran, also those removed during the run.
            node_logs = sorted(cluster.data_dir.glob("node*.log"))
            if report_dir is not None:
                report_dir.mkdir(parents=True, exist_ok=True)
                logs = report_dir / "logs"
                logs.mkdir(exist_ok=True)
                for path in node_logs:
                    shutil.copyfile(path, logs / path.name)
            installs = sum(_count_lines(path, _SNAPSHOT_INSTALL_LINE) for path in node_logs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    operations, check, applied, skipped, reasons, leader_changes, converged, divergent, lost, elapsed = result
    counts = {"ok": 0, "fail": 0, "unknown": 0}
    for op in operations:
        counts[op.outcome] = counts.get(op.outcome, 0) + 1
    by_kind: Dict[str, int] = {}
    for fault in applied:
        if fault.verified:
            by_kind[fault.kind] = by_kind.get(fault.kind, 0) + 1
        else:
            errors.append(f"fault {fault.kind} #{fault.index} was applied but not verified")
    verified = [f for f in applied if f.verified]
    coverage = {
        "leader-changes": leader_changes,
        "leader-kills": sum(
            1 for f in verified if f.kind in ("kill", "kill-leader", "power-loss") and f.leader_before in f.targets
        ),
        "leader-pauses": sum(1 for f in verified if f.kind == "pause" and f.leader_before in f.targets),
        "leader-minority-partitions": sum(1 for f in verified if f.leader_on_minority),
        "silent-drops": sum(1 for f in verified if "blackhole" in f.links.values()),
        "snapshot-installs": installs,
        "power-losses": sum(1 for f in verified if f.kind == "power-loss"),
        "overlapping-faults": sum(1 for f in verified if f.overlapping > 0),
        "transfers": sum(1 for f in verified if f.kind == "transfer"),
        "nodes-added": sum(1 for f in verified if f.kind == "add-node"),
        "nodes-removed": sum(1 for f in verified if f.kind == "remove-node"),
        "leader-removals": sum(1 for f in verified if f.kind == "remove-node" and f.leader_before in f.targets),
    }
    outcome = RunResult(
        seed=seed, command=command, nodes=nodes, duration_s=duration, clients=clients, keys=keys,
        reads=reads, fault_kinds=kinds, unsupported=skipped_kinds, ops=counts, faults=by_kind,
        skipped_faults=skipped, skip_reasons=reasons, coverage=coverage, required=wanted, check=check,
        operations=operations, applied_faults=applied, lost_writes=lost, divergent_keys=divergent,
        converged=converged, elapsed_s=elapsed, errors=errors, report_dir=report_dir,
        started_wall=started_wall,
    )  # fmt: skip
    if report_dir is not None:
        from .report import write_report

        write_report(outcome, report_dir)
    return outcome


def _count_lines(path: Path, needle: str) -> int:
    try:
        with open(path, "rb") as log:
            return sum(1 for line in log if needle.encode() in line)
    except OSError:
        return 0


_Result = Tuple[
    List[Operation],
    Optional[CheckResult],
    List[AppliedFault],
    Dict[str, int],
    Dict[str, str],
    int,
    bool,
    Dict[str, Dict[str, Optional[str]]],
    List[Operation],
    float,
]


def _run_cluster(
    cluster: Cluster,
    kinds: List[str],
    duration: float,
    seed: int,
    clients: int,
    keys: List[str],
    reads: str,
    check_timeout: float,
    show: _Progress,
    errors: List[str],
) -> _Result:
    rng = random.Random(seed)
    schedule = plan(tuple(kinds), duration, rng.randrange(1 << 32))
    members = _Members(cluster)
    stop_workers = threading.Event()
    stop_nemesis = threading.Event()
    opened: List[Client] = []
    root = History(cluster.client(timeout=1.0, retry_timeout=1.0), "final")
    opened.append(root.client)
    threads: List[threading.Thread] = []
    for i in range(clients):
        process = f"p{i}"
        threads.append(
            threading.Thread(
                target=_worker,
                args=(root, members, reads == "stale", keys, process, rng.randrange(1 << 32), stop_workers),
                name=f"chaos-{process}",
                daemon=True,
            )
        )
    started = time.monotonic()
    nemesis = Nemesis(cluster, schedule, started, stop_nemesis, show.message, max_members=len(cluster.node_ids) + 2)
    nemesis_thread = threading.Thread(target=nemesis.run, name="chaos-nemesis", daemon=True)
    leader_changes = 0
    try:
        for thread in threads:
            thread.start()
        nemesis_thread.start()
        last: Optional[Tuple[str, int]] = None
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            observed = _leader_and_term(cluster)
            if observed is not None and observed != last:
                if last is not None:
                    leader_changes += 1
                last = observed
            show.show(
                elapsed, root.counts(), len(nemesis.applied), nemesis.active, observed[0] if observed else None
            )
            time.sleep(min(0.25, max(0.0, duration - elapsed)))
        stop_nemesis.set()
        nemesis_thread.join(timeout=60)
        stop_workers.set()
        for thread in threads:
            thread.join(timeout=30)
        show.message(f"heal: ending {nemesis.active} active faults, restarting every node")
        nemesis.heal_all()
        errors.extend(nemesis.errors)
        cluster.wait_for_leader(timeout=30)
        converged = _converge(cluster, timeout=30.0)
        if not converged:
            seen = "; ".join(
                f"{node_id}: " + ("no answer" if st is None else
                                  f"{st.role} term {st.term} leader {st.leader or '-'} commit {st.commit} applied {st.applied}")
                for node_id, st in cluster.statuses().items()
            )  # fmt: skip
            cut = [f"{a}->{b} {proxy.mode}" for (a, b), proxy in cluster._proxies.items() if proxy.mode != "pass"]
            links = "every link passes" if not cut else "links not passing: " + ", ".join(cut)
            errors.append(f"the cluster did not converge within 30 s of healing ({seen}; {links})")
        # A leader elected after the heal counts too.
        observed = _leader_and_term(cluster)
        if observed is not None and last is not None and observed != last:
            leader_changes += 1
        # Local reads are only a check once every node applied the same
        # index; before that a lagging node's SGET is stale by design.
        # Through the final members (the first client knew the first ones).
        final_view = root.with_client(cluster.client(timeout=1.0, retry_timeout=1.0), "final")
        opened.append(final_view.client)
        divergent, final = _final_reads(cluster, final_view, keys, opened, local=converged)
        show.message(f"checking {len(root)} operations")
    finally:
        stop_nemesis.set()
        stop_workers.set()
        for client in opened:
            client.close()
    # Times from here on are seconds since the run began, in the checker's
    # explanation too.
    operations = _rebase(root.operations, started)
    lost = lost_writes(operations, final)
    check: Optional[CheckResult] = None
    try:
        check = check_operations(operations, timeout=check_timeout)
    except ValueError as err:
        errors.append(f"checker refused the history: {err}")
    elapsed = time.monotonic() - started
    return (
        operations, check, list(nemesis.applied), dict(nemesis.skipped), dict(nemesis.skip_reasons),
        leader_changes, converged, divergent, lost, elapsed,
    )  # fmt: skip


def _rebase(ops: List[Operation], started: float) -> List[Operation]:
    """Times in seconds since the run began (``ret`` stays inf when unknown)."""
    return [replace(op, call=op.call - started, ret=op.ret - started) for op in ops]


def _leader_and_term(cluster: Cluster) -> Optional[Tuple[str, int]]:
    statuses = [s for s in cluster.statuses().values() if s is not None]
    majority = len(cluster.node_ids) // 2 + 1
    for status in statuses:
        if status.is_leader:
            followers = sum(1 for s in statuses if s.leader == status.id and s.term == status.term)
            if followers >= majority:
                return status.id, status.term
    return None


def _converge(cluster: Cluster, timeout: float) -> bool:
    """Waits until every node answers and all applied the same index, which
    is the commit index they agree on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = list(cluster.statuses().values())
        if all(s is not None for s in statuses):
            applied = {s.applied for s in statuses if s is not None}
            commits = {s.commit for s in statuses if s is not None}
            if len(applied) == 1 and applied == commits:
                return True
        time.sleep(0.1)
    return False


def _final_reads(
    cluster: Cluster, root: History, keys: List[str], opened: List[Client], local: bool = True
) -> Tuple[Dict[str, Dict[str, Optional[str]]], Dict[bytes, Optional[bytes]]]:
    """Reads every key on every node (SGET, recorded and checked; only when
    ``local``) and once through the leader (GET); returns keys whose nodes
    disagree, and the leader's final values."""
    seen: Dict[str, Dict[str, Optional[bytes]]] = {key: {} for key in keys}
    for node in cluster.nodes if local else []:
        bound = node.client(timeout=2.0)
        opened.append(bound)
        view = root.with_client(bound, f"final-{node.id}")
        for key in keys:
            try:
                seen[key][node.id] = view.sget_bytes(key)
            except TitanStoreError:
                pass
    final: Dict[bytes, Optional[bytes]] = {}
    for key in keys:
        try:
            final[key.encode()] = root.get_bytes(key)
        except TitanStoreError:
            pass
    divergent: Dict[str, Dict[str, Optional[str]]] = {}
    for key, values in seen.items():
        if len(set(values.values())) > 1:
            divergent[key] = {n: (v.decode("utf-8", "backslashreplace") if v is not None else None) for n, v in values.items()}
    return divergent, final

