"""``python -m titanstore.chaos``: one chaos run from the command line.

Exit code 0 when the history is linearizable, no acknowledged write is lost
and the required coverage was reached; 1 when an anomaly was found; 2 when
the run proved nothing either way (coverage missing, no convergence, the
checker out of budget); 3 when the harness failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..exceptions import HarnessError
from .nemesis import FAULT_KINDS, MIN_VOTERS, OPT_IN_KINDS, supported_kinds
from .runner import COVERAGE, run


def _kinds(text: str) -> List[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    supported, unsupported = supported_kinds()
    parser = argparse.ArgumentParser(
        prog="python -m titanstore.chaos",
        description="Run a TitanStore cluster under a seeded fault schedule and check what clients saw.",
        epilog="fault kinds: " + ", ".join(FAULT_KINDS) + "; coverage names: " + ", ".join(COVERAGE)
        + f".\nadd-node, remove-node and transfer change the members or the leader; the cluster keeps between "
        f"{MIN_VOTERS} voters and --nodes + 2 members, and clients and the final reads follow the members. "
        + ", ".join(OPT_IN_KINDS) + " are opt-in: they run only when --faults names them."
        + "".join(f"\nnot available here: {k}: {why}" for k, why in unsupported.items()),
    )  # fmt: skip
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed for replay")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument(
        "--faults", type=_kinds, default=None,
        help=f"comma-separated kinds (default: all supported but the opt-in {', '.join(OPT_IN_KINDS)})",
    )  # fmt: skip
    parser.add_argument("--snapshot-threshold", type=int, default=200)
    parser.add_argument("--reads", choices=("linearizable", "stale"), default="linearizable")
    parser.add_argument("--require", type=_kinds, default=None, help="coverage names that must be non-zero")
    parser.add_argument("--report", default=None, help="directory for the report folder (created)")
    parser.add_argument("--binary", default=None, help="a native titanstore-server to run")
    parser.add_argument("--check-timeout", type=float, default=60.0)
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    try:
        result = run(
            nodes=args.nodes,
            duration=args.duration,
            seed=args.seed,
            clients=args.clients,
            keys=args.keys,
            faults=args.faults,
            snapshot_threshold=args.snapshot_threshold or None,
            report=args.report,
            reads=args.reads,
            required=args.require,
            binary=args.binary,
            check_timeout=args.check_timeout,
            progress=None if args.quiet else sys.stderr,
        )
    except ValueError as err:
        parser.error(str(err))
    except HarnessError as err:
        print(f"titanstore chaos: harness failed: {err}", file=sys.stderr)
        return 3
    print(result.format())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
