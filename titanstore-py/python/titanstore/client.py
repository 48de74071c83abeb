"""The TitanStore client: a thin typed layer over the native (Rust) client.

Keys and values may be ``str`` or ``bytes``. ``str`` is encoded as UTF-8 and
values come back as ``str`` from :meth:`Client.get` (bytes that are not UTF-8
survive the round trip through ``surrogateescape``); use
:meth:`Client.get_bytes` for raw bytes.

The protocol is line-based: a key is one token without whitespace, a value
cannot contain ``\\n`` or ``\\r``, and a request line must fit the server's
``--max-line-bytes``. Anything else is refused here with a
:class:`~titanstore.DataError` before it reaches the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Dict, Generator, Iterator, List, Optional, Sequence, Tuple, Type, Union

from ._titanstore import NativeClient
from .exceptions import DataError, NoLeaderError, NotLeaderError
from .state_store import ScanItem, WatchEvent

__all__ = ["Client", "Member", "Pipeline", "NodeStatus", "Key", "Value", "DEFAULT_MAX_LINE_BYTES"]

Key = Union[str, bytes]
Value = Union[str, bytes]

#: The server's default ``--max-line-bytes``.
DEFAULT_MAX_LINE_BYTES = 1 << 20

# What Rust's `u8::is_ascii_whitespace` (the server's key rule) counts.
_WHITESPACE = frozenset(b" \t\n\x0c\r")


def _to_bytes(data: Union[str, bytes], what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogateescape")
    raise TypeError(f"{what} must be str or bytes, not {type(data).__name__}")


def _to_str(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _key(key: Key) -> bytes:
    data = _to_bytes(key, "key")
    if not data or any(b in _WHITESPACE for b in data):
        raise DataError(f"a key must be non-empty and contain no whitespace, got {key!r:.60}")
    return data


def _value(value: Value) -> bytes:
    data = _to_bytes(value, "value")
    if b"\n" in data or b"\r" in data:
        raise DataError("a value cannot contain \\n or \\r (the protocol is line-based)")
    return data


def _parse_addr(addr: object) -> str:
    if not isinstance(addr, str):
        raise TypeError(f"Client(addrs=...) takes 'host:port' or a list of them, not {type(addr).__name__} {addr!r}")
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"Client(addrs=...): {addr!r} is not host:port (e.g. '127.0.0.1:6001')")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"Client(addrs=...): {addr!r} has no valid port (1-65535)")
    return addr


@dataclass(frozen=True)
class Member:
    """A member of the cluster, from ``MEMBER LIST``."""

    id: str
    host: str
    raft_port: int
    client_port: int
    voter: bool

    @property
    def client_addr(self) -> str:
        return f"{self.host}:{self.client_port}"

    @classmethod
    def parse(cls, word: str) -> "Member":
        parts = word.split(":")
        if len(parts) != 5:
            raise ValueError(f"not a MEMBERS entry: {word!r}")
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]), parts[4] == "voter")


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


# `REQ ` + a client id (at most 64 bytes) + ` ` + a seq (at most 20 digits) + ` `.
_REQ_HEADER_MAX = 4 + 64 + 1 + 20 + 1


class Client:
    """A connection to a TitanStore cluster.

    ``Client("127.0.0.1:6001")`` or ``Client(["127.0.0.1:6001", "127.0.0.1:6002"])``.
    Writes and pipelines follow ``NOT_LEADER`` redirects; missing leaders,
    dropped writes and failed connections are retried until ``retry_timeout``
    seconds have passed (``retry_timeout=0`` turns retries off). ``timeout``
    bounds each network wait. ``max_line_bytes`` is the server's
    ``--max-line-bytes``: longer requests fail here with a ``DataError``.
    The connection is reused; the network is waited on with the GIL
    released, so threads may each hold a client.
    """

    def __init__(
        self,
        addrs: Union[str, Sequence[str]],
        timeout: float = 5.0,
        retry_timeout: float = 10.0,
        follow_redirects: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        if isinstance(addrs, str):
            addr_list = [_parse_addr(addrs)]
        elif isinstance(addrs, (list, tuple)):
            addr_list = [_parse_addr(a) for a in addrs]
        else:
            raise TypeError(
                f"Client(addrs=...) takes 'host:port' or a list of them, not {type(addrs).__name__} {addrs!r}"
            )
        if not addr_list:
            raise ValueError("Client(addrs=...) needs at least one address")
        for name, number in (("timeout", timeout), ("retry_timeout", retry_timeout)):
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise TypeError(f"Client({name}=...) must be a number of seconds, not {type(number).__name__}")
        if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int) or max_line_bytes < 1:
            raise ValueError(f"Client(max_line_bytes=...) must be an int >= 1, not {max_line_bytes!r}")
        self.follow_redirects = bool(follow_redirects)
        self.max_line_bytes = max_line_bytes
        self._native = NativeClient(addr_list, float(timeout), float(retry_timeout), self.follow_redirects)

    @property
    def addr(self) -> str:
        """The node address the client talks to now."""
        return self._native.current_addr

    def _fits(self, command: str, key: bytes, value: Optional[bytes] = None, req: bool = False) -> None:
        length = len(command) + 1 + len(key) + (1 + len(value) if value is not None else 0)
        if req:
            # Single writes go out as `REQ <client id> <seq> <write>`.
            length += _REQ_HEADER_MAX
        if length > self.max_line_bytes:
            header = f" (with at most {_REQ_HEADER_MAX} bytes of exactly-once REQ header)" if req else ""
            raise DataError(
                f"the {command} request line would be {length} bytes{header}, over the server's limit of "
                f"{self.max_line_bytes} bytes (node flag --max-line-bytes; tell the client with max_line_bytes=)"
            )

    def _read_key(self, command: str, key: Key) -> bytes:
        data = _key(key)
        self._fits(command, data)
        return data

    def get(self, key: Key) -> Optional[str]:
        """Linearizable read: the value as ``str``, or None when missing."""
        return _to_str(self._native.get(self._read_key("GET", key)))

    def get_bytes(self, key: Key) -> Optional[bytes]:
        """Linearizable read of the raw bytes, or None when missing."""
        return self._native.get(self._read_key("GET", key))

    def sget(self, key: Key) -> Optional[str]:
        """Stale read from the contacted node's local state (no leader round trip)."""
        return _to_str(self._native.sget(self._read_key("SGET", key)))

    def sget_bytes(self, key: Key) -> Optional[bytes]:
        """:meth:`sget` returning the raw bytes."""
        return self._native.sget(self._read_key("SGET", key))

    def set(self, key: Key, value: Value) -> bool:
        """Writes ``key``; returns True once a majority has it on disk (as redis-py does)."""
        key_data, value_data = _key(key), _value(value)
        self._fits("SET", key_data, value_data, req=True)
        self._native.set(key_data, value_data)
        return True

    def delete(self, key: Key) -> bool:
        """Removes ``key`` (no error when it is missing); returns True like a pipeline does."""
        self._native.delete(self._read_key("DELETE", key))
        return True

    def ping(self) -> bool:
        """True when the node answers ``PONG``."""
        self._native.ping()
        return True

    def status(self) -> NodeStatus:
        """The contacted node's ``STATUS``."""
        return NodeStatus.from_fields(self._native.status())

    def members(self) -> List[Member]:
        """The cluster's members as the contacted node knows them."""
        words = self._native.admin("MEMBER LIST")
        if not isinstance(words, list):
            raise TypeError(f"unexpected MEMBER LIST reply {words!r}")
        return [Member.parse(str(w)) for w in words]

    def add_member(self, id: str, host: str, raft_port: int, client_port: int, learner: bool = False) -> bool:
        """Adds a member (a learner that catches up and is promoted, unless
        ``learner``); returns True once done. Start the node itself with ``--join``,
        or it never catches up (see ``Cluster.add_node``)."""
        for name, port in (("raft_port", raft_port), ("client_port", client_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"add_member({name}=...) must be a port (1-65535), not {port!r}")
        if not id or any(c in id for c in ": ,"):
            raise ValueError(f"add_member(id=...) must be non-empty without ':', ',' or spaces, not {id!r}")
        line = f"MEMBER ADD {id}:{host}:{raft_port}:{client_port}" + (" learner" if learner else "")
        self._native.admin(line)
        return True

    def promote_member(self, id: str) -> bool:
        """Makes a learner a voter (once it has caught up)."""
        self._native.admin(f"MEMBER PROMOTE {id}")
        return True

    def remove_member(self, id: str) -> bool:
        """Removes a member (the leader too: it steps down once removed)."""
        self._native.admin(f"MEMBER REMOVE {id}")
        return True

    def transfer_leader(self, id: Optional[str] = None) -> bool:
        """Moves leadership to ``id`` (or the most caught-up voter); True once it leads."""
        self._native.admin("TRANSFER" if id is None else f"TRANSFER {id}")
        return True

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


_Command = Tuple[str, bytes, Optional[bytes]]
_Raw = Union[None, bool, bytes, List[Tuple[str, str]], BaseException]


class Pipeline:
    """Commands sent in one write and answered in order.

    Each result is the command's value (``str``/None for reads, True for
    writes). When the contacted node is not the leader (or knows none), the
    commands from the first ``NOT_LEADER`` (``NO_LEADER``) on are sent again,
    to the leader, with the retries single commands get (nothing from there
    on was applied); a client made with ``follow_redirects=False`` gets the
    ``NotLeaderError`` instead.
    :meth:`execute` raises the first error unless ``raise_on_error=False``,
    in which case failed commands hold their exception instead.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._commands: List[_Command] = []

    def _read(self, command: str, key: Key) -> "Pipeline":
        self._commands.append((command, self._client._read_key(command, key), None))
        return self

    def get(self, key: Key) -> "Pipeline":
        return self._read("GET", key)

    def sget(self, key: Key) -> "Pipeline":
        return self._read("SGET", key)

    def set(self, key: Key, value: Value) -> "Pipeline":
        key_data, value_data = _key(key), _value(value)
        self._client._fits("SET", key_data, value_data)
        self._commands.append(("SET", key_data, value_data))
        return self

    def delete(self, key: Key) -> "Pipeline":
        return self._read("DELETE", key)

    def __len__(self) -> int:
        return len(self._commands)

    def execute(self, raise_on_error: bool = True) -> List[PipelineResult]:
        commands, self._commands = self._commands, []
        results: List[PipelineResult] = []
        for item in self._send(commands):
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

    def _send(self, commands: List[_Command]) -> List[_Raw]:
        native = self._client._native
        done: List[_Raw] = []
        while commands:
            raw = native.pipeline(commands)
            first = next((i for i, r in enumerate(raw) if self._retriable(r)), None)
            if first is None:
                return done + raw
            # A write after the refusal that was applied (leadership came back
            # mid-pipeline) must not run twice: then the results stand as they are.
            if any(commands[i][0] in ("SET", "DELETE") and r is True for i, r in enumerate(raw) if i > first):
                return done + raw
            done += raw[:first]
            # The single-command path follows the redirect (the client then
            # talks to the leader) and retries; the rest go there as a pipeline.
            done.append(self._one(commands[first]))
            commands = commands[first + 1 :]
        return done

    def _retriable(self, result: _Raw) -> bool:
        """A refusal the single-command path would retry (nothing was applied)."""
        if isinstance(result, NotLeaderError):
            return self._client.follow_redirects
        return isinstance(result, NoLeaderError)

    def _one(self, command: _Command) -> _Raw:
        native = self._client._native
        name, key, value = command
        try:
            if name == "GET":
                return native.get(key)
            if name == "SGET":
                return native.sget(key)
            if name == "SET":
                assert value is not None
                native.set(key, value)
            else:
                native.delete(key)
            return True
        except Exception as err:  # noqa: BLE001 - a pipeline result, like the others
            return err
