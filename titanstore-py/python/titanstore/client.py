"""The TitanStore client: a thin typed layer over the native (Rust) client.

Keys and values may be ``str`` or ``bytes``. ``str`` is encoded as UTF-8 and
values come back as ``str`` from :meth:`Client.get` (bytes that are not UTF-8
survive the round trip through ``surrogateescape``); use
:meth:`Client.get_bytes` for raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Dict, Generator, Iterator, List, Optional, Sequence, Tuple, Type, Union

from ._titanstore import NativeClient
from .state_store import ScanItem, WatchEvent

__all__ = ["Client", "Pipeline", "NodeStatus", "Key", "Value"]

Key = Union[str, bytes]
Value = Union[str, bytes]


def _to_bytes(data: Union[str, bytes], what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogateescape")
    raise TypeError(f"{what} must be str or bytes, not {type(data).__name__}")


def _to_str(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class NodeStatus:
    """One node's view of the cluster, from ``STATUS``."""

    id: str
    role: str
    term: int
    leader: Optional[str]
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    client_addr: str
    raw: Dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    @classmethod
    def from_fields(cls, fields: Sequence[Tuple[str, str]]) -> "NodeStatus":
        raw = dict(fields)

        def num(name: str) -> int:
            return int(raw.get(name, "0"))

        leader = raw.get("leader", "-")
        return cls(
            id=raw.get("id", ""),
            role=raw.get("role", ""),
            term=num("term"),
            leader=None if leader == "-" else leader,
            commit=num("commit"),
            applied=num("applied"),
            last_index=num("last_index"),
            snapshot_index=num("snapshot_index"),
            client_addr=raw.get("client_addr", ""),
            raw=raw,
        )


class Client:
    """A connection to a TitanStore cluster.

    ``Client("127.0.0.1:6001")`` or ``Client(["127.0.0.1:6001", "127.0.0.1:6002"])``.
    Writes follow ``NOT_LEADER`` redirects; missing leaders, dropped writes
    and failed connections are retried until ``retry_timeout`` seconds have
    passed (``retry_timeout=0`` turns retries off). ``timeout`` bounds each
    network wait. The connection is reused; the network is waited on with the
    GIL released, so threads may each hold a client.
    """

    def __init__(
        self,
        addrs: Union[str, Sequence[str]],
        timeout: float = 5.0,
        retry_timeout: float = 10.0,
        follow_redirects: bool = True,
    ) -> None:
        addr_list = [addrs] if isinstance(addrs, str) else list(addrs)
        if not addr_list:
            raise ValueError("Client needs at least one address")
        self._native = NativeClient(addr_list, timeout, retry_timeout, follow_redirects)

    @property
    def addr(self) -> str:
        """The node address the client talks to now."""
        return self._native.current_addr

    def get(self, key: Key) -> Optional[str]:
        """Linearizable read: the value as ``str``, or None when missing."""
        return _to_str(self._native.get(_to_bytes(key, "key")))

    def get_bytes(self, key: Key) -> Optional[bytes]:
        """Linearizable read of the raw bytes, or None when missing."""
        return self._native.get(_to_bytes(key, "key"))

    def sget(self, key: Key) -> Optional[str]:
        """Stale read from the contacted node's local state (no leader round trip)."""
        return _to_str(self._native.sget(_to_bytes(key, "key")))

    def set(self, key: Key, value: Value) -> None:
        """Writes ``key``; returns once a majority has it on disk."""
        self._native.set(_to_bytes(key, "key"), _to_bytes(value, "value"))

    def delete(self, key: Key) -> None:
        """Removes ``key`` (no error when it is missing)."""
        self._native.delete(_to_bytes(key, "key"))

    def ping(self) -> bool:
        """True when the node answers ``PONG``."""
        self._native.ping()
        return True

    def status(self) -> NodeStatus:
        """The contacted node's ``STATUS``."""
        return NodeStatus.from_fields(self._native.status())

    def pipeline(self) -> "Pipeline":
        """Queues commands and sends them together (see :class:`Pipeline`)."""
        return Pipeline(self)

    def get_rev(self, key: Key) -> Optional[Tuple[str, int]]:
        """Linearizable read: ``(value, mod_rev)``, or None when missing."""
        found = self._native.get_rev(_to_bytes(key, "key"))
        if found is None:
            return None
        rev, value = found
        return value.decode("utf-8", "surrogateescape"), rev

    def cas(self, key: Key, value: Value, expected_rev: int) -> int:
        """Writes ``key`` only if it is at ``expected_rev`` (0: only if absent).

        Returns the new revision; raises :class:`ConflictError` (with
        ``current_rev``) when the key was at another revision.
        """
        return self._native.cas(_to_bytes(key, "key"), _to_bytes(value, "value"), expected_rev)

    def cad(self, key: Key, expected_rev: int) -> int:
        """Deletes ``key`` only if it is at ``expected_rev``; returns the delete's revision."""
        return self._native.cad(_to_bytes(key, "key"), expected_rev)

    def scan(self, prefix: Optional[Key] = None, limit: int = 1000) -> Iterator[ScanItem]:
        """Every key starting with ``prefix`` (all keys when None), in byte
        order, fetched ``limit`` keys per page (each page a linearizable read)."""
        if not 1 <= limit <= 10000:
            raise ValueError("limit must be between 1 and 10000")
        raw_prefix = None if prefix is None else _to_bytes(prefix, "prefix")
        after: Optional[bytes] = None
        while True:
            revision, more, entries = self._native.scan_page(raw_prefix, after, limit)
            for key, rev, value in entries:
                yield ScanItem(
                    key.decode("utf-8", "surrogateescape"),
                    value.decode("utf-8", "surrogateescape"),
                    rev,
                    revision,
                )
            if not more or not entries:
                return
            after = entries[-1][0]

    def watch(
        self, prefix: Optional[Key] = None, start_rev: int = 0
    ) -> Generator[WatchEvent, None, None]:
        """Every change to keys starting with ``prefix`` from ``start_rev``
        (0: from now), in revision order. After a node failure it resumes on
        another node with no gap and no repeat; ``progress`` events say how
        far the stream is known complete. Runs on its own connection."""
        raw_prefix = None if prefix is None else _to_bytes(prefix, "prefix")
        stream = self._native.watch(raw_prefix, start_rev)
        try:
            while True:
                kind, rev, key, value = stream.next_event()
                yield WatchEvent(kind, rev, _to_str(key), _to_str(value))
        finally:
            stream.close()

    def close(self) -> None:
        """Closes the connection; a later call reconnects."""
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.addr!r})"


PipelineResult = Union[None, bool, str, BaseException]


class Pipeline:
    """Commands sent in one write and answered in order.

    No redirects are followed inside a pipeline: send it to the leader. Each
    result is the command's value (``str``/None for reads, True for writes);
    :meth:`execute` raises the first error unless ``raise_on_error=False``,
    in which case failed commands hold their exception instead.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._commands: List[Tuple[str, bytes, Optional[bytes]]] = []

    def get(self, key: Key) -> "Pipeline":
        self._commands.append(("GET", _to_bytes(key, "key"), None))
        return self

    def sget(self, key: Key) -> "Pipeline":
        self._commands.append(("SGET", _to_bytes(key, "key"), None))
        return self

    def set(self, key: Key, value: Value) -> "Pipeline":
        self._commands.append(("SET", _to_bytes(key, "key"), _to_bytes(value, "value")))
        return self

    def delete(self, key: Key) -> "Pipeline":
        self._commands.append(("DELETE", _to_bytes(key, "key"), None))
        return self

    def __len__(self) -> int:
        return len(self._commands)

    def execute(self, raise_on_error: bool = True) -> List[PipelineResult]:
        commands, self._commands = self._commands, []
        if not commands:
            return []
        raw = self._client._native.pipeline(commands)
        results: List[PipelineResult] = []
        for item in raw:
            if isinstance(item, BaseException):
                if raise_on_error:
                    raise item
                results.append(item)
            elif isinstance(item, bytes):
                results.append(item.decode("utf-8", "surrogateescape"))
            elif item is None or isinstance(item, bool):
                results.append(item)
            else:
                raise TypeError(f"unexpected pipeline result {item!r}")
        return results
