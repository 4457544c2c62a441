"""The daemon (`mailrules run` without --once) against a real Dovecot.

Each test runs the daemon as a subprocess with short IDLE/poll/backoff timings, makes
mail arrive at some awkward moment, waits (polling, with a deadline) until the rules
acted, stops the daemon, and then checks that every message was acted on exactly once:
one copy in Archive, one message in Done carrying the keyword, nothing left behind.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import socket
import time
from collections import Counter

import pytest

from mailrules.testing.daemon import (
    DaemonHarness,
    content_digest,
    flags_by_content,
    message_contents,
    message_ids,
    wait_until,
)

FILE_RULES = """\
  - name: file
    match: {subject: msg}
    actions:
      - add_keyword: $Filed
      - copy: Archive
      - move: Done
"""


@pytest.fixture
def harness(dovecot, imap_user, tmp_path):
    made: list[DaemonHarness] = []

    def make(rules: str = FILE_RULES, *, server=None, user=None, **kwargs) -> DaemonHarness:
        h = DaemonHarness(server or dovecot, user or imap_user, tmp_path / f"d{len(made)}", rules=rules, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


SHARED_MID = "<resent.newsletter@example.org>"
_sent = itertools.count()


def mail(make_message, subjects) -> list[bytes]:
    """One message per subject; like real mail, some share a Message-ID and some have none.

    Counting across calls, every fourth message (from the second) carries SHARED_MID (resent newsletters and list
    copies repeat Message-IDs), every fourth (from the fourth) has no Message-ID at all, so
    that a daemon that took a Message-ID for a message's identity shows as lost or doubled mail.
    """
    out = []
    for subject in subjects:
        i = next(_sent)
        if i % 4 == 1:
            out.append(make_message(subject=subject, message_id=SHARED_MID))
        elif i % 4 == 3:
            out.append(make_message(subject=subject, headers={"Message-ID": None}))
        else:
            out.append(make_message(subject=subject))
    return out


def append(client, subjects, make_message, folder="INBOX") -> list[bytes]:
    """APPEND one message per subject (see `mail`); returns the messages sent."""
    raws = mail(make_message, subjects)
    for raw in raws:
        client.append(folder, raw)
    return raws


def contents(raws: list[bytes]) -> Counter[str]:
    """The multiset `message_contents` must find for these messages."""
    return Counter(content_digest(raw) for raw in raws)


def wait_filed(client, n: int, folder: str = "Done", timeout: float = 30.0) -> None:
    wait_until(lambda: sum(message_ids(client, folder).values()) >= n, timeout,
               message=f"{n} messages in {folder}")


def assert_filed_once(client, raws: list[bytes]) -> None:
    """Every message was acted on exactly once: one copy, one keyword, one move (counted by content)."""
    expected = contents(raws)
    assert message_contents(client, "Done") == expected
    assert message_contents(client, "Archive") == expected
    assert not message_contents(client, "INBOX")
    filed = flags_by_content(client, "Done")
    assert sorted(digest for digest, flags in filed.elements() if "$Filed" in flags) == sorted(expected.elements())


# ---------------------------------------------------------------------- arrivals


def test_mail_arriving_during_idle_is_processed_once(harness, imap, make_message):
    daemon = harness()
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    sent = append(imap, [f"msg {i}" for i in range(5)], make_message)
    wait_filed(imap, 5)
    sent += append(imap, [f"msg late {i}" for i in range(5)], make_message)
    wait_filed(imap, 10)
    assert daemon.stop() == 0
    assert_filed_once(imap, sent)


def test_mail_arriving_during_processing_is_not_missed(harness, dovecot, imap_user, imap, make_message):
    from mailrules.testing.proxy import TcpProxy

    backlog = mail(make_message, [f"msg old {i}" for i in range(300)])
    dovecot.deliver_files(imap_user, "INBOX", backlog)
    # slices of 25 over a 20 ms round trip: the catch-up lasts a dozen slices of several round trips
    with TcpProxy(dovecot.host, dovecot.port, delay=0.010) as proxy:
        daemon = harness(port=proxy.port)
        daemon.start(env={"MAILRULES_CATCHUP_BATCH": "25"})
        daemon.wait_for_log(r"catching up on \d+ messages")  # the first slice is done, more wait
        other = dovecot.client(imap_user)
        try:
            sent = append(other, [f"msg new {i}" for i in range(40)], make_message)
        finally:
            other.logout()
        # every new message arrived while the catch-up was still running
        assert "caught up on" not in daemon.log(), daemon.log()[-3000:]
        wait_filed(imap, 340)
        daemon.wait_for_log(r"caught up on \d+ messages")
        assert daemon.stop() == 0
    assert_filed_once(imap, backlog + sent)


def test_mail_arriving_while_stopped_is_processed_at_start(harness, imap, make_message):
    daemon = harness()
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    sent = append(imap, ["msg before"], make_message)
    wait_filed(imap, 1)
    assert daemon.stop() == 0
    sent += append(imap, [f"msg while stopped {i}" for i in range(5)], make_message)
    daemon.start()
    wait_filed(imap, 6)
    assert daemon.stop() == 0
    assert_filed_once(imap, sent)


def test_mail_after_doveadm_kick_is_processed_once(harness, dovecot, imap_user, make_message):
    daemon = harness()
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    dovecot.kick(imap_user)  # drops the daemon's connections (and ours)
    client = dovecot.client(imap_user)
    try:
        sent = append(client, [f"msg during reconnect {i}" for i in range(5)], make_message)
        daemon.wait_for_log("reconnected; watching with IDLE again")
        sent += append(client, [f"msg after reconnect {i}" for i in range(5)], make_message)
        wait_filed(client, 10)
        assert daemon.stop() == 0
        assert_filed_once(client, sent)
    finally:
        client.logout()


def test_daemon_survives_a_dovecot_restart(harness, dovecot_factory, make_message):
    server = dovecot_factory()
    user = server.add_user()
    daemon = harness(server=server, user=user)
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    client = server.client(user)
    sent = append(client, ["msg before restart"], make_message)
    wait_filed(client, 1)
    client.logout()

    server.restart()
    client = server.client(user)
    try:
        sent += append(client, [f"msg after restart {i}" for i in range(5)], make_message)
        daemon.wait_for_log("reconnected; watching with IDLE again")
        sent += append(client, ["msg once watching again"], make_message)
        wait_filed(client, 7)
        assert daemon.stop() == 0
        assert_filed_once(client, sent)
    finally:
        client.logout()


def test_a_silent_connection_is_detected_and_replaced(harness, dovecot, imap_user, imap, make_message):
    from mailrules.testing.proxy import TcpProxy

    with TcpProxy(dovecot.host, dovecot.port) as proxy:
        daemon = harness(port=proxy.port, timeout=2, idle_interval=1)
        daemon.start()
        daemon.wait_for_log("watching with IDLE")
        proxy.silence()  # the link goes dead without a FIN: only a missing answer shows it
        sent = append(imap, [f"msg while silent {i}" for i in range(3)], make_message)
        daemon.wait_for_log(r"IDLE connection lost \(no answer to DONE")
        proxy.resume()
        daemon.wait_for_log("reconnected; watching with IDLE again")
        wait_filed(imap, 3)
        assert daemon.stop() == 0
    assert_filed_once(imap, sent)


def test_a_server_without_idle_is_polled(harness, dovecot_factory, make_message):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS MOVE NAMESPACE ESEARCH")
    user = server.add_user()
    daemon = harness(server=server, user=user)
    daemon.start()
    daemon.wait_for_log("does not offer IDLE: polling INBOX")
    client = server.client(user)
    try:
        sent = append(client, [f"msg {i}" for i in range(5)], make_message)
        wait_filed(client, 5)
        sent += append(client, ["msg later"], make_message)
        wait_filed(client, 6)
        assert daemon.stop() == 0
        assert "watching with IDLE" not in daemon.log()
        assert_filed_once(client, sent)
    finally:
        client.logout()


def test_mailboxes_beyond_max_connections_are_polled(harness, dovecot_factory, make_message):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS MOVE IDLE")  # IDLE, no NOTIFY
    user = server.add_user()
    imap = server.client(user)
    imap.create_folder("Side")
    imap.create_folder("Other")
    daemon = harness(watch=["INBOX", "Side", "Other"], max_connections=2, server=server, user=user)
    daemon.start()
    daemon.wait_for_log(r"IDLE on INBOX, Side \(max_connections 2\): polling Other")
    daemon.wait_for_log("mailbox INBOX: watching with IDLE")
    daemon.wait_for_log("mailbox Side: watching with IDLE")
    sent = append(imap, ["msg in inbox"], make_message)
    sent += append(imap, ["msg on the side"], make_message, folder="Side")
    sent += append(imap, ["msg in the other"], make_message, folder="Other")
    wait_filed(imap, 3)
    assert daemon.stop() == 0
    assert not message_ids(imap, "Side") and not message_ids(imap, "Other")
    assert_filed_once(imap, sent)
    imap.logout()


def test_a_silent_account_does_not_stall_the_others(harness, dovecot, imap_user, imap, make_message):
    from mailrules.testing.proxy import TcpProxy

    with TcpProxy(dovecot.host, dovecot.port) as proxy:
        proxy.silence()  # the second account's server accepts connections and never answers
        daemon = harness()
        text = daemon.rules_text(FILE_RULES).replace(
            "rules:\n",
            "  stuck:\n"
            f"    host: {dovecot.host}\n"
            f"    port: {proxy.port}\n"
            "    tls: none\n"
            f"    username: {imap_user.name}\n"
            "    password_env: MAILRULES_TEST_PASSWORD\n"
            "    timeout: 30\n"
            "rules:\n",
        )
        daemon.write_rules("", raw=text)
        daemon.start()
        daemon.wait_for_log("account t mailbox INBOX: watching with IDLE")
        sent = append(imap, [f"msg {i}" for i in range(3)], make_message)
        wait_filed(imap, 3)
        assert daemon.stop() == 0  # even with the stuck account still waiting for its greeting
    assert_filed_once(imap, sent)


# ---------------------------------------------------------------------- signals


def test_sighup_reloads_the_rules(harness, imap, make_message):
    daemon = harness(FILE_RULES)
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    first = append(imap, ["msg one"], make_message)
    wait_filed(imap, 1)
    daemon.write_rules(FILE_RULES.replace("move: Done", "move: Elsewhere"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: reloaded")
    second = append(imap, ["msg two"], make_message)
    wait_filed(imap, 1, folder="Elsewhere")
    assert daemon.stop() == 0
    assert message_contents(imap, "Done") == contents(first)
    assert message_contents(imap, "Elsewhere") == contents(second)
    assert message_contents(imap, "Archive") == contents(first + second)


def test_sighup_with_a_broken_file_keeps_the_old_rules(harness, imap, make_message):
    daemon = harness()
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    daemon.write_rules("", raw="version: 1\naccounts: {t: {host: [}\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("the old rules stay in force")
    mids = append(imap, ["msg after the broken reload"], make_message)
    wait_filed(imap, 1)
    assert daemon.stop() == 0
    assert_filed_once(imap, mids)


def test_sighup_with_changed_accounts_reconnects_and_watches_the_new_mailbox(harness, imap, make_message):
    imap.create_folder("Later")
    daemon = harness()
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    daemon.watch = ["INBOX", "Later"]
    daemon.write_rules(FILE_RULES)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("the accounts changed: reconnecting")
    daemon.wait_for_log("watching Later with NOTIFY")  # Dovecot advertises NOTIFY: one connection for the others
    mids = append(imap, ["msg in the new mailbox"], make_message, folder="Later")
    mids += append(imap, ["msg in inbox"], make_message)
    wait_filed(imap, 2)
    assert daemon.stop() == 0
    assert not message_ids(imap, "Later")
    assert_filed_once(imap, mids)


def test_sigterm_exits_zero_and_tells_systemd(harness, tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        daemon = harness()
        daemon.start(env={"NOTIFY_SOCKET": path})
        assert sock.recv(4096).startswith(b"READY=1")
        daemon.wait_for_log("watching with IDLE")
        assert daemon.stop() == 0
        messages = []
        sock.settimeout(0.5)
        while True:
            try:
                messages.append(sock.recv(4096))
            except TimeoutError:
                break
    assert b"STOPPING=1" in messages
    assert "mailrules daemon stopped" in daemon.log()


def test_sigterm_during_a_large_catch_up_resumes_without_repeating(harness, dovecot, imap_user, imap, make_message):
    from mailrules.testing.proxy import TcpProxy

    backlog = mail(make_message, [f"msg {i}" for i in range(1500)])
    dovecot.deliver_files(imap_user, "INBOX", backlog)
    # a 100 ms round trip: the steps after the first one's log line take several of them
    with TcpProxy(dovecot.host, dovecot.port, delay=0.050) as proxy:
        daemon = harness(port=proxy.port)
        daemon.start()
        daemon.wait_for_log(r": add_keyword")
        assert daemon.stop() == 0
        # the signal landed mid-pass: the pass was abandoned (its journal kept) with mail still waiting
        assert "stopping: the pass in progress was abandoned" in daemon.log(), daemon.log()[-3000:]
        assert sum(message_ids(imap, "INBOX").values()) > 0
        proxy.delay = 0.0
        result = daemon.run("run", "--once")
        assert result.returncode == 0, result.stderr
    assert_filed_once(imap, backlog)


def test_a_second_daemon_on_the_same_state_refuses_to_start(harness):
    daemon = harness()
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    second = daemon.run("run")
    assert second.returncode == 1
    assert "another mailrules" in second.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_rule_option_is_refused_by_the_daemon(harness):
    daemon = harness()
    result = daemon.run("run", "--rule", "file")
    assert result.returncode == 2
    assert "--rule needs --once" in result.stderr


# ---------------------------------------------------------------------- sweeps

SWEEP_RULES = """\
  - name: tidy old
    match: {subject: old}
    actions:
      - add_keyword: $Swept
      - copy: OldCopy
    schedule: {every: 1s}
  - name: file new
    match: {subject: new}
    actions:
      - move: New
"""


def test_a_sweep_acts_on_existing_mail_while_arrivals_continue(harness, dovecot, imap_user, imap, make_message):
    old = mail(make_message, [f"old {i}" for i in range(40)])
    dovecot.deliver_files(imap_user, "INBOX", old)
    daemon = harness(SWEEP_RULES)
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    client = dovecot.client(imap_user)
    try:
        new = []
        for i in range(30):
            new += append(client, [f"new {i}"], make_message)
            time.sleep(0.05)  # spread the arrivals over several sweeps
    finally:
        client.logout()
    wait_filed(imap, 30, folder="New")
    daemon.wait_for_log(r"sweep every:1: 40 messages", count=3)
    assert daemon.stop() == 0

    assert message_contents(imap, "New") == contents(new)
    assert message_contents(imap, "OldCopy") == contents(old)  # at most once per rule
    inbox = flags_by_content(imap, "INBOX")
    assert sorted(digest for digest, flags in inbox.elements() if "$Swept" in flags) == sorted(
        contents(old).elements()
    )
    assert inbox.total() == len(old)


def test_sweep_option_sweeps_at_start(harness, dovecot, imap_user, imap, make_message):
    old = mail(make_message, [f"old {i}" for i in range(5)])
    dovecot.deliver_files(imap_user, "INBOX", old)
    daemon = harness(SWEEP_RULES.replace("{every: 1s}", '"0 3 * * *"'))
    daemon.start("--sweep")
    daemon.wait_for_log(re.escape("sweep cron:0 3 * * *: 5 messages"))
    assert daemon.stop() == 0
    assert message_contents(imap, "OldCopy") == contents(old)


def test_a_sweep_missed_while_stopped_runs_once_at_start(harness, dovecot, imap_user, imap, make_message):
    from mailrules.config import load
    from mailrules.scheduler import last_sweep, meta_key
    from mailrules.state import StateStore

    rules = SWEEP_RULES.replace("{every: 1s}", '"0 3 * * *"')
    old = mail(make_message, [f"old {i}" for i in range(5)])
    dovecot.deliver_files(imap_user, "INBOX", old)
    daemon = harness(rules)
    key = load(daemon.config).rules[0].schedule.key()
    store = StateStore(daemon.state)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    store.set_meta(meta_key("t", key), long_ago.isoformat())
    store.close()

    daemon.start()
    daemon.wait_for_log(re.escape(f"sweep {key} was missed while the daemon was down"))
    daemon.wait_for_log(re.escape(f"sweep {key}: 5 messages"))
    assert daemon.stop() == 0
    assert message_contents(imap, "OldCopy") == contents(old)
    store = StateStore(daemon.state)
    try:
        assert last_sweep(store, "t", key) > long_ago
    finally:
        store.close()
    status = daemon.run("status")
    assert status.returncode == 0
    assert "next sweep of rule 'tidy old' (cron '0 3 * * *')" in status.stdout
    assert "last sweep" in status.stdout


# ---------------------------------------------------------------------- units


def test_catch_up_progress_is_logged_periodically(caplog):
    import io
    import logging

    from mailrules.progress import CatchUp

    with caplog.at_level(logging.INFO, logger="mailrules.progress"):
        progress = CatchUp("t", "INBOX", 3000, stream=io.StringIO(), interval=0.0)
        progress.advance(1000)
        progress.advance(1000, total=3000)
        progress.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "account t mailbox INBOX: catching up on 3000 messages"
    assert lines[1].startswith("account t mailbox INBOX: catching up: 1000 of 3000 messages")
    assert lines[2].startswith("account t mailbox INBOX: catching up: 2000 of 3000 messages")
    assert lines[3].startswith("account t mailbox INBOX: caught up on 2000 messages")


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap():
    from mailrules.daemon.backoff import Backoff

    backoff = Backoff(cap=10.0)
    delays = [backoff.next() for _ in range(8)]
    for n, delay in enumerate(delays):
        step = min(10.0, 2.0**n)
        assert step / 2 <= delay <= step
    backoff.reset()
    assert backoff.next() <= 1.0


def test_a_schedule_never_swept_before_is_not_missed(tmp_path):
    from mailrules.model import Account, Auth, Config, Rule, Schedule
    from mailrules.scheduler import SweepScheduler, last_sweep, meta_key, sweep_baseline
    from mailrules.state import StateStore

    account = Account("t", "127.0.0.1", "u", Auth("password_env", "X"))
    rule = Rule("nightly", actions=(), schedule=Schedule(cron="0 3 * * *"))
    config = Config({"t": account}, (rule,))
    store = StateStore(tmp_path)
    try:
        now = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.UTC)
        scheduler = SweepScheduler(config, store, lambda key, when: None)
        assert scheduler.missed("t", now) == []  # first start: baseline only
        assert sweep_baseline(store, "t", "cron:0 3 * * *") == now
        assert last_sweep(store, "t", "cron:0 3 * * *") is None  # nothing was swept
        assert scheduler.missed("t", now + dt.timedelta(hours=1)) == []
        assert scheduler.missed("t", now + dt.timedelta(days=1)) == ["cron:0 3 * * *"]
        store.set_meta(meta_key("t", "cron:0 3 * * *"), "not a date")
        assert scheduler.missed("t", now) == []
    finally:
        store.close()


def test_interval_schedules_keep_their_cadence_across_restarts(tmp_path):
    from mailrules.model import Schedule
    from mailrules.scheduler import due_since, next_sweep

    every = Schedule(every_seconds=3600)
    last = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.UTC)
    assert not due_since(every, None, last, last + dt.timedelta(minutes=59))
    assert due_since(every, None, last, last + dt.timedelta(minutes=61))
    later = last + dt.timedelta(minutes=20)
    assert next_sweep(every, None, last, later) == last + dt.timedelta(hours=1)
    assert next_sweep(every, None, last, last + dt.timedelta(hours=5)) == last + dt.timedelta(hours=5)


def test_idle_link_reports_exists_and_bye_and_eof():
    from mailrules.imap.idle import ConnectionLost, IdleLink, exists_in

    class FakeImap:
        file = None

    class FakeClient:
        def __init__(self, sock):
            self._imap = FakeImap()
            self._sock = sock

        def socket(self):
            return self._sock

    ours, theirs = socket.socketpair()
    wake_r, wake_w = os.pipe()
    try:
        link = IdleLink(FakeClient(ours), wake_r, timeout=5)
        theirs.sendall(b"+ idling\r\n")
        assert link.start() == []
        theirs.sendall(b"* 3 EXISTS\r\n* 1 RECENT\r\n")
        got = link.wait(time.monotonic() + 5)
        assert exists_in(got)
        assert link.wait(time.monotonic() + 0.01) == []  # nothing more: the deadline passes
        os.write(wake_w, b"x")
        assert link.wait(time.monotonic() + 5) is None  # woken
        theirs.sendall(b"* BYE going away\r\n")
        with pytest.raises(ConnectionLost, match="BYE"):
            link.wait(time.monotonic() + 5)
        theirs.recv(100)  # our IDLE command: read, so that close() sends a FIN, not a reset
        theirs.close()
        with pytest.raises(ConnectionLost, match="closed"):
            link.wait(time.monotonic() + 5)
    finally:
        ours.close()
        os.close(wake_r)
        os.close(wake_w)


def test_idle_link_hands_back_what_it_read_past_its_command():
    from mailrules.imap.idle import IdleLink

    ours, theirs = socket.socketpair()
    wake_r, wake_w = os.pipe()
    file = ours.makefile("rb")

    class FakeImap:
        pass

    class FakeClient:
        _imap = FakeImap()

        def socket(self):
            return ours

    FakeClient._imap.file = file
    try:
        theirs.sendall(b"* 1 EXISTS\r\n")  # already in imaplib's buffer before IDLE: not lost
        assert file.peek(1)
        link = IdleLink(FakeClient(), wake_r, timeout=5)
        theirs.sendall(b"+ idling\r\n")
        assert link.start() == [b"* 1 EXISTS"]
        tag = theirs.recv(100).split()[0]
        theirs.sendall(tag + b" OK Idle completed\r\n* 7 EXISTS\r\n")
        assert link.done() == []
        assert FakeClient._imap.file.readline() == b"* 7 EXISTS\r\n"  # imaplib reads on from there
    finally:
        file.close()
        ours.close()
        theirs.close()
        os.close(wake_r)
        os.close(wake_w)


def test_sd_notify_is_silent_without_systemd(monkeypatch):
    from mailrules.daemon.systemd import sd_notify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False

