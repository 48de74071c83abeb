"""Recording client histories and checking them for linearizability.

A :class:`History` wraps a :class:`~titanstore.Client`; its ``set``, ``get``,
``get_bytes``, ``sget_bytes`` and ``delete`` return what the client's do and run the real operation, note when it was called and when it
returned (``time.monotonic()``), and classify how it ended:

* ``"ok"``: the operation completed;
* ``"fail"``: it was definitely not applied (``NotLeaderError``,
  ``NoLeaderError``, ``ServerError`` such as ``ERR DROPPED``, no connection
  could be made), or it was a read that got no answer;
* ``"unknown"``: a write whose outcome is unknown (``IndeterminateError``, a
  timeout, anything unexpected); the checker lets it take effect at any time
  after its call, or never.

Several threads may record into one history: give each its own client with
:meth:`History.with_client`. :meth:`History.check` runs the native Wing &
Gong / Lowe checker (each key is an independent register)::

    history = History(cluster.client(timeout=1, retry_timeout=0.5))
    history.set("k", "v1")
    history.get("k")
    result = history.check()
    assert result.ok, history.explain(result)
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .._titanstore import CheckResult, check_kv_history
from ..client import Client, Key, Value
from ..exceptions import ConflictError, NoLeaderError, NotLeaderError, ServerError, TitanStoreConnectionError

__all__ = ["CheckResult", "History", "Operation", "check_operations"]

#: Errors after which a write was definitely not applied: the client only
#: gives up with these after every attempt was refused or never sent.
_WRITE_NOT_APPLIED = (NotLeaderError, NoLeaderError, ServerError, TitanStoreConnectionError, ValueError, TypeError)

_Action = Callable[[], object]


@dataclass(frozen=True)
class Operation:
    """One recorded operation.

    ``kind`` is ``"read"``, ``"write"``, ``"delete"``, ``"cas"`` (a
    compare-and-set or -delete that swapped, or may have) or
    ``"cas-conflict"`` (answered CONFLICT); ``value`` is what a write wrote or
    what a read returned (None: missing, or nothing returned); ``expected``
    is the value a CAS compared against (None: absent). ``ret`` is
    ``math.inf`` for an operation whose outcome is unknown.
    """

    index: int
    kind: str
    key: bytes
    value: Optional[bytes]
    call: float
    ret: float
    outcome: str
    process: str = ""
    error: Optional[str] = None
    expected: Optional[bytes] = None

    def as_tuple(self) -> Tuple[str, bytes, Optional[bytes], float, float, str, Optional[bytes]]:
        """The form :func:`titanstore._titanstore.check_kv_history` takes."""
        return (self.kind, self.key, self.value, self.call, self.ret, self.outcome, self.expected)

    def with_value(self, value: Optional[bytes]) -> "Operation":
        """A copy with another value (to build corrupted histories in tests)."""
        return replace(self, value=value)

    def __str__(self) -> str:
        key = self.key.decode("utf-8", "backslashreplace")
        shown = "None" if self.value is None else repr(self.value.decode("utf-8", "backslashreplace"))
        expected = "None" if self.expected is None else repr(self.expected.decode("utf-8", "backslashreplace"))
        what = {
            "read": f"read({key}) -> {shown}",
            "write": f"write({key}, {shown})",
            "delete": f"delete({key})",
            "cas": f"cas({key}, {expected} -> {shown})",
            "cas-conflict": f"cas({key}, if {expected}) -> conflict",
        }.get(self.kind, self.kind)
        ret = "?" if math.isinf(self.ret) else f"{self.ret:.6f}"
        error = f" ({self.error})" if self.error else ""
        return f"#{self.index} {self.process} {what} {self.outcome} [{self.call:.6f}, {ret}]{error}"


def _bytes(data: Union[str, bytes]) -> bytes:
    return data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")


def check_operations(ops: Sequence[Operation], timeout: float = 30.0) -> CheckResult:
    """Checks recorded operations (in any order) for linearizability.

    Each key is an independent register. Keys whose search takes longer than
    ``timeout`` seconds in total get the verdict ``"unknown"``. The result's
    ``ops`` are positions in ``ops``.
    """
    return check_kv_history([op.as_tuple() for op in ops], timeout)


class _Log:
    """The operations shared by every view of one history."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: List[Operation] = []
        # (key, revision) -> the value it names, as this history saw it.
        self.revs: Dict[Tuple[bytes, int], Optional[bytes]] = {}


class History:
    """Records operations run through ``client`` and checks them.

    ``process`` names the recording client in :class:`Operation` (default:
    the thread name). The methods return what the client returns and raise
    what it raises, after recording.
    """

    def __init__(self, client: Client, process: Optional[str] = None, *, _log: Optional[_Log] = None) -> None:
        self.client = client
        self.process = process
        self._log = _log if _log is not None else _Log()

    def with_client(self, client: Client, process: Optional[str] = None) -> "History":
        """A view recording into the same history through another client (one per thread)."""
        return History(client, process, _log=self._log)

    # ----- operations ------------------------------------------------------

    def set(self, key: Key, value: Value) -> bool:
        """``client.set`` recorded as a write; returns True as the client does."""
        data = _bytes(value)
        self._run("write", key, data, lambda: self.client.set(key, data))
        return True

    def delete(self, key: Key) -> bool:
        """``client.delete`` recorded as a write of "missing"; returns True."""
        self._run("delete", key, None, lambda: self.client.delete(key))
        return True

    def get(self, key: Key) -> Optional[str]:
        """``client.get`` recorded as a read: the value as ``str``, like :meth:`Client.get`."""
        value = self.get_bytes(key)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    def get_bytes(self, key: Key) -> Optional[bytes]:
        """``client.get_bytes`` recorded as a read; the raw bytes (what the checker compares)."""
        result: List[Optional[bytes]] = []

        def read() -> None:
            result.append(self.client.get_bytes(key))

        self._run("read", key, None, read, result)
        return result[0]

    def sget_bytes(self, key: Key) -> Optional[bytes]:
        """``client.sget_bytes`` (a stale local read) recorded as a read: the
        checker holds it to linearizability like any read, so stale answers
        show up as violations (the chaos runner's ``--reads stale`` canary)."""
        result: List[Optional[bytes]] = []

        def read() -> None:
            result.append(self.client.sget_bytes(key))

        self._run("read", key, None, read, result)
        return result[0]

    def get_rev(self, key: Key) -> Optional[Tuple[str, int]]:
        """``client.get_rev`` recorded as a read; remembers which value the
        revision names, for :meth:`cas` and :meth:`cad`."""
        result: List[Optional[bytes]] = []
        revs: List[int] = []

        def read() -> None:
            found = self.client.get_rev(key)
            if found is None:
                result.append(None)
            else:
                result.append(_bytes(found[0]))
                revs.append(found[1])

        self._run("read", key, None, read, result)
        if result[0] is None:
            return None
        with self._log.lock:
            self._log.revs[(_bytes(key), revs[0])] = result[0]
        return result[0].decode("utf-8", "surrogateescape"), revs[0]

    def cas(self, key: Key, value: Value, expected_rev: int) -> int:
        """``client.cas`` recorded as a compare-and-set. ``expected_rev`` must
        be 0 (absent) or a revision this history saw (from :meth:`get_rev` or
        an earlier CAS): the checker compares values, and each revision names
        the one value written at it (chaos clients write unique values)."""
        data = _bytes(value)
        return self._compare_and(key, data, expected_rev, lambda: self.client.cas(key, data, expected_rev))

    def cad(self, key: Key, expected_rev: int) -> int:
        """``client.cad`` recorded as a compare-and-delete (see :meth:`cas`)."""
        return self._compare_and(key, None, expected_rev, lambda: self.client.cad(key, expected_rev))

    def _compare_and(self, key: Key, value: Optional[bytes], expected_rev: int, action: Callable[[], int]) -> int:
        raw = _bytes(key)
        with self._log.lock:
            if expected_rev != 0 and (raw, expected_rev) not in self._log.revs:
                raise ValueError(f"revision {expected_rev} of {raw!r} was not seen by this history")
            expected = self._log.revs.get((raw, expected_rev))
        process = self.process if self.process is not None else threading.current_thread().name
        call = time.monotonic()
        try:
            rev = action()
        except ConflictError as err:
            self._record("cas-conflict", key, value, call, time.monotonic(), "ok", process, str(err), expected)
            raise
        except BaseException as err:
            ret, outcome = time.monotonic(), "fail"
            if not isinstance(err, _WRITE_NOT_APPLIED):
                outcome, ret = "unknown", math.inf
            self._record("cas", key, value, call, ret, outcome, process, f"{type(err).__name__}: {err}", expected)
            raise
        self._record("cas", key, value, call, time.monotonic(), "ok", process, None, expected)
        with self._log.lock:
            self._log.revs[(raw, rev)] = value
        return rev

    def _run(
        self,
        kind: str,
        key: Key,
        value: Optional[bytes],
        action: _Action,
        read_result: Optional[List[Optional[bytes]]] = None,
    ) -> None:
        process = self.process if self.process is not None else threading.current_thread().name
        call = time.monotonic()
        try:
            action()
        except BaseException as err:
            ret = time.monotonic()
            if kind == "read" or isinstance(err, _WRITE_NOT_APPLIED):
                outcome = "fail"
            else:
                outcome, ret = "unknown", math.inf
            self._record(kind, key, value, call, ret, outcome, process, f"{type(err).__name__}: {err}")
            raise
        ret = time.monotonic()
        if read_result is not None:
            value = read_result[0]
        self._record(kind, key, value, call, ret, "ok", process, None)

    def _record(
        self,
        kind: str,
        key: Key,
        value: Optional[bytes],
        call: float,
        ret: float,
        outcome: str,
        process: str,
        error: Optional[str],
        expected: Optional[bytes] = None,
    ) -> None:
        with self._log.lock:
            index = len(self._log.ops)
            self._log.ops.append(
                Operation(index, kind, _bytes(key), value, call, ret, outcome, process, error, expected)
            )

    # ----- results ---------------------------------------------------------

    @property
    def operations(self) -> List[Operation]:
        """A copy of every operation recorded so far, in completion order."""
        with self._log.lock:
            return list(self._log.ops)

    def counts(self) -> Dict[str, int]:
        """How many operations ended ``ok``, ``fail`` and ``unknown``."""
        counts = {"ok": 0, "fail": 0, "unknown": 0}
        for op in self.operations:
            counts[op.outcome] = counts.get(op.outcome, 0) + 1
        return counts

    def check(self, timeout: float = 30.0) -> CheckResult:
        """Checks the history so far; see :func:`check_operations`."""
        return check_operations(self.operations, timeout)

    def explain(self, result: CheckResult, ops: Optional[Iterable[Operation]] = None) -> str:
        """A human-readable report: the verdict, explanation and involved operations."""
        listed = list(ops) if ops is not None else self.operations
        lines = [f"verdict {result.verdict} on {result.checked} checked of {len(listed)} operations"]
        if result.key is not None:
            lines.append(f"key {result.key!r}: {result.explanation}")
        lines += [f"  {listed[i]}" for i in result.ops if i < len(listed)]
        return "\n".join(lines)

    def __len__(self) -> int:
        with self._log.lock:
            return len(self._log.ops)

    def __repr__(self) -> str:
        return f"<History {len(self)} operations via {self.client!r}>"
