"""The fault proxy does what the partition tests rely on, with real sockets: forward,
drop (both sides see the connection end), stall (nothing arrives and nothing ends) and
heal (a stalled connection carries on where it stopped)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.faults.tcpproxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with TcpProxy(server.server_address[1]) as p:
        yield p
    server.shutdown()
    server.server_close()


def _client(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(b"hello")
    assert sock.recv(5) == b"hello"
    return sock


def test_drop_ends_the_connection_and_refuses_new_ones_until_healed(proxy: TcpProxy) -> None:
    sock = _client(proxy)
    proxy.drop()
    assert sock.recv(5) == b""  # EOF: the client sees the partition
    sock.close()
    late = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    assert late.recv(5) == b""
    late.close()
    proxy.heal()
    _client(proxy).close()


def test_stall_forwards_nothing_and_ends_nothing_then_heal_resumes(proxy: TcpProxy) -> None:
    sock = _client(proxy)
    proxy.stall()
    sock.sendall(b"held")
    sock.settimeout(1.0)
    with pytest.raises(TimeoutError):  # neither an echo nor an EOF: half-open
        sock.recv(5)
    assert proxy.open_connections == 1
    proxy.heal()
    sock.settimeout(5)
    assert sock.recv(4) == b"held"
    sock.close()
