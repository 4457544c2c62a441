"""`SessionPool.open_early`: `run --once` opens its first connection in a thread while it starts.

The connection it takes is the one opened early, a failure to connect reaches the caller of
`get` as it would have connecting directly, and a connection nobody takes is logged out.
(Unit tests: the connect function is a stand-in; `tests/test_cli.py` runs the real thing.)
"""

from __future__ import annotations

import threading
import time

import pytest

from mailrules.connect import AuthenticationError
from mailrules.imap.pool import SessionPool
from mailrules.model import Account, Auth, Config


class FakeSession:
    def __init__(self, account: str) -> None:
        self.account = account
        self.logged_out = threading.Event()

    server_software = "dovecot"

    def has(self, capability: str) -> bool:
        return False

    def logout(self, wait: bool = True) -> None:
        self.logged_out.set()

    def namespace(self) -> tuple[str, str]:
        return "", "/"


def _config(*names: str) -> Config:
    accounts = {n: Account(name=n, host="127.0.0.1", username=n, auth=Auth("password", "x"), watch=("INBOX",))
                for n in names}
    return Config(accounts=accounts, rules=())


def test_get_takes_the_connection_opened_early_and_connects_once() -> None:
    opened: list[str] = []

    def connect(account: str) -> FakeSession:
        opened.append(account)
        return FakeSession(account)

    pool = SessionPool(_config("work"), connect=connect)  # type: ignore[arg-type]
    pool.open_early("work")
    session = pool.get("work")
    assert session.account == "work" and pool.get("work") is session
    assert opened == ["work"]


def test_a_failure_to_connect_early_is_raised_by_get() -> None:
    def connect(account: str) -> FakeSession:
        raise AuthenticationError(f"account {account!r}: rejected", account=account)

    pool = SessionPool(_config("work"), connect=connect)  # type: ignore[arg-type]
    pool.open_early("work")
    with pytest.raises(AuthenticationError, match="rejected"):
        pool.get("work")


def test_a_connection_still_opening_when_the_pool_closes_is_logged_out_once_open() -> None:
    release = threading.Event()
    made: list[FakeSession] = []

    def connect(account: str) -> FakeSession:
        release.wait(10)
        made.append(FakeSession(account))
        return made[-1]

    pool = SessionPool(_config("work"), connect=connect)  # type: ignore[arg-type]
    pool.open_early("work")
    pool.close()
    release.set()
    deadline = time.monotonic() + 5
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made and made[0].logged_out.wait(5)


def test_connecting_opens_the_first_account_that_watches_a_mailbox() -> None:
    opened: list[str] = []

    def connect(account: str) -> FakeSession:
        opened.append(account)
        return FakeSession(account)

    config = _config("idle", "work")
    accounts = [Account(name="idle", host="127.0.0.1", username="idle", auth=Auth("password", "x"), watch=()),
                config.accounts["work"]]
    pool = SessionPool.connecting(config, accounts, connect)  # type: ignore[arg-type]
    assert pool.get("work").account == "work"
    assert opened == ["work"]
