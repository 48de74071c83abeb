"""Starting node processes so that none outlives the harness.

Linux delivers ``PR_SET_PDEATHSIG`` when the *thread* that forked the child
exits, not the process. So every node is forked by one long-lived daemon
thread per process, the spawner: a node started from a short-lived nemesis
thread survives that thread, and still gets SIGKILL when the harness process
dies (the spawner dies with it). Between requests the spawner runs the
watchers it is given (the clusters noting nodes that died on their own).

This module also reads the flags a server accepts from its ``--help``, so a
misspelt node flag is caught before any node starts.
"""

from __future__ import annotations

import ctypes
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import weakref
from typing import IO, Dict, FrozenSet, Optional, Sequence, Tuple

__all__ = ["spawn", "watch", "server_flags"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the node gets SIGKILL when the thread that forked it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass


class _Request:
    def __init__(self, args: Sequence[str], log: IO[bytes]) -> None:
        self.args = list(args)
        self.log = log
        self.done = threading.Event()
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.error: Optional[BaseException] = None


class _Spawner:
    """The one thread per process that forks every node."""

    WATCH_INTERVAL = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: "queue.SimpleQueue[_Request]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._pid = 0
        self._watchers: "weakref.WeakSet[_Watched]" = weakref.WeakSet()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            # First use, or a forked child (threads do not survive fork).
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="titanstore-spawner", daemon=True)
            self._thread.start()

    def spawn(self, args: Sequence[str], log: IO[bytes]) -> "subprocess.Popen[bytes]":
        self._ensure_thread()
        request = _Request(args, log)
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.process is not None
        return request.process

    def watch(self, watched: "_Watched") -> None:
        self._ensure_thread()
        self._watchers.add(watched)

    def _run(self) -> None:
        requests = self._queue
        while True:
            try:
                request = requests.get(timeout=self.WATCH_INTERVAL)
            except queue.Empty:
                for watched in list(self._watchers):
                    try:
                        watched.poll_exits()
                    except Exception:  # noqa: BLE001 - a watcher must not stop the spawner
                        pass
                continue
            try:
                request.process = subprocess.Popen(
                    request.args,
                    stdin=subprocess.DEVNULL,
                    stdout=request.log,
                    stderr=request.log,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                request.error = err
            request.done.set()


class _Watched:
    """What the spawner polls between requests (a cluster)."""

    def poll_exits(self) -> None:
        raise NotImplementedError


_SPAWNER = _Spawner()


def spawn(args: Sequence[str], log: IO[bytes]) -> "subprocess.Popen[bytes]":
    """Starts ``args`` from the spawner thread, stdout and stderr to ``log``."""
    return _SPAWNER.spawn(args, log)


def watch(watched: _Watched) -> None:
    """Has the spawner call ``watched.poll_exits()`` about every 50 ms (weakly held)."""
    _SPAWNER.watch(watched)


_FLAGS_CACHE: Dict[Tuple[str, ...], FrozenSet[str]] = {}
_FLAGS_LOCK = threading.Lock()
_FLAG_RE = re.compile(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", re.MULTILINE)


def server_flags(command: Sequence[str]) -> FrozenSet[str]:
    """The long flags (without ``--``) that ``command --help`` lists; cached per command."""
    key = tuple(command)
    with _FLAGS_LOCK:
        cached = _FLAGS_CACHE.get(key)
        if cached is not None:
            return cached
        try:
            out = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            raise ValueError(f"cannot run {' '.join(command)} --help: {err}") from None
        if out.returncode != 0:
            raise ValueError(f"{' '.join(command)} --help exited with code {out.returncode}")
        flags = frozenset(_FLAG_RE.findall(out.stdout))
        _FLAGS_CACHE[key] = flags
        return flags

