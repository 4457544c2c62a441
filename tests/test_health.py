"""Daemon health: a permanent problem of one account is reported, never hidden as "watching".

A login the server refuses, or a watched mailbox that does not exist, shows in the sd_notify
STATUS line (what `systemctl status` prints) and in `mailrules status`, is retried slowly,
and the other accounts (and mailboxes) keep filing their mail.
"""

from __future__ import annotations

import hashlib
import socket
from collections import Counter

import pytest

from mailrules.testing.daemon import DaemonHarness, message_contents, wait_until

RULES = """\
  - name: file
    match: {subject: msg}
    actions:
      - move: Done
"""


@pytest.fixture
def harness(dovecot, imap_user, tmp_path):
    made: list[DaemonHarness] = []

    def make(**kwargs) -> DaemonHarness:
        h = DaemonHarness(dovecot, imap_user, tmp_path / f"d{len(made)}", rules=RULES, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(1.0)
        yield path, sock


def _with_bad_account(daemon: DaemonHarness, dovecot, user) -> None:
    """A second account, 'bad', for the same user but with a wrong password."""
    text = daemon.rules_text(RULES).replace(
        "rules:\n",
        "  bad:\n"
        f"    host: {dovecot.host}\n"
        f"    port: {dovecot.port}\n"
        "    tls: none\n"
        f"    username: {user.name}\n"
        "    password_env: MAILRULES_TEST_BAD_PASSWORD\n"
        "    timeout: 5\n"
        "rules:\n",
    )
    daemon.write_rules("", raw=text)


def _wait_status(sock: socket.socket, wanted: str, timeout: float = 30.0) -> str:
    """The first STATUS line that contains `wanted` (every datagram before it is read)."""
    seen: list[str] = []

    def found() -> str | None:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            return None
        for line in data.splitlines():
            if line.startswith("STATUS="):
                seen.append(line)
                if wanted in line:
                    return line
        return None

    try:
        return wait_until(found, timeout, interval=0, message=f"a STATUS line with {wanted!r}")
    except AssertionError:
        raise AssertionError(f"no STATUS with {wanted!r}; seen: {seen}") from None


def _deliver(client, make_message, n: int) -> Counter[str]:
    """APPEND n messages to INBOX; their content digests (as `message_contents` counts them)."""
    out: Counter[str] = Counter()
    for i in range(n):
        raw = make_message(subject=f"msg {i}")
        client.append("INBOX", raw)
        out[hashlib.sha256(raw).hexdigest()] += 1
    return out


def test_a_refused_login_is_named_in_the_status_line_while_the_good_account_keeps_filing(
        harness, dovecot, imap_user, imap, make_message, notify_socket):
    path, sock = notify_socket
    daemon = harness()
    _with_bad_account(daemon, dovecot, imap_user)
    daemon.start(env={"NOTIFY_SOCKET": path, "MAILRULES_TEST_BAD_PASSWORD": "wrong"})
    line = _wait_status(sock, "account 'bad': login refused")
    assert "of 2 account(s)" not in line, line
    daemon.wait_for_log("account t mailbox INBOX: watching with IDLE")
    contents = _deliver(imap, make_message, 3)
    wait_until(lambda: message_contents(imap, "Done") == contents, message="the good account's mail filed")
    status = daemon.run("status")
    assert "account bad: login refused" in status.stdout, status.stdout
    assert daemon.stop() == 0
    assert "retrying in" in daemon.log()


def test_a_refused_login_is_retried_slowly(harness, dovecot, imap_user, notify_socket):
    path, sock = notify_socket
    daemon = harness()
    _with_bad_account(daemon, dovecot, imap_user)
    daemon.start(env={"NOTIFY_SOCKET": path, "MAILRULES_TEST_BAD_PASSWORD": "wrong"})
    _wait_status(sock, "account 'bad': login refused")
    daemon.wait_for_log(r"account bad: login refused .*; retrying in \d+s")
    assert daemon.count("account bad: login refused") == 1  # not the 1 s reconnection backoff
    assert daemon.stop() == 0


def test_a_missing_watched_mailbox_is_named_and_the_other_mailboxes_keep_filing(
        harness, imap, make_message, notify_socket):
    path, sock = notify_socket
    daemon = harness(watch=["INBOX", "Nope"])
    daemon.start(env={"NOTIFY_SOCKET": path})
    line = _wait_status(sock, "account 't': mailbox 'Nope' does not exist")
    assert "watching 1 mailbox(es)" in line, line
    contents = _deliver(imap, make_message, 2)
    wait_until(lambda: message_contents(imap, "Done") == contents, message="INBOX's mail filed")
    status = daemon.run("status")
    assert "mailbox 'Nope' does not exist" in status.stdout, status.stdout
    assert daemon.stop() == 0
    assert "IDLE connection lost" not in daemon.log()
