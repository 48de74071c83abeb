#!/usr/bin/env python3
"""Benchmarks the native linearizability checker (``check_kv_history``) on a
large generated history. Not a test: the numbers depend on the machine.

    python scripts/bench-checker.py [--ops 1000000] [--keys 100] [--procs 50]

The history is what chaos clients produce, from a simulated register per key
that is linearizable by construction: ``--procs`` clients each run one
operation at a time on a random key (50% reads, 30% writes of unique values,
12% compare-and-set, 8% deletes) whose effect happens at a random instant
between its call and its return; 1% fail (never applied) and 0.2% of the
writes are unknown (maybe applied, never return). The expected verdict is
``ok``. ``--corrupt`` changes one read's value, so the verdict must be
``violation``.

Prints the generation time, the checker's wall time (the whole call,
Python conversion included), the peak RSS the check added (``VmHWM`` reset
through ``/proc/self/clear_refs`` before it) and the verdict. Use a release
build of the package (``pip install .``): a ``--profile dev`` extension is
many times slower.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from typing import List, Optional, Tuple

from titanstore._titanstore import check_kv_history

Op = Tuple[str, bytes, Optional[bytes], float, float, str, Optional[bytes]]


def generate(ops: int, keys: int, procs: int, seed: int) -> List[Op]:
    rng = random.Random(seed)
    names = [f"k{i}".encode() for i in range(keys)]
    # Each process's next free instant; a process runs one operation at a time.
    free = [(rng.uniform(0, 1e-3), p) for p in range(procs)]
    heapq.heapify(free)
    # (effect instant, index, key, kind, value, expected) in the order they take effect.
    planned: List[Tuple[float, int, bytes, str, Optional[bytes], float, float, str]] = []
    for index in range(ops):
        call, process = heapq.heappop(free)
        duration = rng.expovariate(1 / 2e-3)  # ~2 ms a request
        ret = call + duration
        effect = call + rng.random() * duration
        key = rng.choice(names)
        roll = rng.random()
        kind = "read" if roll < 0.5 else "write" if roll < 0.8 else "cas" if roll < 0.92 else "delete"
        outcome = "ok"
        if rng.random() < 0.01:
            outcome = "fail"
        elif kind == "write" and rng.random() < 0.002:
            outcome = "unknown"
        value = f"p{process}-{index}".encode() if kind in ("write", "cas") else None
        planned.append((effect, index, key, kind, value, call, ret, outcome))
        # A client whose write timed out moves on after its timeout.
        heapq.heappush(free, (ret + rng.uniform(0, 1e-3), process))
    planned.sort()
    state = {k: None for k in names}  # type: dict[bytes, Optional[bytes]]
    history: List[Op] = []
    for effect, _index, key, kind, value, call, ret, outcome in planned:
        current = state[key]
        applied = outcome == "ok" or (outcome == "unknown" and rng.random() < 0.5)
        if kind == "read":
            history.append(("read", key, current, call, ret, outcome, None))
        elif kind == "cas":
            # Chaos clients compare against the value they read just before.
            if rng.random() < 0.7:
                if applied:
                    state[key] = value
                history.append(("cas", key, value, call, ret, outcome, current))
            else:
                stale = b"stale-" + (value or b"")
                history.append(("cas-conflict", key, None, call, ret, "ok", stale))
        else:
            if applied:
                state[key] = value
            history.append((kind, key, value, call, math.inf if outcome == "unknown" else ret, outcome, None))
    return history


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--procs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="checker budget in seconds")
    parser.add_argument("--corrupt", action="store_true", help="change one read: the verdict must be violation")
    args = parser.parse_args()

    started = time.monotonic()
    history = generate(args.ops, args.keys, args.procs, args.seed)
    if args.corrupt:
        i = next(i for i in range(len(history) // 2, len(history)) if history[i][0] == "read" and history[i][5] == "ok")
        kind, key, _, call, ret, outcome, expected = history[i]
        history[i] = (kind, key, b"never-written", call, ret, outcome, expected)
    generated = time.monotonic() - started
    unknown = sum(1 for op in history if op[5] == "unknown")
    print(f"history: {len(history)} operations over {args.keys} keys, {args.procs} clients, "
          f"{unknown} unknown, generated in {generated:.1f} s")  # fmt: skip

    before = _status("VmRSS")
    peak_known = _reset_peak()
    started = time.monotonic()
    result = check_kv_history(history, args.timeout)
    wall = time.monotonic() - started
    peak = _status("VmHWM")
    added = f"{(peak - before) / 1024:.0f} MiB above the {before / 1024:.0f} MiB before" if peak_known else "?"
    print(f"checker: verdict {result.verdict}, {result.checked} operations checked, wall {wall:.2f} s "
          f"(the checker's own clock {result.elapsed:.2f} s)")  # fmt: skip
    print(f"memory: peak RSS {peak / 1024:.0f} MiB during the check ({added})")
    if not result.ok:
        print(f"  key {result.key!r}: {result.explanation[:300]}")
    want = "violation" if args.corrupt else "ok"
    return 0 if result.verdict == want else 1


if __name__ == "__main__":
    sys.exit(main())
