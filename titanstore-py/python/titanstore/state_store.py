"""Values returned by the state-store calls of :class:`titanstore.Client`."""

from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["ScanItem", "WatchEvent"]


class ScanItem(NamedTuple):
    """One key of a scan: its value, ``mod_rev``, and the page's revision."""

    key: str
    value: str
    mod_rev: int
    revision: int


class WatchEvent(NamedTuple):
    """One line of a watch: ``kind`` is ``"set"``, ``"delete"`` or ``"progress"``.

    For ``progress``, ``key`` and ``value`` are None and every matching change
    up to ``rev`` has been delivered.
    """

    kind: str
    rev: int
    key: Optional[str]
    value: Optional[str]
