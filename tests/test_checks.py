"""`mailrules check --connect` against a real Dovecot: what it reports must be true.

Keywords are judged as the real run sees them (after SELECT), every folder that any rule
names is checked (arrival and scheduled `mailbox:`, watched, move/copy destinations, also
across accounts), and no folder name makes it crash, whatever the server's separator.
"""

from __future__ import annotations

from helpers import Acct, Lab

EXIT_OK, EXIT_FAILURE = 0, 1


def _line_of(path, text: str) -> int:
    """1-based line of the first line of the file containing `text`."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def test_check_connect_accepts_a_keyword_rule_on_a_mailbox_that_stores_keywords(lab):
    lab.write("""
        - name: tag
          actions: [{add_keyword: $Dev}]
    """)
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_OK, result.out + result.err
    assert "keywords: yes" in result.out
    assert "cannot store" not in result.out


def test_check_connect_changes_no_message_and_no_flag(lab):
    lab.deliver("unseen")
    lab.deliver("seen", flags=["\\Seen"])
    lab.deliver("deleted", flags=["\\Deleted"])
    lab.write("""
        - name: tag
          actions: [{add_keyword: $Dev}, {move: Lists/dev}]
    """)
    before = lab.snapshot(uids=True)
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_OK, result.out + result.err
    assert lab.snapshot(uids=True) == before
    assert "Lists/dev" not in lab.folders()


def test_check_connect_reports_a_scheduled_rules_missing_mailbox_with_rule_name_and_line(lab):
    path = lab.write("""
        - name: old mail
          mailbox: Inbx
          schedule: {every: 1h}
          match: {older_than: 30d}
          actions: [flag]
    """)
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_FAILURE, result.out + result.err
    line = _line_of(path, "name: old mail")
    assert f"rule 'old mail' ({path}:{line}" in result.out, result.out
    assert "Inbx" in result.out and "MISSING" in result.out


def test_check_connect_reports_an_arrival_rules_missing_mailbox(lab):
    lab.write("""
        - name: lists
          mailbox: [INBOX, Lists/none]
          actions: [flag]
    """, watch=["INBOX", "Lists/none"])
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_FAILURE, result.out + result.err
    assert "Lists/none: MISSING" in result.out
    assert "rule 'lists'" in result.out


def test_check_connect_checks_a_cross_account_destination_on_that_account(lab, dovecot):
    other = dovecot.add_user()
    lab.write("""
        - name: to other
          account: me
          actions: [{copy: "other:Archive/2024"}]
    """, others={"other": Acct(other, dovecot.port)})
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_OK, result.out + result.err
    other_part = result.out.split("account other:")[1]
    assert "rule 'to other'" in other_part and "Archive/2024 does not exist yet" in other_part, result.out


def test_check_connect_names_the_rule_of_a_folder_that_contains_the_servers_separator(
        dovecot_factory, tmp_path, monkeypatch):
    server = dovecot_factory(separator=".")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    path = lab.write("""
        - name: releases
          actions: [{move: Archive/v1.2}]
    """)
    result = lab.cli("check", "--connect")
    assert "Traceback" not in result.out + result.err
    assert result.code == EXIT_FAILURE, result.out + result.err
    line = _line_of(path, "move: Archive/v1.2")
    assert f"rule 'releases' ({path}:{line}" in result.out, result.out
    assert "Archive/v1.2" in result.out and "separator '.'" in result.out


def test_check_connect_translates_folder_names_to_a_dot_separator(dovecot_factory, tmp_path, monkeypatch):
    server = dovecot_factory(separator=".")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    lab.deliver("x", folder="Lists.dev")
    lab.write("""
        - name: dev
          mailbox: Lists/dev
          schedule: {every: 1h}
          actions: [{add_keyword: $Old}, {move: Lists/dev/old}]
    """)
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_OK, result.out + result.err
    assert "mailbox Lists/dev (Lists.dev)" in result.out, result.out
    assert "Lists/dev/old does not exist yet" in result.out
