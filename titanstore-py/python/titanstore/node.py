"""Runs one TitanStore node in this process: ``python -m titanstore.node --id ...``.

This is the same code as the native ``titanstore-server`` binary (the
installed ``titanstore-server`` command points here). Flags: ``--help``.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from ._titanstore import flush_logs, run_node

__all__ = ["main", "run_node"]


def main(argv: Optional[List[str]] = None) -> None:
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = "titanstore-server"
    try:
        code = run_node(args)
    except KeyboardInterrupt:
        code = 0
    # Log lines are written by a thread of their own: what is queued goes out first.
    flush_logs()
    sys.exit(code)


if __name__ == "__main__":
    main()
