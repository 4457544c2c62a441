"""Connecting costs no round trip for what the greeting already said.

Dovecot lists its capabilities in the greeting (``* OK [CAPABILITY ...]``): the
connection uses that list instead of asking CAPABILITY before login; a greeting without the
list is asked as before. The client's bytes are recorded by a relay in front of the server.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

import pytest

from mailrules.connect import connect
from mailrules.model import Account, Auth
from mailrules.testing.dovecot import DovecotServer, User
from mailrules.testing.proxy import TcpProxy

pytestmark = pytest.mark.usefixtures("dovecot")


def _account(user: User, port: int) -> Account:
    return Account(name="work", host="127.0.0.1", port=port, username=user.name,
                   auth=Auth("password", user.password), tls="none", timeout=15.0)


class _Recorder:
    """A TCP relay on 127.0.0.1 to `port` that keeps every byte its (one) client sent."""

    def __init__(self, port: int) -> None:
        self.sent = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, args=(port,), daemon=True).start()

    def _serve(self, port: int) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if record:
                    self.sent += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def commands(self) -> list[str]:
        return re.findall(r"^\S+ ([A-Z]+)", bytes(self.sent).decode(), flags=re.MULTILINE)


def test_the_greetings_capabilities_spare_the_capability_command(dovecot: DovecotServer) -> None:
    user = dovecot.add_user()
    relay = _Recorder(dovecot.port)
    client = connect(_account(user, relay.port))
    try:
        assert b"NAMESPACE" in client.capabilities()  # LOGIN's list, not the greeting's
    finally:
        client.logout()
    assert relay.commands() == ["LOGIN", "LOGOUT"]


def test_a_greeting_without_capabilities_is_answered_by_asking(dovecot: DovecotServer) -> None:
    user = dovecot.add_user()

    def plain_greeting(line: bytes) -> bytes:
        return re.sub(rb"^\* OK \[CAPABILITY [^]]*\] ", b"* OK ", line)

    with TcpProxy(dovecot.host, dovecot.port, rewrite_server=plain_greeting) as proxy:
        relay = _Recorder(proxy.port)
        client = connect(_account(user, relay.port))
        try:
            assert b"NAMESPACE" in client.capabilities()
        finally:
            client.logout()
    assert relay.commands() == ["CAPABILITY", "LOGIN", "LOGOUT"]
