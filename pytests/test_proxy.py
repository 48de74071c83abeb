"""The fault proxy on its own: relay, reset (closes connections), blackhole
(keeps them open and drops bytes silently), latency and jitter that delay
without capping throughput."""

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


def test_blackhole_keeps_connections_open_and_drops_bytes(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        conn = _connect(proxy)
        conn.sendall(b"a")
        assert conn.recv(1) == b"a"
        proxy.mode = "blackhole"
        assert proxy.mode == "blackhole"
        conn.settimeout(0.4)
        # Bytes go in (the connection is open) and nothing comes back.
        conn.sendall(b"lost")
        with pytest.raises(socket.timeout):
            conn.recv(4)
        assert not _closed(conn), "a blackhole must not close the connection"
        # A new connection is accepted and swallows everything too.
        with _connect(proxy) as fresh:
            fresh.settimeout(0.3)
            fresh.sendall(b"also lost")
            with pytest.raises(socket.timeout):
                fresh.recv(9)
        # Passing again closes the connection that lost bytes (its stream has
        # a hole) and new connections relay.
        conn.settimeout(2)
        proxy.mode = "pass"
        assert _closed(conn)
        conn.close()
        with _connect(proxy) as healed:
            healed.sendall(b"back")
            assert healed.recv(4) == b"back"
    finally:
        proxy.close()


def test_blackhole_then_pass_keeps_idle_connections(echo_server: Tuple[str, int]) -> None:
    """A connection that sent nothing during the blackhole lost nothing."""
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        with _connect(proxy) as conn:
            proxy.mode = "blackhole"
            proxy.mode = "pass"
            conn.sendall(b"still")
            assert conn.recv(5) == b"still"
    finally:
        proxy.close()


def test_reset_and_blackhole_differ(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        with _connect(proxy) as conn:
            proxy.mode = "reset"
            assert _closed(conn)
        proxy.mode = "blackhole"
        with _connect(proxy) as conn:
            assert not _closed(conn)
    finally:
        proxy.close()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def test_latency_does_not_serialize_throughput(echo_server: Tuple[str, int]) -> None:
    """20 messages sent 10 ms apart through a 200 ms link (each way) all
    arrive about 400 ms after they were sent, not one 400 ms wait after another."""
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    try:
        proxy.latency_ms = 200
        with _connect(proxy) as conn:
            conn.settimeout(5)
            start = time.monotonic()
            for i in range(20):
                conn.sendall(b"%02d" % i)
                time.sleep(0.01)
            data = _recv_exactly(conn, 40)
            elapsed = time.monotonic() - start
            assert data == b"".join(b"%02d" % i for i in range(20))
            assert 0.39 <= elapsed < 1.5, elapsed
    finally:
        proxy.close()


def test_jitter_varies_delay_and_keeps_order(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}", seed=3)
    try:
        proxy.latency_ms = 20
        proxy.jitter_ms = 200
        assert proxy.jitter_ms == 200
        with _connect(proxy) as conn:
            conn.settimeout(5)
            delays = []
            for i in range(8):
                start = time.monotonic()
                conn.sendall(b"%d" % i)
                assert _recv_exactly(conn, 1) == b"%d" % i
                delays.append(time.monotonic() - start)
            assert min(delays) >= 0.039  # the fixed part, both ways
            assert max(delays) - min(delays) > 0.05, delays  # jitter varies
            assert max(delays) < 0.45 + 0.3, delays  # at most 2 * (20 + 200) ms, plus slack
            # Back-to-back chunks still arrive in order.
            payload = bytes(range(100))
            for b in payload:
                conn.sendall(bytes([b]))
            assert _recv_exactly(conn, 100) == payload
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


def test_closed_proxy_refuses_mode_changes(echo_server: Tuple[str, int]) -> None:
    proxy = Proxy(f"127.0.0.1:{echo_server[1]}")
    with _connect(proxy) as conn:
        proxy.close()
        assert _closed(conn)
    assert proxy.mode == "closed"
    with pytest.raises(Exception, match="closed"):
        proxy.mode = "pass"
