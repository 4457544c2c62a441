"""Shared mailboxes (`shared: true`): several daemons on one mailbox act on each message once.

Against the real Dovecot: separate state directories (separate instances), messages arriving
over time, one daemon killed with SIGKILL and restarted. Counted by content: a `copy:` to a
folder doubles if two instances act on one message.
"""

from __future__ import annotations

import collections
import hashlib
import time

from mailrules.claims import GEN_BITS, STEP_BITS, claimed_keyword, done_keyword
from mailrules.config import load
from mailrules.testing.daemon import DaemonHarness, keywords, message_contents, wait_until

RULES = """\
  - name: file
    match: {subject: shared}
    actions:
      - copy: Archive
      - add_keyword: $Filed
  - name: away
    match: {subject: away}
    actions:
      - move: Done
"""

SHARED = {"shared": "true", "claim_timeout": "3s"}


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _uidvalidity(client, folder: str = "INBOX") -> int:
    return int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])


def _marks(client, folder: str = "INBOX") -> tuple[str, str]:
    """This mailbox's claim and done keywords (scoped by its name and UIDVALIDITY)."""
    validity = _uidvalidity(client, folder)
    return claimed_keyword(folder, validity), done_keyword(folder, validity)


def _all_done(client, expected_inbox: int) -> bool:
    marks = keywords(client, "INBOX")
    done = _marks(client)[1]
    return len(marks) == expected_inbox and all(done in k for k in marks.values())


def test_three_daemons_with_a_sigkill_act_on_every_message_exactly_once(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    daemons = [DaemonHarness(dovecot, user, tmp_path / f"d{i}", rules=RULES, **SHARED) for i in range(3)]
    sent: list[bytes] = []
    try:
        for d in daemons:
            d.start()
        for d in daemons:
            d.wait_for_log("mailrules daemon started")
        for i in range(60):
            raw = make_message(subject=f"shared {i}" + (" away" if i % 2 == 0 else ""), size_padding=100)
            sent.append(raw)
            client.append("INBOX", raw)
            if i == 25:
                daemons[0].kill()  # SIGKILL in the middle of the stream
            if i == 40:
                daemons[0].start()
                daemons[0].wait_for_log("mailrules daemon started")
            time.sleep(0.05)
        wait_until(lambda: _all_done(client, 30) and not message_contents(client, "INBOX") - collections.Counter(
            _digest(r) for r in sent[1::2]), 60, interval=0.2, message="every message done")
        wait_until(lambda: sum(message_contents(client, "Done").values()) >= 30, 30, message="moves")
        for d in daemons:
            assert d.stop() == 0
    finally:
        for d in daemons:
            d.close()
    everything = collections.Counter(_digest(r) for r in sent)
    assert message_contents(client, "Archive") == everything  # a double copy would show
    assert message_contents(client, "Done") == collections.Counter(_digest(r) for r in sent[0::2])
    assert message_contents(client, "INBOX") == collections.Counter(_digest(r) for r in sent[1::2])
    claimed, done = _marks(client)
    for uid, marks in keywords(client, "INBOX").items():
        assert {"$Filed", claimed, done} <= marks, (uid, marks)
        assert not marks & {*GEN_BITS, *STEP_BITS}, (uid, marks)  # a finished claim keeps two keywords
    client.logout()


def test_a_claim_left_by_a_dead_instance_is_taken_over_after_claim_timeout(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    raw = make_message(subject="shared orphan")
    claimed, done = _marks(client)
    client.append("INBOX", raw, flags=[claimed, GEN_BITS[1]])  # claimed (generation 2), then the holder died
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES, **SHARED)
    try:
        daemon.start()
        daemon.wait_for_log("took over a claim unfinished for 3s \\(generation 2, step 0", timeout=30)
        wait_until(lambda: _all_done(client, 1), 30, message="the orphan done")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert message_contents(client, "Archive") == collections.Counter([_digest(raw)])
    (marks,) = keywords(client, "INBOX").values()
    assert {"$Filed", claimed, done} <= marks
    client.logout()


def test_a_message_claimed_by_a_live_instance_is_left_to_it(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    raw = make_message(subject="shared other")
    claimed, done = _marks(client)
    client.append("INBOX", raw, flags=[claimed])
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES, shared="true", claim_timeout="1h")
    try:
        result = daemon.run("run", "--once")
        assert result.returncode == 0, result.stderr
    finally:
        daemon.close()
    assert not message_contents(client, "Archive")
    (marks,) = keywords(client, "INBOX").values()
    assert done not in marks and "$Filed" not in marks
    client.logout()


def test_a_message_done_here_is_skipped_by_an_instance_that_never_saw_it(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    client.append("INBOX", make_message(subject="shared done"), flags=list(_marks(client)))
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES, shared="true")
    try:
        result = daemon.run("run", "--once")
        assert result.returncode == 0, result.stderr
    finally:
        daemon.close()
    assert not message_contents(client, "Archive")
    client.logout()


def test_shared_without_condstore_is_refused_with_a_clear_error(dovecot_factory, tmp_path, make_message):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS NAMESPACE ESEARCH IDLE MOVE")
    user = server.add_user()
    client = server.client(user)
    client.create_folder("Archive")
    client.append("INBOX", make_message(subject="shared one"))
    daemon = DaemonHarness(server, user, tmp_path / "d", rules=RULES, shared="true")
    try:
        result = daemon.run("run", "--once")
    finally:
        daemon.close()
    assert result.returncode != 0
    assert "'shared: true' needs the server's CONDSTORE extension" in result.stderr, result.stderr
    assert not message_contents(client, "Archive")  # nothing acted on
    client.logout()


def test_shared_and_claim_timeout_are_account_keys(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\naccounts:\n  a:\n    host: imap.example.com\n    username: u\n"
                    "    password_env: X\n    shared: true\n    claim_timeout: 2m\nrules: []\n")
    account = load(path).accounts["a"]
    assert account.shared is True and account.claim_timeout == 120.0
    path.write_text(path.read_text().replace("    shared: true\n    claim_timeout: 2m\n", ""))
    account = load(path).accounts["a"]
    assert account.shared is False and account.claim_timeout == 600.0


def test_check_connect_reports_shared_without_condstore(dovecot_factory, tmp_path):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS NAMESPACE ESEARCH IDLE MOVE")
    user = server.add_user()
    daemon = DaemonHarness(server, user, tmp_path / "d", rules=RULES, shared="true")
    try:
        result = daemon.run("check", "--connect")
    finally:
        daemon.close()
    assert result.returncode != 0
    assert "'shared: true' needs CONDSTORE" in result.stdout, result.stdout
