"""`SessionPool.open_early`: `run --once` opens its first connection in a thread while it starts.

The connection it takes is the one opened early, a failure to connect reaches the caller of
`get` as it would have connecting directly, and a connection nobody takes is logged out. The
first pass's mailbox is selected as it opens; the pass takes that selection once, and only if
nothing selected anything else since. (Unit tests: the connect function is a stand-in;
`tests/test_cli.py` runs the real thing.)
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError

from mailrules.connect import AuthenticationError
from mailrules.imap.pool import SessionPool
from mailrules.imap.session import Selected
from mailrules.model import Account, Auth, Config
from mailrules.runcommand import early_pool


class FakeSession:
    def __init__(self, account: str) -> None:
        self.account = account
        self.logged_out = threading.Event()

    server_software = "dovecot"
    selected: Selected | None = None
    refuse: set[str] = set()  # mailboxes whose SELECT the server refuses

    def has(self, capability: str) -> bool:
        return False

    def server_name(self, mailbox: str) -> str:
        return mailbox

    def select(self, server_name: str, *, readonly: bool = False) -> Selected:
        if server_name in self.refuse:
            raise IMAPClientError(f"select failed: [NONEXISTENT] Mailbox doesn't exist: {server_name}")
        self.selected = Selected(server_name, 7, 1, 0, (), readonly)
        return self.selected

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


def _connecting_work(connect) -> SessionPool:
    """A pool opening account "work" early, with `connect` as its connect function."""
    config = _config("work")
    return SessionPool.connecting(config, [config.accounts["work"]], connect)  # type: ignore[arg-type]


def test_the_first_pass_takes_the_mailbox_selected_as_the_connection_opened_once() -> None:
    pool = _connecting_work(FakeSession)
    session = pool.get("work")
    early = pool.take_early_selection("work", "INBOX")
    assert early is not None and early.selected is session.selected and not early.selected.readonly
    assert pool.take_early_selection("work", "INBOX") is None


def test_a_selection_replaced_since_the_opening_is_not_taken() -> None:
    pool = _connecting_work(FakeSession)
    pool.get("work").select("Archive")
    assert pool.take_early_selection("work", "INBOX") is None


def test_the_opening_selection_of_another_mailbox_is_not_taken_for_this_one() -> None:
    pool = _connecting_work(FakeSession)
    pool.get("work")
    assert pool.take_early_selection("work", "Lists") is None


def test_a_select_refused_as_the_connection_opens_leaves_the_connection_to_the_pass() -> None:
    class Refusing(FakeSession):
        refuse = {"INBOX"}

    pool = _connecting_work(Refusing)
    assert pool.get("work").selected is None
    assert pool.take_early_selection("work", "INBOX") is None


def test_adopting_settings_that_changed_since_the_accounts_were_read_drops_the_early_connection() -> None:
    made: list[FakeSession] = []

    def connect(account: str) -> FakeSession:
        made.append(FakeSession(account))
        return made[-1]

    early = _config("work")
    pool = SessionPool.connecting(early, [early.accounts["work"]], connect)  # type: ignore[arg-type]
    changed = Config(accounts={"work": Account(name="work", host="127.0.0.2", username="work",
                                               auth=Auth("password", "x"), watch=("INBOX",))}, rules=())
    pool.adopt(changed, changed.accounts.values())
    session = pool.get("work")
    assert made[0].logged_out.wait(5)
    assert session is made[1] and len(made) == 2


def _args(tmp_path, auth: str) -> argparse.Namespace:
    path = tmp_path / "rules.yaml"
    path.write_text(f"""version: 1
accounts:
  work:
    host: 127.0.0.1
    port: {_closed_port()}
    tls: none
    username: me
    {auth}
rules: []
""")
    path.chmod(0o600)
    return argparse.Namespace(command="run", once=True, dry_run=False, config=str(path), shard=None,
                              state=str(tmp_path / "state"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_once_starts_connecting_on_the_accounts_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MAILRULES_TEST_EARLY_PW", "secret")
    pool = early_pool(_args(tmp_path, "password_env: MAILRULES_TEST_EARLY_PW"))
    assert pool is not None
    pool.close()


def test_no_program_runs_for_a_password_before_the_whole_file_is_known_to_be_valid(tmp_path) -> None:
    assert early_pool(_args(tmp_path, "password_command: [echo, secret]")) is None


def test_a_file_whose_accounts_do_not_load_opens_nothing_early(tmp_path) -> None:
    args = _args(tmp_path, "password_env: X")
    Path(args.config).write_text("version: 1\naccounts: {work: {host: 127.0.0.1}}\nrules: []\n")
    assert early_pool(args) is None
