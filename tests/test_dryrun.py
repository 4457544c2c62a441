"""`mailrules run --dry-run`: a readable table per account and mailbox, on a real Dovecot.

Every rule that applies to the mailbox is listed with its count (0 included) and its actions,
under a heading naming the account and the mailbox; each rule shows a few sample messages
(UID, From, Subject), never every message; after a real run the dry run says that the
messages already processed are not evaluated again; and nothing changes on the server.
"""

from __future__ import annotations

import re

from mailrules.dryrun import SAMPLES

EXIT_OK = 0


def rule_row(out: str, name: str) -> str:
    """The table row of rule `name` (its name, count and actions)."""
    rows = [line for line in out.splitlines() if re.match(rf"\s+{re.escape(name)}\s+\d+\s", line)]
    assert len(rows) == 1, out
    return rows[0]


def count_of(out: str, name: str) -> int:
    return int(rule_row(out, name).split()[len(name.split())])


def section(out: str, mailbox: str, kind: str = "") -> str:
    """The part of the output about `mailbox` (from its heading to the next heading); `kind`: a word
    of the heading ("sweep", "arrival")."""
    parts = re.split(r"(?m)^(?=dry run: )", out)
    found = [p for p in parts if p.startswith("dry run: ") and f"mailbox '{mailbox}'" in p.splitlines()[0]
             and kind in p.splitlines()[0]]
    assert len(found) == 1, out
    return found[0]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_rule_that_matches_nothing_is_listed_with_0(lab):
    lab.deliver("Build failed")
    lab.write("""
        - name: builds
          match: {subject: build}
          actions: [flag]
        - name: invoices
          match: {subject: invoice}
          actions: [{move: Invoices}]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    assert count_of(result.out, "builds") == 1
    assert count_of(result.out, "invoices") == 0
    assert "move Invoices" in rule_row(result.out, "invoices")


def test_the_rules_are_listed_with_0_when_no_mail_is_new(lab):
    lab.write("""
        - name: builds
          match: {subject: build}
          actions: [flag]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    assert count_of(result.out, "builds") == 0
    assert "account 'me', mailbox 'INBOX'" in result.out


def test_the_account_and_the_mailbox_are_named(lab):
    lab.deliver("hello")
    lab.deliver("from the list", folder="Lists/dev")
    lab.write("""
        - name: everything
          actions: [flag]
    """, watch=["INBOX", "Lists/dev"])
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    inbox, lists = section(result.out, "INBOX"), section(result.out, "Lists/dev")
    assert inbox.startswith("dry run: account 'me', mailbox 'INBOX'")
    assert "'hello'" in inbox and "'from the list'" not in inbox
    assert "'from the list'" in lists and "'hello'" not in lists


def test_a_sweep_of_another_mailbox_is_told_apart_from_the_inbox(lab):
    lab.deliver("inbox mail")
    (uid,) = lab.deliver("list mail", folder="Lists/dev")
    lab.write("""
        - name: tidy the list
          mailbox: Lists/dev
          schedule: {every: 1h}
          match: {subject: list}
          actions: [seen]
        - name: inbox rule
          actions: [flag]
    """)
    result = lab.run("--sweep", "--dry-run")
    assert result.code == EXIT_OK, result.err
    sweep = section(result.out, "Lists/dev")
    assert "sweep" in sweep.splitlines()[0] and "account 'me'" in sweep.splitlines()[0]
    assert count_of(sweep, "tidy the list") == 1
    assert re.search(rf"UID {uid} .*'list mail'", sweep)
    assert "inbox rule" not in sweep
    inbox = section(result.out, "INBOX")
    assert "tidy the list" not in inbox and count_of(inbox, "inbox rule") == 1


def test_samples_are_shown_and_bounded(lab):
    lab.deliver(*[{"subject": f"report {i}", "from_": "CI <ci@example.org>"} for i in range(500)])
    lab.write("""
        - name: reports
          match: {subject: report}
          actions: [{add_keyword: $CI}, {move: Reports}]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    row = rule_row(result.out, "reports")
    assert count_of(result.out, "reports") == 500
    assert "add_keyword $CI, move Reports" in row
    samples = [line for line in result.out.splitlines() if re.match(r"\s+UID \d+ ", line)]
    assert len(samples) == SAMPLES
    assert all("ci@example.org" in line and "'report " in line for line in samples)
    assert f"... and {500 - SAMPLES} more" in result.out
    assert len(result.out.splitlines()) < 20


def test_a_long_subject_is_shortened_to_one_line(lab):
    lab.deliver("x" * 300)
    lab.write("""
        - name: all
          actions: [flag]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    (sample,) = [line for line in result.out.splitlines() if re.match(r"\s+UID \d+ ", line)]
    assert "x" * 40 in sample and "x" * 100 not in sample and sample.rstrip().endswith("...'")


def test_after_a_real_run_the_dry_run_says_processed_mail_is_not_evaluated_again(lab):
    lab.deliver("first", "second")
    lab.write("""
        - name: flag
          match: {subject: first}
          actions: [flag]
    """)
    assert lab.run().code == EXIT_OK
    lab.write("""
        - name: flag
          match: {subject: first}
          actions: [flag]
        - name: new rule
          match: {subject: second}
          actions: [seen]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    assert count_of(result.out, "new rule") == 0
    text = flat(result.out)
    assert "2 messages already processed by an earlier run are not re-evaluated" in text
    assert "use `mailrules apply --dry-run`" in text


def test_a_dry_run_with_an_empty_state_previews_the_rules_on_every_message(lab):
    lab.deliver("first", "second")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run().code == EXIT_OK
    fresh = lab.tmp / "fresh-state"
    fresh.mkdir()
    result = lab.cli("run", "--dry-run", "--state", str(fresh))
    assert result.code == EXIT_OK, result.err
    assert count_of(result.out, "flag") == 2 and "already processed" not in result.out


def test_a_first_dry_run_does_not_mention_processed_mail(lab):
    lab.deliver("first")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    assert "already processed" not in result.out


def test_nothing_changes_on_the_server_in_any_dry_run(lab):
    lab.deliver("copy me", "move me", "delete me", "flag me")
    lab.deliver("list mail", folder="Lists/dev")
    rules = """
        - name: copy
          match: {subject: copy}
          actions: [{copy: New/Place}]
        - name: move
          match: {subject: move}
          actions: [{move: Another}]
        - name: delete
          match: {subject: delete}
          actions: [delete]
        - name: flags
          match: {subject: flag}
          actions: [flag, {add_keyword: $X}]
        - name: sweep
          mailbox: Lists/dev
          schedule: {every: 1h}
          actions: [trash]
    """
    lab.write(rules, watch=["INBOX", "Lists/dev"])
    before = lab.snapshot(uids=True)
    for extra in (("--dry-run",), ("--once", "--dry-run"), ("--sweep", "--dry-run")):
        result = lab.run(*extra)
        assert result.code == EXIT_OK, result.err
        assert lab.snapshot(uids=True) == before
    assert count_of(section(result.out, "Lists/dev", "sweep"), "sweep") == 1

