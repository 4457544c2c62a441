"""Many accounts in one `mailrules run`: two connections per account, every message once, a kick survived.

The small-scale specification of `bench/many.py` (100 accounts x 10 mailboxes): one
process serves several accounts of one Dovecot, each watching several mailboxes; each
account holds exactly two connections (the worker's IDLE on home, one NOTIFY connection
for the rest), whatever the number of mailboxes; mail in every mailbox of every account
is acted on once (counted by content); and an account whose connections are dropped
(`doveadm kick`) gets its mail, including what came while it was reconnecting, once.
"""

from __future__ import annotations

import collections

from mailrules.testing.daemon import DaemonHarness, content_digest, message_contents, wait_until

RULES = """\
  - name: file
    match: {subject: many}
    actions:
      - move: Done
"""
FOLDERS = ["INBOX", "A", "B", "C"]
PASSWORD = "many-accounts-pw"


def _rules_file(dovecot, users) -> str:
    accounts = "".join(
        f"  {u.name}:\n    host: {dovecot.host}\n    port: {dovecot.port}\n    tls: none\n"
        f"    username: {u.name}\n    password_env: MAILRULES_TEST_PASSWORD\n    watch: [{', '.join(FOLDERS)}]\n"
        f"    timeout: 5\n    idle_interval: 30\n    poll_interval: 1\n    reconnect_max: 1\n"
        for u in users
    )
    return f"version: 1\naccounts:\n{accounts}rules:\n{RULES}"


def _connections(dovecot, names) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for line in dovecot.doveadm("who", "-1", check=False).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] in names and parts[1] == "imap":
            out[parts[0]] += 1
    return out


def _deliver(dovecot, user, make_message, tag: str) -> list[bytes]:
    raws = [make_message(subject=f"many {tag} {f}", body=f"{user.name} {tag} {f}") for f in FOLDERS]
    client = dovecot.client(user)
    for folder, raw in zip(FOLDERS, raws, strict=True):
        client.append(folder, raw)
    client.logout()
    return raws


def _done(dovecot, user) -> collections.Counter[str]:
    client = dovecot.client(user)
    try:
        return message_contents(client, "Done")
    finally:
        client.logout()


def test_one_process_serves_many_accounts_with_two_connections_each_and_acts_once(
        dovecot, tmp_path, make_message):
    users = [dovecot.add_user(password=PASSWORD) for _ in range(4)]
    names = {u.name for u in users}
    for u in users:
        client = dovecot.client(u)
        for folder in [*FOLDERS[1:], "Done"]:
            client.create_folder(folder)
        client.logout()
    daemon = DaemonHarness(dovecot, users[0], tmp_path, rules="")
    daemon.write_rules("", raw=_rules_file(dovecot, users))
    try:
        daemon.start()
        daemon.wait_for_log("watching with IDLE", count=len(users))
        daemon.wait_for_log("watching .* with NOTIFY", count=len(users))
        sent = {u.name: _deliver(dovecot, u, make_message, "first") for u in users}
        for u in users:
            wait_until(lambda u=u: sum(_done(dovecot, u).values()) >= len(FOLDERS), 30,
                       message=f"{u.name}'s mail filed")
        assert _connections(dovecot, names) == {name: 2 for name in names}

        kicked = users[1]
        dovecot.kick(kicked)
        sent[kicked.name] += _deliver(dovecot, kicked, make_message, "during the kick")
        daemon.wait_for_log(f"account {kicked.name}: reconnected; watching")
        for u in users:
            want = len(sent[u.name])
            wait_until(lambda u=u, want=want: sum(_done(dovecot, u).values()) >= want, 30,
                       message=f"{u.name}'s mail filed after the kick")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    for u in users:
        assert _done(dovecot, u) == collections.Counter(content_digest(r) for r in sent[u.name])
        client = dovecot.client(u)
        left = sum(sum(message_contents(client, f).values()) for f in FOLDERS)
        client.logout()
        assert left == 0
