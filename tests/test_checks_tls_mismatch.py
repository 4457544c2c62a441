"""A connection whose `tls:` does not match the port is named as such, with the fix.

`tls: none` (or `starttls`) against an implicit-TLS port gets no greeting: the server waits
for a TLS ClientHello. mailrules notices the silence after a few seconds, asks the port
whether it speaks TLS, and says to set `tls: implicit` instead of waiting out `timeout:`.
"""

from __future__ import annotations

import pytest

from mailrules.connect import ConnectError, TLSError, connect
from mailrules.model import Account, Auth


def _account(server, user, *, port: int, tls: str, timeout: float = 30.0) -> Account:
    return Account(name="me", host="127.0.0.1", username=user.name, auth=Auth("password", user.password),
                   port=port, tls=tls, timeout=timeout,
                   ca_file=str(server.ca_file) if server.ca_file else None)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    from mailrules.testing.dovecot import dovecot_available, temporary_dovecot

    if not dovecot_available():
        pytest.skip("dovecot is not installed")
    with temporary_dovecot(tls=True) as server:
        yield server


def test_tls_none_against_an_implicit_tls_port_says_to_set_tls_implicit(tls_server):
    account = _account(tls_server, tls_server.add_user(), port=tls_server.tls_port, tls="none")
    with pytest.raises(ConnectError) as caught:
        connect(account)
    text = str(caught.value)
    assert "tls: implicit" in text and "speaks TLS" in text, text
    assert "timeout" not in text


def test_starttls_against_an_implicit_tls_port_says_to_set_tls_implicit(tls_server):
    account = _account(tls_server, tls_server.add_user(), port=tls_server.tls_port, tls="starttls")
    with pytest.raises(ConnectError) as caught:
        connect(account)
    assert "tls: implicit" in str(caught.value)


def test_implicit_tls_against_a_plain_port_says_to_use_starttls(tls_server):
    account = _account(tls_server, tls_server.add_user(), port=tls_server.port, tls="implicit")
    with pytest.raises(TLSError) as caught:
        connect(account)
    assert "tls: starttls" in str(caught.value)


def test_a_matching_plain_connection_still_logs_in(tls_server):
    client = connect(_account(tls_server, tls_server.add_user(), port=tls_server.port, tls="none"))
    try:
        assert client.capabilities()
    finally:
        client.logout()
