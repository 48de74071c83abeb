"""The admin command line in this process: ``python -m titanstore.ctl ...``.

The same code as the native ``titanstore-ctl`` binary (the installed
``titanstore-ctl`` command points here). ``--help`` lists the commands.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from ._titanstore import run_ctl

__all__ = ["main", "run_ctl"]


def main(argv: Optional[List[str]] = None) -> None:
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = "titanstore-ctl"
    sys.exit(run_ctl(args))


if __name__ == "__main__":
    main()
