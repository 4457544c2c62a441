"""`mailrules apply`: the chosen rules over the mail already there, with a plan, on Dovecot.

"Exactly as before" is counted by content over every mailbox of both accounts: the multiset
of (folder, SHA-256 of the whole message, flags and keywords).
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import Acct, Lab, account_contents, write_config

from mailrules import Action, hookimpl

RULES = """
    - name: lists
      match: {subject: list}
      actions:
        - flag
        - add_keyword: $List
        - copy: Archive
        - copy: other:Backup
        - move: Lists
    - name: notes
      match: {subject: note}
      actions: [seen, {add_keyword: $Note}]
"""


@pytest.fixture
def lab(dovecot, tmp_path, monkeypatch):
    """A user whose rules file also has account 'other' (another user on the same server)."""
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    lab.other = dovecot.add_user()
    lab.config = write_config(tmp_path, monkeypatch, dovecot, lab.user, RULES,
                              others={"other": Acct(lab.other, dovecot.port)})
    return lab


def existing_mail(lab) -> None:
    """Mail already there, some of it already carrying the flags and keywords the rules set."""
    lab.deliver("list a", "list b", "note a", "other a")
    lab.deliver("list flagged", flags=["\\Flagged", "$List"])
    lab.deliver("note seen", flags=["\\Seen", "$Note"])
    lab.deliver("old", folder="Lists")
    lab.deliver("old", folder="Archive")
    lab.deliver("old", folder="Backup", user=lab.other)


def both(lab):
    return account_contents(lab), account_contents(lab, lab.other)


def test_apply_then_undo_last_leaves_every_mailbox_exactly_as_before(lab):
    existing_mail(lab)
    before = both(lab)
    applied = lab.cli("apply", "--yes")
    assert applied.code == 0, applied.err
    assert sorted(lab.subjects("Lists")) == ["list a", "list b", "list flagged", "old"]
    undone = lab.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    assert both(lab) == before


def test_apply_prints_the_plan_then_the_runs_id(lab):
    existing_mail(lab)
    result = lab.cli("apply", "--yes")
    assert "dry run: account 'me', mailbox 'INBOX': apply: the chosen rules over every message" in result.out
    assert re.search(r"lists\s+3\s+flag, add_keyword \$List, copy Archive, copy other:Backup, move Lists",
                     result.out)
    assert re.search(r"applied to account me mailbox INBOX: 19 message-actions, 0 failed: run 1$", result.out, re.M)
    assert "note: account me mailbox INBOX: no `mailrules run` has processed it yet" in result.out


def test_apply_dry_run_changes_nothing(lab):
    existing_mail(lab)
    before = both(lab)
    result = lab.cli("apply", "--dry-run")
    assert result.code == 0
    assert "lists" in result.out and "applied" not in result.out
    assert both(lab) == before


def test_apply_dry_run_plans_exactly_what_apply_then_does(lab):
    existing_mail(lab)
    plan = lab.cli("apply", "--account", "me", "--dry-run").out
    planned = {name: int(n) for name, n in re.findall(r"^  (lists|notes)\s+(\d+)", plan, re.M)}
    samples = {int(u) for u in re.findall(r"UID (\d+)", plan)}
    assert lab.cli("apply", "--account", "me", "--yes").code == 0
    rows = json.loads(lab.cli("history", "--run", "1", "--format", "json").out)
    done: dict[str, set[int]] = {}
    for row in rows:
        done.setdefault(row["rule"], set()).add(row["uid"])
    assert {rule: len(uids) for rule, uids in done.items()} == planned
    assert samples <= set().union(*done.values())


def test_apply_leaves_what_the_daemon_has_not_seen_to_the_daemon(lab):
    lab.deliver("note old")
    lab.write("""
        - name: notes
          match: {subject: note}
          actions: [seen]
    """)
    assert lab.run().code == 0  # the daemon's pass: "note old" processed, the checkpoint after it
    with lab.client() as client:
        client.select_folder("INBOX")
        client.remove_flags(client.search(["ALL"]), ["\\Seen"])  # read state reset by hand
    lab.deliver("note new")  # not seen by the daemon yet
    assert lab.cli("apply", "--yes").code == 0
    assert lab.flags() == {"note old": {"\\Seen"}, "note new": set()}  # the new one is the daemon's
    assert lab.run().code == 0  # and the daemon takes it as an arrival, once
    assert lab.flags() == {"note old": {"\\Seen"}, "note new": {"\\Seen"}}


def test_apply_is_refused_while_a_daemon_holds_the_state(lab):
    from mailrules.lock import StateLock

    existing_mail(lab)
    before = both(lab)
    with StateLock(lab.state):
        result = lab.cli("apply", "--yes")
    assert result.code == 1
    assert "another mailrules" in result.err
    assert both(lab) == before


def test_apply_without_a_terminal_needs_yes(lab):
    existing_mail(lab)
    before = both(lab)
    result = lab.cli("apply")
    assert result.code == 2
    assert "pass --yes" in result.err
    assert both(lab) == before


def test_apply_of_an_unknown_rule_is_a_usage_error(lab):
    result = lab.cli("apply", "--rule", "nope", "--yes")
    assert result.code == 2
    assert "no rule named 'nope'" in result.err


class PingPlugin:
    """A plugin action with effects outside the mailbox (the default)."""

    mailrules_plugin_name = "ping"
    calls: list = []

    @staticmethod
    def ping(context, uids, arg) -> None:
        PingPlugin.calls.extend(uids)

    @hookimpl
    def mailrules_actions(self):
        return [Action("ping", "tell another system", run=PingPlugin.ping)]


def test_apply_dry_run_says_which_outside_actions_would_run_and_runs_none(dovecot, tmp_path, monkeypatch):
    import argparse
    import io

    from mailrules.apply import apply_command
    from mailrules.config import load
    from mailrules.plugins import Registry

    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    lab.write("""
        - name: tell
          match: {subject: a}
          actions: [ping, flag]
    """)
    lab.deliver("a")
    registry = Registry.load(extra=[PingPlugin()])
    config = load(lab.config, registry=registry)
    args = argparse.Namespace(rule=None, account=None, mailbox=None, dry_run=True, yes=False)
    out = io.StringIO()
    assert apply_command(config, registry, lab.state, args, out) == 0
    assert "would run: rule 'tell': ping (effects outside the mailbox: not undoable)" in out.getvalue()
    assert PingPlugin.calls == []
    assert lab.flags() == {"a": set()}


def test_apply_to_a_large_mailbox_logs_its_progress_in_rule_steps(lab, monkeypatch):
    import mailrules.apply

    monkeypatch.setattr(mailrules.apply, "PROGRESS_FROM", 5)  # 8 messages in INBOX: "large" here
    existing_mail(lab)
    result = lab.cli("apply", "--yes")
    assert result.code == 0, result.err
    # lists: its search and 5 actions; notes: its search and 2 actions
    assert "account me mailbox INBOX: applying rules on 9 rule steps" in result.err
    assert re.search(r"account me mailbox INBOX: applied rules on 9 rule steps in [\d.]+s", result.err)


def test_apply_to_a_small_mailbox_shows_no_progress(lab):
    existing_mail(lab)
    result = lab.cli("apply", "--yes")
    assert result.code == 0, result.err
    assert "applying rules" not in result.err
