"""Whether this machine can pull the plug on a node (the ``power-loss`` fault).

A power loss must forget every write the node did not fsync. SIGKILL keeps
the page cache, so it proves nothing about fsync; the harness needs the
node's data dir on a filesystem that holds un-fsynced writes in memory and
drops them on demand (as LazyFS does for etcd). That needs ``/dev/fuse``,
``fusermount3`` (Debian package ``fuse3``) and the extension's FUSE
filesystem; :func:`power_loss_support` says which is missing.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

from . import _titanstore

__all__ = ["power_loss_support"]


def power_loss_support() -> Optional[str]:
    """None when power loss works here, else why not (one sentence)."""
    if not hasattr(_titanstore, "LazyFs"):
        return "this build of titanstore has no FUSE filesystem"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount3 is missing (Debian: apt-get install fuse3)"
    return None
