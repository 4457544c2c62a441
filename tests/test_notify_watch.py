"""NOTIFY (RFC 5465): one connection per account learns of new mail in every watched mailbox but home.

Against Dovecot, which advertises NOTIFY: the plan (IDLE on home, NOTIFY for the rest, two
connections), mail in every mailbox acted on once (counted by content), no gap after the
NOTIFY connection is lost, a missing mailbox named while the others keep filing; and the
parsing of the STATUS notifications.
"""

from __future__ import annotations

import re
import urllib.request

import pytest

from mailrules.daemon.notify import parse_status
from mailrules.testing.daemon import DaemonHarness, content_digest, message_contents, wait_until

RULES = """\
  - name: file
    match: {subject: msg}
    actions:
      - move: Done
"""


@pytest.mark.parametrize("line, status", [
    (b"* STATUS A (MESSAGES 2 UIDNEXT 3 UNSEEN 2)", ("A", 3)),
    (b'* STATUS "Sp ace" (MESSAGES 1 UIDNEXT 2)', ("Sp ace", 2)),
    (b'* STATUS "a\\"b" (UIDNEXT 7)', ('a"b', 7)),
    (b"* STATUS {5}\r\nab cd (UIDNEXT 9)", ("ab cd", 9)),
    (b"* STATUS &AOQ-b (UIDNEXT 4)", ("\u00e4b", 4)),
    (b"* STATUS INBOX (MESSAGES 1)", None),
    (b"* 3 EXISTS", None),
])
def test_status_notifications_give_the_mailbox_and_its_uidnext(line, status):
    assert parse_status(line) == status


@pytest.fixture
def daemon(dovecot, imap_user, tmp_path):
    made: list[DaemonHarness] = []

    def make(**kwargs) -> DaemonHarness:
        h = DaemonHarness(dovecot, imap_user, tmp_path / f"d{len(made)}", rules=RULES, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _deliver(imap, make_message, folders, tag: str):
    raws = [make_message(subject=f"msg {tag} {f}", body=f"{tag} in {f}") for f in folders]
    for folder, raw in zip(folders, raws, strict=True):
        imap.append(folder, raw)
    return raws


def _filed(imap, raws) -> bool:
    want = {content_digest(r) for r in raws}
    got = message_contents(imap, "Done")
    return want <= set(got)


def _connections(base: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    return {use: float(v) for use, v in re.findall(r'^mailrules_connections\{use="(\w+)"\} (\S+)$', text, re.M)}


FOLDERS = ["A", "B", "C", "D", "E", "F"]


def test_every_other_watched_mailbox_shares_one_notify_connection(daemon, imap, make_message):
    for f in FOLDERS:
        imap.create_folder(f)
    h = daemon(watch=["INBOX", *FOLDERS])
    h.start("--metrics", "127.0.0.1:0")
    h.wait_for_log(r"IDLE on INBOX, NOTIFY for A, B, C, D, E, F \(2 connections\)")
    h.wait_for_log("watching A, B, C, D, E, F with NOTIFY")
    h.wait_for_log("mailbox INBOX: watching with IDLE")
    base = re.search(r"metrics on (http://[^/\s]+)/metrics", h.log()).group(1)
    sent = _deliver(imap, make_message, ["INBOX", *FOLDERS], "first")
    wait_until(lambda: _filed(imap, sent), 30, message="every mailbox's mail filed")
    assert _connections(base) == {"action": 1.0, "watch": 1.0}  # 7 mailboxes, 2 connections
    assert h.stop() == 0
    assert message_contents(imap, "Done") == {content_digest(r): 1 for r in sent}
    assert "IDLE on A" not in h.log() and "mailbox A: watching with IDLE" not in h.log()


def test_mail_that_came_while_the_notify_connection_was_down_is_not_missed(daemon, dovecot, imap_user, imap,
                                                                          make_message):
    for f in FOLDERS[:3]:
        imap.create_folder(f)
    h = daemon(watch=["INBOX", *FOLDERS[:3]])
    h.start()
    h.wait_for_log("watching A, B, C with NOTIFY")
    sent = _deliver(imap, make_message, FOLDERS[:3], "before")
    wait_until(lambda: _filed(imap, sent), 30, message="filed before the kick")
    dovecot.kick(imap_user)
    imap = dovecot.client(imap_user)  # the test's own connection was kicked too
    try:
        sent += _deliver(imap, make_message, FOLDERS[:3], "during")
        h.wait_for_log("reconnected; watching A, B, C with NOTIFY again")
        sent += _deliver(imap, make_message, FOLDERS[:3], "after")
        wait_until(lambda: _filed(imap, sent), 30, message="everything filed after the reconnection")
        assert h.stop() == 0
        assert message_contents(imap, "Done") == {content_digest(r): 1 for r in sent}
    finally:
        imap.logout()


def test_a_missing_mailbox_is_named_and_the_others_keep_filing(daemon, imap, make_message):
    imap.create_folder("A")
    h = daemon(watch=["INBOX", "A", "Nope"])
    h.start()
    h.wait_for_log(r"account t: not watched: Nope \(no such mailbox\)")
    h.wait_for_log("watching A with NOTIFY")
    sent = _deliver(imap, make_message, ["A"], "present")
    wait_until(lambda: _filed(imap, sent), 30, message="A's mail filed")
    status = h.run("status")
    assert "mailbox 'Nope' does not exist" in status.stdout
    assert h.stop() == 0


def test_a_silent_notify_connection_is_noticed_and_replaced_without_a_gap(daemon, dovecot, imap, make_message):
    from mailrules.testing.proxy import TcpProxy

    imap.create_folder("A")
    with TcpProxy(dovecot.host, dovecot.port) as proxy:
        h = daemon(watch=["INBOX", "A"], port=proxy.port, timeout=2, idle_interval=1)
        h.start()
        h.wait_for_log("watching A with NOTIFY")
        proxy.silence()  # the link goes dead without a FIN: only a missing answer shows it
        sent = _deliver(imap, make_message, ["A", "A"], "silent")
        # DONE, usually; NOTIFY NONE or NOOP when the silence falls in a re-arm or a probe
        h.wait_for_log(r"NOTIFY connection lost \(no answer to ")
        proxy.resume()
        h.wait_for_log("reconnected; watching A with NOTIFY again")
        wait_until(lambda: _filed(imap, sent), 30, message="mail sent while the link was silent filed")
        assert h.stop() == 0
    assert message_contents(imap, "Done") == {content_digest(r): 1 for r in sent}


def test_mail_that_arrives_across_the_notify_set_after_activity_is_filed_once(daemon, imap, make_message):
    import time

    for f in FOLDERS[:3]:
        imap.create_folder(f)
    h = daemon(watch=["INBOX", *FOLDERS[:3]])
    h.start("-v")
    h.wait_for_log("watching A, B, C with NOTIFY")
    sent = []
    for wave in range(8):  # waves 0.4 s apart: some land while NOTIFY is set up again (1 s after a change)
        sent += _deliver(imap, make_message, FOLDERS[:3], f"wave{wave}")
        time.sleep(0.4)
    wait_until(lambda: _filed(imap, sent), 30, message="every wave filed")
    assert "NOTIFY set up again (after activity)" in h.log()
    assert h.stop() == 0
    assert message_contents(imap, "Done") == {content_digest(r): 1 for r in sent}


def _rotate_list_index_log(dovecot, user, imap) -> None:
    """Make Dovecot rotate the account's dovecot.list.index.log (64 KB of \\Seen toggles in Other)."""
    import os

    log = dovecot.mailbox_path(user) / "dovecot.list.index.log"
    inode = os.stat(log).st_ino
    imap.select_folder("Other")
    for _ in range(2000):
        if os.stat(log).st_ino != inode:
            break
        imap.add_flags([1], [b"\\Seen"])
        imap.remove_flags([1], [b"\\Seen"])
        imap.noop()
    imap.unselect_folder()
    assert os.stat(log).st_ino != inode, "the list index log did not rotate"


def test_mail_after_dovecots_list_index_log_rotated_is_filed_without_waiting_for_its_timer(
        daemon, dovecot, imap_user, imap, make_message):
    """Dovecot 2.3's NOTIFY watch stays on the rotated-away log; its own timer would take 30 s."""
    import time

    from mailrules.daemon.notify import PROBE_EVERY

    for f in ["A", "B", "Other"]:
        imap.create_folder(f)
    imap.append("Other", make_message(subject="not for the rules"))
    h = daemon(watch=["INBOX", "A", "B"], idle_interval=300)  # the worker's IDLE renewals on INBOX wake NOTIFY too
    h.start("-v")
    h.wait_for_log("watching A, B with NOTIFY")
    _rotate_list_index_log(dovecot, imap_user, imap)  # a change the daemon does not see
    time.sleep(1)  # Dovecot's notification already pending (0.5 s) from before the rotation has fired
    started = time.monotonic()
    sent = _deliver(imap, make_message, ["A"], "unannounced")
    wait_until(lambda: _filed(imap, sent), 30, message="the mail after the rotation filed")
    assert time.monotonic() - started < PROBE_EVERY + 3  # the quiet probe found it, not Dovecot's timer
    time.sleep(2)
    started = time.monotonic()
    later = _deliver(imap, make_message, ["B"], "announced")
    wait_until(lambda: _filed(imap, later), 30, message="the next mail filed")
    assert time.monotonic() - started < 3  # pushed again: NOTIFY watches the new log
    # Usually the quiet probe finds the first message ("a NOOP found news"); when Dovecot's check
    # of the old log happens to see it first, the push comes and the set-up follows that activity.
    # Either way NOTIFY was set up again, and the times above are what the user sees.
    assert "NOTIFY set up again (" in h.log()
    assert h.stop() == 0
    assert message_contents(imap, "Done") == {content_digest(r): 1 for r in sent + later}


def test_notify_set_up_again_without_a_rotation_still_announces(daemon, imap, make_message):
    """NOTIFY NONE before the second SET: a SET alone leaves Dovecot 2.3 deaf to the same log file."""
    import time

    for f in ["A", "B"]:
        imap.create_folder(f)
    h = daemon(watch=["INBOX", "A", "B"])
    h.start("-v")
    h.wait_for_log("watching A, B with NOTIFY")
    first = _deliver(imap, make_message, ["A"], "first")
    wait_until(lambda: _filed(imap, first), 30, message="the first mail filed")
    h.wait_for_log(r"NOTIFY set up again \(after activity\)")
    time.sleep(1.5)
    started = time.monotonic()
    second = _deliver(imap, make_message, ["B"], "second")
    wait_until(lambda: _filed(imap, second), 30, message="the second mail filed")
    assert time.monotonic() - started < 3
    assert h.stop() == 0
    assert message_contents(imap, "Done") == {content_digest(r): 1 for r in first + second}


def test_mail_in_home_counts_as_activity_on_the_notify_connection_and_is_filed_once(daemon, imap, make_message):
    """Moving mail out of home writes Dovecot's list index log, which may rotate: NOTIFY hears home too."""
    imap.create_folder("A")
    h = daemon(watch=["INBOX", "A"])
    h.start("-v")
    h.wait_for_log("watching A with NOTIFY")
    sent = _deliver(imap, make_message, ["INBOX", "INBOX"], "home")
    wait_until(lambda: _filed(imap, sent), 30, message="home's mail filed")
    h.wait_for_log(r"NOTIFY set up again \(after activity\)")
    assert "mailbox INBOX: new mail announced (NOTIFY)" not in h.log()  # the worker's IDLE serves home
    assert h.stop() == 0
    assert message_contents(imap, "Done") == {content_digest(r): 1 for r in sent}
