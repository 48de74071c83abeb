"""Exceptions raised by the TitanStore client and cluster harness.

Every exception derives from :class:`TitanStoreError`. Connection and timeout
failures, and keys or values the protocol cannot carry, also derive from the
matching builtin (``ConnectionError``, ``TimeoutError``, ``ValueError``), so
generic handlers keep working.
"""

from __future__ import annotations

from typing import Sequence

__all__ = [
    "TitanStoreError",
    "NotLeaderError",
    "NoLeaderError",
    "ProtocolError",
    "ServerError",
    "TitanStoreConnectionError",
    "TitanStoreTimeoutError",
    "IndeterminateError",
    "DataError",
    "HarnessError",
    "ConflictError",
]


class TitanStoreError(Exception):
    """Base class of every TitanStore error."""


class NotLeaderError(TitanStoreError):
    """The node is not the leader; ``leader_addr`` is the leader's client address.

    Only raised when the client was told not to follow redirects.
    """

    def __init__(self, message: str, leader_addr: str) -> None:
        super().__init__(message)
        self.leader_addr = leader_addr


class NoLeaderError(TitanStoreError):
    """No leader is known (an election is running, or no quorum is reachable)."""


class ProtocolError(TitanStoreError):
    """The server sent something the client does not understand."""


class ServerError(TitanStoreError):
    """The server refused the request (``ERR <reason>``), e.g. malformed input."""


class TitanStoreConnectionError(TitanStoreError, ConnectionError):
    """No connection could be made, or it broke before anything was sent."""


class TitanStoreTimeoutError(TitanStoreError, TimeoutError):
    """A read got no answer in time (safe to retry: reads change nothing)."""


class IndeterminateError(TitanStoreError):
    """A write was sent but its outcome is unknown: it may or may not be applied.

    Raised when the connection dies or times out after a write was sent, or
    when the server cannot tell (leadership lost before commit). Never retry
    such a write blindly if duplicates matter; a linearizability checker must
    treat it as possibly applied.
    """


class DataError(TitanStoreError, ValueError):
    """A key or value the protocol cannot carry; nothing was sent.

    Keys must be non-empty and free of whitespace, values free of line
    breaks, and a whole request line within the server's ``--max-line-bytes``.
    """


class HarnessError(TitanStoreError):
    """A cluster-harness operation failed.

    The message is one short sentence. ``logs`` holds the tail of every
    node's log (also attached as a PEP 678 note, so tracebacks show it once);
    ``unexpected_exits`` names the nodes that died without a harness call.
    """

    def __init__(self, message: str, logs: str = "", unexpected_exits: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.logs = logs
        self.unexpected_exits = list(unexpected_exits)
        if logs:
            if hasattr(self, "add_note"):
                self.add_note(logs)
            else:  # Python < 3.11: the attribute PEP 678 defines
                self.__notes__ = [logs]


class ConflictError(TitanStoreError):
    """A compare-and-set or compare-and-delete found the key at another revision.

    ``current_rev`` is the key's revision when the write was applied (0: the
    key was absent). Nothing was changed.
    """

    def __init__(self, message: str, current_rev: int) -> None:
        super().__init__(message)
        self.current_rev = current_rev
