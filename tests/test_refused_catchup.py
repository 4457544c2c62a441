"""A rule the server refused gets, once it works, the messages that arrived while it was refused.

Against the real Dovecot, counted by content: each message reaches the rule's folder once.
"""

from __future__ import annotations

import collections
import hashlib
import signal

from mailrules.testing.daemon import DaemonHarness, message_contents, wait_until

RULES = """\
  - name: bad raw
    match: {raw: "XBADKEY hello"}
    actions:
      - copy: Never
  - name: good
    match: {subject: m}
    actions:
      - add_keyword: $Good
"""
FIXED = RULES.replace('{raw: "XBADKEY hello"}', "{subject: m}")


def _digests(raws) -> collections.Counter[str]:
    return collections.Counter(hashlib.sha256(r).hexdigest() for r in raws)


def test_a_refused_rule_catches_up_once_on_the_next_run_once_and_status_counts_what_waits(dovecot, tmp_path,
                                                                                       make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Never")
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES)
    raws = [make_message(subject=f"m{i}") for i in range(5)]
    try:
        for raw in raws[:3]:
            client.append("INBOX", raw)
        refused = daemon.run("run", "--once")
        assert refused.returncode != 0
        assert "the server the server" not in refused.stderr and "the server refused its search" in refused.stderr
        status = daemon.run("status").stdout
        assert "rule 'bad raw': refused by the server" in status and "3 messages wait for it" in status, status
        daemon.write_rules(FIXED)
        for raw in raws[3:]:
            client.append("INBOX", raw)
        for _ in range(2):  # the second run has nothing left to catch up
            result = daemon.run("run", "--once")
            assert result.returncode == 0, result.stderr
        status = daemon.run("status").stdout
    finally:
        daemon.close()
    assert message_contents(client, "Never") == _digests(raws)
    assert "refused" not in status and "wait for it" not in status, status
    client.logout()


def test_a_refused_rule_catches_up_after_a_reload_of_the_daemon(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Never")
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES)
    raws = [make_message(subject=f"m{i}") for i in range(10)]
    try:
        daemon.start()
        daemon.wait_for_log("mailrules daemon started")
        for raw in raws[:5]:
            client.append("INBOX", raw)
        wait_until(lambda: daemon.count("refused its search") >= 1 and "Never" in str(client.list_folders()), 30,
                   message="the refusal")
        wait_until(lambda: len(client.search(["KEYWORD", "$Good"])) == 5 if client.select_folder("INBOX") else 0,
                   30, message="the good rule on the first five")
        daemon.write_rules(FIXED)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload", timeout=30)
        for raw in raws[5:]:
            client.append("INBOX", raw)
        wait_until(lambda: sum(message_contents(client, "Never").values()) >= 10, 30, message="ten in Never")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert message_contents(client, "Never") == _digests(raws)
    client.logout()
