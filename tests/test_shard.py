"""`mailrules run --shard I/N`: N processes share a rules file, each serving a stable part of the accounts.

Unit tests for the partition and its option; then three daemons against one Dovecot, one of
them SIGKILLed mid-burst and restarted: each account served by exactly one process, every
message acted on once, counted by content.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time

import pytest

from mailrules.daemon.shard import Shard, ShardError, parse_shard, shard_of, shard_option
from mailrules.testing.daemon import DaemonHarness, content_digest, message_contents, wait_until

# ---------------------------------------------------------------------- the partition


def test_an_accounts_shard_is_the_same_in_every_process():
    """sha256 of the name, not Python's salted hash(): another interpreter computes the same shards."""
    names = [f"account{i}" for i in range(40)]
    here = [shard_of(n, 7) for n in names]
    code = ("from mailrules.daemon.shard import shard_of; "
            f"print([shard_of(n, 7) for n in {names!r}])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin",
                                "PYTHONPATH": ":".join(sys.path)})
    assert other.stdout.strip() == str(here)


def test_every_account_belongs_to_exactly_one_shard():
    names = [f"user-{i}@example.org" for i in range(200)]
    shards = [Shard(i, 3) for i in range(3)]
    for name in names:
        assert sum(s.owns(name) for s in shards) == 1
    sizes = collections.Counter(shard_of(n, 3) for n in names)
    assert set(sizes) == {0, 1, 2} and min(sizes.values()) > 40  # spread, not all in one


def test_one_shard_of_one_serves_every_account():
    assert all(Shard(0, 1).owns(f"a{i}") for i in range(20))


def test_shard_text_is_index_slash_count():
    assert parse_shard("2/3") == Shard(2, 3)
    assert parse_shard(" 0/1 ") == Shard(0, 1)


def test_a_statefulset_pod_name_gives_the_index():
    assert parse_shard("mailrules-2/3") == Shard(2, 3)
    assert parse_shard("mail-rules-prod-10/12") == Shard(10, 12)


@pytest.mark.parametrize("text, says", [
    ("3/3", "between 0 and 2"),
    ("1/0", "at least 1"),
    ("-1/3", "expected I/N"),
    ("1", "expected I/N"),
    ("a/b", "expected I/N"),
    ("", "expected I/N"),
])
def test_a_bad_shard_is_refused_with_a_reason(text, says):
    with pytest.raises(ShardError, match=re.escape(says)):
        parse_shard(text)


def test_the_option_wins_over_the_environment():
    assert shard_option("1/2", {"MAILRULES_SHARD": "0/5"}) == Shard(1, 2)
    assert shard_option(None, {"MAILRULES_SHARD": "mailrules-4/5"}) == Shard(4, 5)
    assert shard_option(None, {"MAILRULES_SHARD": ""}) is None
    assert shard_option(None, {}) is None


def test_a_bad_environment_value_is_named_in_the_error():
    with pytest.raises(ShardError, match="MAILRULES_SHARD 'x/3'"):
        shard_option(None, {"MAILRULES_SHARD": "x/3"})


# ---------------------------------------------------------------------- the command line

MINIMAL = """\
version: 1
accounts:
{accounts}
rules:
  - name: file
    match: {{subject: msg}}
    actions:
      - move: Done
"""


def _account_yaml(name: str, host: str, port: int, user: str) -> str:
    return (f"  {name}:\n    host: {host}\n    port: {port}\n    tls: none\n    username: {user}\n"
            "    password_env: MAILRULES_TEST_PASSWORD\n    watch: [INBOX]\n"
            "    timeout: 5\n    idle_interval: 2\n    poll_interval: 0.5\n    reconnect_max: 1\n")


@pytest.mark.parametrize("args, env, says", [
    (["--shard", "3/3"], {}, "--shard '3/3': shard I must be between 0 and 2"),
    (["--shard", "x"], {}, "--shard 'x': expected I/N"),
    ([], {"MAILRULES_SHARD": "1/0"}, "MAILRULES_SHARD '1/0': the number of shards N must be at least 1"),
])
def test_run_with_a_bad_shard_exits_2_with_a_clear_message(tmp_path, args, env, says):
    rules = tmp_path / "rules.yaml"
    rules.write_text(MINIMAL.format(accounts=_account_yaml("a", "127.0.0.1", 1, "u")))
    done = subprocess.run([sys.executable, "-m", "mailrules.cli", "-c", str(rules), "--state", str(tmp_path / "s"),
                           "run", "--once", *args], capture_output=True, text=True, timeout=60,
                          env={**_env(), **env})
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()  # refused before anything was touched


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("MAILRULES_SHARD", None)
    env.pop("NOTIFY_SOCKET", None)
    return env


# ---------------------------------------------------------------------- three processes on one server

PASSWORD = "shard-test-secret"


def _names(per_shard: int, count: int) -> list[str]:
    """Account names giving each of `count` shards `per_shard` accounts."""
    chosen: dict[int, list[str]] = {i: [] for i in range(count)}
    i = 0
    while any(len(v) < per_shard for v in chosen.values()):
        name = f"acct{i}"
        shard = shard_of(name, count)
        if len(chosen[shard]) < per_shard:
            chosen[shard].append(name)
        i += 1
    return [n for i in range(count) for n in chosen[i]]


def _deliver(dovecot, users, make_message, tag: str, per_account: int) -> dict[str, collections.Counter]:
    """APPEND `per_account` messages to each account's INBOX; the contents expected in its Done."""
    expected: dict[str, collections.Counter] = {}
    for name, user in users.items():
        client = dovecot.client(user)
        try:
            raws = [make_message(subject=f"msg {tag} {name} {k}", body=f"{tag}/{name}/{k}") for k in range(per_account)]
            raws.append(raws[0])  # the same message twice: both copies must arrive, by content
            for raw in raws:
                client.append("INBOX", raw)
        finally:
            client.logout()
        expected[name] = collections.Counter(content_digest(r) for r in raws)
    return expected


def _folder(dovecot, user, folder: str) -> collections.Counter:
    client = dovecot.client(user)
    try:
        return message_contents(client, folder)
    finally:
        client.logout()


def _served_in_log(log: str) -> set[str]:
    return set(re.findall(r"account (acct\d+)", log))


def test_three_shards_serve_each_account_once_through_a_sigkill_and_restart(dovecot, tmp_path, make_message):
    names = _names(2, 3)
    owner = {n: shard_of(n, 3) for n in names}
    users = {n: dovecot.add_user(password=PASSWORD) for n in names}
    text = MINIMAL.format(accounts="".join(_account_yaml(n, dovecot.host, dovecot.port, users[n].name)
                                           for n in names))
    daemons = []
    for i in range(3):
        h = DaemonHarness(dovecot, next(iter(users.values())), tmp_path / f"shard{i}", rules="")
        h.write_rules("", raw=text)
        daemons.append(h)
    try:
        for i, h in enumerate(daemons):
            h.start("--shard", f"{i}/3")
        for h in daemons:
            h.wait_for_log("mailrules daemon started")
        expected = _deliver(dovecot, users, make_message, "first", 5)
        for n in names:
            wait_until(lambda n=n: _folder(dovecot, users[n], "Done") == expected[n], 60, message=f"{n} filed")

        # shard 1 dies in the middle of a burst; its accounts wait for it, nobody else takes them
        burst = _deliver(dovecot, users, make_message, "burst", 30)
        time.sleep(0.3)
        daemons[1].kill()
        first_log = daemons[1].log()
        down = _deliver(dovecot, users, make_message, "down", 3)
        for n in names:
            if owner[n] != 1:
                wait_until(lambda n=n: _folder(dovecot, users[n], "Done") == expected[n] + burst[n] + down[n], 60,
                           message=f"{n} filed by its shard")
        time.sleep(2.0)  # ample time for anyone else to (wrongly) take shard 1's mail
        for n in names:
            if owner[n] == 1:
                inbox = _folder(dovecot, users[n], "INBOX")
                assert inbox + _folder(dovecot, users[n], "Done") == expected[n] + burst[n] + down[n]
                assert not down[n] - inbox, f"{n} was served by another shard while its own was down"

        # restarted, from the environment as a StatefulSet pod would be
        daemons[1].start(env={"MAILRULES_SHARD": "mailrules-1/3"})
        for n in names:
            wait_until(lambda n=n: _folder(dovecot, users[n], "Done") == expected[n] + burst[n] + down[n], 60,
                       message=f"{n} filed after the restart")
            assert not _folder(dovecot, users[n], "INBOX")
        for h in daemons:
            assert h.stop() == 0
        for i, h in enumerate(daemons):
            served = _served_in_log(h.log() + (first_log if i == 1 else ""))
            assert served == {n for n in names if owner[n] == i}
            assert f"shard {i}/3: accounts " in h.log()
        status = daemons[1].run("status")
        assert status.returncode == 0
        mine = ", ".join(n for n in names if owner[n] == 1)
        assert f"shard 1/3: accounts {mine} (2 of 6) (as the daemon last started)" in status.stdout
    finally:
        for h in daemons:
            h.close()


def test_a_changed_shard_warns_of_the_accounts_new_to_the_state(dovecot, imap_user, tmp_path):
    h = DaemonHarness(dovecot, imap_user, tmp_path / "d", rules="  - name: none\n    match: {subject: nothing}\n"
                      "    actions: [{add_keyword: $X}]\n")
    try:
        other = 1 - shard_of("t", 2)  # the shard of 2 that does not hold the harness's account 't'
        h.start("--shard", f"{other}/2")
        h.wait_for_log("mailrules daemon started")
        assert f"shard {other}/2 serves none of the 1 account(s)" in h.log()
        assert h.stop() == 0
        h.start("--shard", "0/1")
        h.wait_for_log("mailrules daemon started")
        assert h.stop() == 0
        assert f"the shard changed since the last start (was shard {other}/2): account(s) t are new" in h.log()
    finally:
        h.close()
