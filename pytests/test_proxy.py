"""The fault proxy on its own: relay, reset, blackhole, latency, and that
leaving ``pass`` closes the connections that are open."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator, Tuple

import pytest

from titanstore._titanstore import Proxy


@pytest.fixture
def echo_server() -> Iterator[Tuple[str, int]]:
    """A TCP echo server on loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()
    stop.set()
    server.close()


def _connect(proxy: Proxy) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    conn.settimeout(2)
    return conn


def _closed(conn: socket.socket) -> bool:
    try:
        return conn.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_pass_relays_both_ways(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        assert proxy.mode == "pass"
        with _connect(proxy) as conn:
            conn.sendall(b"hello")
            assert conn.recv(5) == b"hello"
    finally:
        proxy.close()


def test_leaving_pass_closes_open_connections_and_refuses_new_ones(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        conn = _connect(proxy)
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
        proxy.mode = "reset"
        assert _closed(conn)
        conn.close()
        with _connect(proxy) as again:
            assert _closed(again)
        proxy.mode = "pass"
        with _connect(proxy) as healed:
            healed.sendall(b"back")
            assert healed.recv(4) == b"back"
    finally:
        proxy.close()


def test_blackhole_swallows_traffic(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        proxy.mode = "blackhole"
        with _connect(proxy) as conn:
            conn.settimeout(0.3)
            conn.sendall(b"lost")
            with pytest.raises(socket.timeout):
                conn.recv(4)
    finally:
        proxy.close()


def test_latency_delays_every_chunk(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        proxy.latency_ms = 150
        with _connect(proxy) as conn:
            start = time.monotonic()
            conn.sendall(b"slow")
            assert conn.recv(4) == b"slow"
            # One delay each way.
            assert time.monotonic() - start >= 0.29
    finally:
        proxy.close()


def test_bad_mode_is_a_value_error(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        with pytest.raises(ValueError):
            proxy.mode = "sideways"
        assert proxy.mode == "pass"
    finally:
        proxy.close()
