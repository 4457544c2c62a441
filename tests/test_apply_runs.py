"""One `mailrules apply` is one run, however many mailboxes and accounts it covers: one run id,
listed once by `history --runs`, reversed wholly by `undo --last`, and finished, not doubled,
when it is killed midway and run again. "Exactly as before" is counted by content over every
mailbox of both accounts: the multiset of (folder, SHA-256 of the whole message, flags and keywords).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess

import pytest
from helpers import Acct, Lab, account_contents, write_config
from test_apply import RULES  # lists: flag, $List, copies (also to other:Backup), move; notes
from test_undo_crash import contents

from mailrules.testing.daemon import DaemonHarness, wait_until
from mailrules.testing.proxy import TcpProxy


@pytest.fixture
def lab(dovecot, tmp_path, monkeypatch):
    """Account 'me' watching INBOX and Work, account 'other' watching INBOX, mail in all three."""
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    lab.other = dovecot.add_user()
    lab.config = write_config(tmp_path, monkeypatch, dovecot, lab.user, RULES, watch=("INBOX", "Work"),
                              others={"other": Acct(lab.other, dovecot.port)})
    lab.deliver("list a", "note a")
    lab.deliver("list flagged", flags=["\\Flagged", "$List"])
    lab.deliver("list w", "note w", "list w", folder="Work")
    lab.deliver("list o", "note o", user=lab.other)
    lab.deliver("note seen", flags=["\\Seen", "$Note"], user=lab.other)
    lab.deliver("old", folder="Backup", user=lab.other)
    return lab


def both(lab):
    return account_contents(lab), account_contents(lab, lab.other)


def runs(lab) -> list[tuple[int, str]]:
    return [(r["id"], r["kind"]) for r in json.loads(lab.cli("history", "--runs", "--format", "json").out)]


def test_an_apply_over_three_mailboxes_of_two_accounts_is_listed_as_one_run(lab):
    assert lab.cli("apply", "--yes").code == 0
    [(run_id, kind)] = runs(lab)
    assert kind == "apply"
    [row] = json.loads(lab.cli("history", "--runs", "--format", "json").out)
    assert row["messages"] == 5 * 5 + 4 * 2  # lists: 5 messages, 5 actions; notes: 4 messages, 2 actions
    rows = json.loads(lab.cli("history", "--run", str(run_id), "--format", "json").out)
    assert {(r["account"], r["mailbox"]) for r in rows} == {("me", "INBOX"), ("me", "Work"), ("other", "INBOX")}
    assert {r["run"] for r in rows} == {run_id}


def test_an_apply_over_several_mailboxes_prints_one_run_id(lab):
    result = lab.cli("apply", "--yes")
    assert result.code == 0, result.err
    assert set(re.findall(r"^applied to account \S+ mailbox \S+: .*: run (\d+)$", result.out, re.M)) == {"1"}
    assert "applied to 3 mailboxes as run 1" in result.out


def test_undo_last_restores_every_mailbox_of_every_account_the_apply_touched(lab):
    before = both(lab)
    assert lab.cli("apply", "--yes").code == 0
    assert both(lab) != before
    undone = lab.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    assert "left alone" not in undone.out
    assert both(lab) == before


def test_the_undo_of_an_apply_over_several_mailboxes_is_one_run(lab):
    assert lab.cli("apply", "--yes").code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert runs(lab) == [(1, "apply"), (5, "undo:1")]  # 2 to 4: the apply's passes, one per mailbox


def test_undoing_that_undo_redoes_the_apply_in_every_mailbox_but_copies_to_another_account(lab):
    assert lab.cli("apply", "--yes").code == 0
    applied = both(lab)
    assert lab.cli("undo", "--last", "--yes").code == 0
    redone = lab.cli("undo", "--last", "--yes")
    assert redone.code == 0, redone.err
    assert account_contents(lab) == applied[0]
    now = account_contents(lab, lab.other)
    missing = applied[1] - now
    assert not now - applied[1]
    assert {key[0] for key in missing} == {"Backup"} and sum(missing.values()) == 4  # me's copies to other:Backup
    assert redone.out.count("not undoable: rule 'lists' delete copies in Backup (2 messages)") == 2


def test_apply_over_one_mailbox_is_undone_by_its_run_id(lab):
    before = both(lab)
    assert lab.cli("apply", "--account", "me", "--mailbox", "Work", "--yes").code == 0
    assert lab.cli("undo", "1", "--yes").code == 0
    assert both(lab) == before


# ------------------------------------------------------------------ killed midway


def journal(state) -> tuple[int, int, bool]:
    """(step rows of the apply's pass in progress, passes finished, the apply finished)."""
    try:
        db = sqlite3.connect(f"file:{state / 'state.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            steps = db.execute("SELECT count(*) FROM step s JOIN run r ON r.id=s.run_id "
                               "WHERE r.kind LIKE 'apply:%' AND r.finished IS NULL").fetchone()[0]
            parts = db.execute("SELECT count(*) FROM run WHERE kind LIKE 'apply:%' AND finished IS NOT NULL"
                               ).fetchone()[0]
            head = db.execute("SELECT count(*) FROM run WHERE kind='apply' AND finished IS NOT NULL").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0, 0, False
    return int(steps), int(parts), bool(head)


def two_accounts(dovecot, tmp_path, raws: dict[str, list[bytes]], port: int) -> tuple[DaemonHarness, list]:
    """Two accounts with the same mail (INBOX and Work; a third already flagged), one rules file."""
    me, other = dovecot.add_user(), dovecot.add_user()
    clients = []
    for user in (me, other):
        for folder in ("INBOX", "Work"):
            dovecot.deliver_files(user, folder, raws[folder])
        client = dovecot.client(user)
        client.select_folder("INBOX")
        client.add_flags(client.search(["ALL"])[::3], ["\\Flagged"])
        client.create_folder("Backup")
        clients.append(client)
    harness = DaemonHarness(dovecot, me, tmp_path, rules="")
    harness.write_rules("", raw=(
        "version: 1\naccounts:\n"
        f"  me: {{host: 127.0.0.1, port: {port}, tls: none, username: {me.name}, "
        "password_env: MAILRULES_TEST_PASSWORD, watch: [INBOX, Work]}\n"
        f"  other: {{host: 127.0.0.1, port: {port}, tls: none, username: {other.name}, "
        "password_env: OTHER_PW, watch: [INBOX, Work]}\nrules:" + RULES))
    env = harness.env()
    env["OTHER_PW"] = other.password
    harness.env = lambda: env  # type: ignore[method-assign]
    return harness, clients


KILL_POINTS = {
    "in the first mailbox": lambda steps, parts: steps >= 4,
    "between two mailboxes": lambda steps, parts: parts >= 1,
    "in the third mailbox": lambda steps, parts: parts >= 2 and steps >= 3,
}


@pytest.mark.parametrize("where", KILL_POINTS)
def test_an_apply_over_several_mailboxes_killed_midway_and_run_again_finishes_as_one_run(
        where, dovecot, tmp_path, make_message):
    raws = {folder: [make_message(subject=f"list {folder} {i}", body=f"{i}\n") for i in range(15)]
            for folder in ("INBOX", "Work")}
    reference, reference_clients = two_accounts(dovecot, tmp_path / "ref", raws, dovecot.port)
    assert reference.run("apply", "--yes").returncode == 0
    with TcpProxy(dovecot.host, dovecot.port, delay=0.02) as proxy:
        harness, clients = two_accounts(dovecot, tmp_path / "d", raws, proxy.port)
        before = [contents(c) for c in clients]
        proc = subprocess.Popen(harness.command("apply", "--yes"), env=harness.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: KILL_POINTS[where](*journal(harness.state)[:2]) or proc.poll() is not None, timeout=60,
                   interval=0.01)
        proc.kill()
        proc.wait()
        assert not journal(harness.state)[2], "the apply ended before the kill: nothing was tested"
        again = harness.run("apply", "--yes")
        assert again.returncode == 0, again.stderr
        assert "finishing the interrupted apply run 1" in again.stdout
        assert [contents(c) for c in clients] == [contents(c) for c in reference_clients]  # nothing doubled
        listed = json.loads(harness.run("history", "--runs", "--format", "json").stdout)
        assert [r["kind"] for r in listed] == ["apply"]
        undone = harness.run("undo", "--last", "--yes")
        assert undone.returncode == 0, undone.stderr
    assert [contents(c) for c in clients] == before


def test_an_interrupted_apply_whose_mailbox_is_gone_finishes_the_others_and_says_so(lab):
    from mailrules.journal import Journal
    from mailrules.state import StateStore

    before = both(lab)
    store = StateStore(lab.state)
    try:  # what an apply killed before its first pass left: its head, the mailboxes it recorded
        head = Journal(store).begin_apply([("me", "INBOX", ["lists", "notes"]), ("me", "Gone", ["lists"])])
    finally:
        store.close()
    result = lab.cli("apply", "--yes")
    assert result.code == 1
    assert f"finishing the interrupted apply run {head.id}" in result.out
    assert "account me mailbox Gone: skipped:" in result.out
    assert runs(lab) == [(head.id, "apply")]
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert both(lab) == before
