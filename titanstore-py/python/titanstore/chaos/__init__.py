"""Chaos testing: record client histories, check them for linearizability,
and run whole chaos runs with a seeded nemesis and an HTML report.

* :class:`History` records operations through a :class:`~titanstore.Client`
  and checks them (see :mod:`titanstore.chaos.history`).
* :func:`run` (also ``python -m titanstore.chaos``) starts a cluster, runs
  clients against it under a seeded, overlapping fault schedule, heals it,
  checks convergence, linearizability and lost writes, counts fault
  coverage from the run, and writes a report folder (``report.html``,
  ``history.jsonl``, ``faults.jsonl``, ``summary.json``, node logs).
"""

from .history import CheckResult, History, Operation, check_operations
from .nemesis import FAULT_KINDS, AppliedFault, supported_kinds
from .runner import COVERAGE, RunResult, default_required, lost_writes, run

__all__ = [
    "COVERAGE",
    "FAULT_KINDS",
    "AppliedFault",
    "CheckResult",
    "History",
    "Operation",
    "RunResult",
    "check_operations",
    "default_required",
    "lost_writes",
    "run",
    "supported_kinds",
]
