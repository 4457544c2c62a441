"""Folder names written in the server's own form (`INBOX.Lists.dev` where the personal namespace
has prefix `INBOX.` and separator `.`, as on Cyrus with Debian's settings).

Rules write folders with '/' (`Lists/dev`); a name written as the server names it is not a
folder name of the rules file, so `check --connect` and the run say which form to write, and
`explain` (whose mailbox argument people copy from their mail program) understands it.
"""

from __future__ import annotations

import pytest
from helpers import Lab


@pytest.fixture
def cyrus_like(dovecot_factory, tmp_path, monkeypatch) -> Lab:
    server = dovecot_factory(separator=".", prefix="INBOX.")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    lab.deliver("hello dev", folder="INBOX.Lists.dev")
    return lab


def test_check_names_the_form_to_write_for_a_destination_in_the_servers_form(cyrus_like):
    cyrus_like.write("""
        - name: dev
          match: {subject: dev}
          actions: [{move: INBOX.Lists.dev}]
    """)
    result = cyrus_like.cli("check", "--connect")
    assert "Traceback" not in result.out + result.err and result.code != 0
    assert "rules write folders with '/': 'Lists/dev'" in result.out, result.out


def test_check_names_the_form_to_write_for_a_mailbox_in_the_servers_form(cyrus_like):
    cyrus_like.write("""
        - name: dev
          mailbox: INBOX.Lists.dev
          schedule: {every: 1h}
          actions: [{add_keyword: $Old}]
    """)
    result = cyrus_like.cli("check", "--connect")
    assert "Traceback" not in result.out + result.err and result.code != 0
    assert "mailbox INBOX.Lists.dev: error: folder 'INBOX.Lists.dev' is written as the server names it" in result.out
    assert "'Lists/dev'" in result.out


def test_the_rules_form_works_on_that_server(cyrus_like):
    cyrus_like.write("""
        - name: dev
          mailbox: Lists/dev
          schedule: {every: 1h}
          actions: [{add_keyword: $Old}]
    """)
    result = cyrus_like.cli("check", "--connect")
    assert result.code == 0, result.out + result.err
    assert "mailbox Lists/dev (INBOX.Lists.dev)" in result.out, result.out


def test_explain_understands_the_servers_form_of_a_mailbox(cyrus_like):
    cyrus_like.write("""
        - name: dev
          mailbox: Lists/dev
          match: {subject: dev}
          schedule: {every: 1h}
          actions: [{add_keyword: $Old}]
    """)
    result = cyrus_like.cli("explain", "me", "INBOX.Lists.dev", "1")
    assert result.code == 0, result.out + result.err
    assert "rule 'dev'" in result.out and "MATCHED, decided by subject: 'dev'" in result.out


def test_explain_of_a_name_no_folder_can_have_is_an_error_not_a_traceback(cyrus_like):
    cyrus_like.write("""
        - name: dev
          match: {subject: dev}
          actions: [flag]
    """)
    result = cyrus_like.cli("explain", "me", "Archive/v1.2", "1")
    assert result.code == 2, result.out + result.err
    assert "ValueError" not in result.err and "Traceback" not in result.err
    assert "separator '.'" in result.err


def test_a_run_names_the_form_to_write_and_keeps_the_message(cyrus_like):
    cyrus_like.deliver("dev news")
    cyrus_like.write("""
        - name: dev
          match: {subject: dev news}
          actions: [{move: INBOX.Lists.dev}]
    """)
    result = cyrus_like.run()
    assert "Traceback" not in result.out + result.err
    assert "rules write folders with '/': 'Lists/dev'" in result.err, result.err
    assert [m.subject for m in cyrus_like.messages()] == ["dev news"]
