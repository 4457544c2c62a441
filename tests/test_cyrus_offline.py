"""Issue 17, points 13 and 14 on Cyrus itself (the private instance of mailrules.testing.cyrus,
Debian's namespace: prefix ``INBOX.``, separator ``.``).

13: `mailrules test --against` reports a message Cyrus refuses (a NUL byte: "Message contains
NUL characters") and checks the others; inline `tests:` messages with non-ASCII header values
are written as encoded words, so Cyrus (which stores raw 8-bit header bytes as ``X``) agrees.
14: a folder written as Cyrus names it (``INBOX.Lists.dev``) gets an error naming the rules'
form (``Lists/dev``) in `check --connect` and in a run, losing no mail; `explain` takes it.
Skipped without Cyrus, unless MAILRULES_REQUIRE_CYRUS=1 (CI).
"""

from __future__ import annotations

from mailrules.testing.messages import make_message
from tests.helpers import messages, run_cli, run_once, write_config

DEV = """
- name: dev
  match: {subject: dev}
  actions: [flag]
"""


def _eml(tmp_path, name: str, raw: bytes):
    path = tmp_path / f"{name}.eml"
    path.write_bytes(raw)
    return path


# ---------------------------------------------------------------------------- 13: test --against


def test_against_cyrus_reports_a_message_with_a_nul_byte_as_refused_and_checks_the_others(
    cyrus, cyrus_user, tmp_path, monkeypatch
):
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, DEV)
    emls = [
        _eml(tmp_path, "a", make_message(subject="dev news")),
        _eml(tmp_path, "nul", b"From: x@example.org\r\nSubject: dev nul\r\n\r\nzero \x00 byte\r\n"),
        _eml(tmp_path, "c", make_message(subject="hello")),
    ]
    result = run_cli("-c", config, "test", "--against", "me", *emls)
    assert "Traceback" not in result.out + result.err
    assert "REFUSED" in result.out and "nul.eml" in result.out and "NUL characters" in result.out
    assert "on 2 message(s): 0 disagreement(s); 1 message(s) refused by the server, not checked" in result.out
    assert result.code == 0, result.out + result.err  # exit 1 is for a disagreement only


def test_inline_tests_with_non_ascii_headers_agree_with_cyrus(cyrus, cyrus_user, tmp_path, monkeypatch):
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: sizes
          match: {subject: Größe}
          actions: [flag]
        - name: from jürgen
          match: {from: Jürgen}
          actions: [{add_keyword: $J}]
    """, top="""
        tests:
          - name: a subject with an umlaut
            message:
              headers: {From: Jürgen Größe <j@example.org>, Subject: Größe der Dateien}
              body: "hallo\\n"
            expect: {rules: [sizes, from jürgen]}
          - name: plain
            message:
              headers: {From: a@example.org, Subject: sizes}
            expect: {rules: []}
    """)
    result = run_cli("-c", config, "test", "--against", "me")
    assert "Traceback" not in result.out + result.err
    assert "0 disagreement(s)" in result.out, result.out + result.err
    assert result.code == 0, result.out + result.err


# ---------------------------------------------------------------------------- 14: the server's own form


MOVE_SERVER_FORM = """
- name: dev
  match: {subject: dev news}
  actions: [{move: INBOX.Lists.dev}]
"""


def _with_dev_folder(cyrus, user) -> None:
    client = cyrus.client(user)
    try:
        client.create_folder("INBOX.Lists")
        client.create_folder("INBOX.Lists.dev")
    finally:
        client.logout()


def test_check_connect_on_cyrus_names_the_rules_form_of_a_folder_in_cyrus_form(cyrus, cyrus_user, tmp_path,
                                                                               monkeypatch):
    _with_dev_folder(cyrus, cyrus_user)
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, MOVE_SERVER_FORM)
    result = run_cli("-c", config, "check", "--connect")
    assert "Traceback" not in result.out + result.err and result.code != 0
    assert "rules write folders with '/': 'Lists/dev'" in result.out, result.out


def test_a_run_on_cyrus_names_the_rules_form_and_loses_no_mail(cyrus, cyrus_user, tmp_path, monkeypatch):
    _with_dev_folder(cyrus, cyrus_user)
    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject="dev news", body="keep me\n")])
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, MOVE_SERVER_FORM)
    result = run_once(config, tmp_path / "state")
    assert "Traceback" not in result.out + result.err
    assert "rules write folders with '/': 'Lists/dev'" in result.err, result.err
    assert [m.subject for m in messages(cyrus, cyrus_user, "INBOX")] == ["dev news"]
    assert messages(cyrus, cyrus_user, "INBOX.Lists.dev") == []


def test_explain_on_cyrus_takes_the_servers_form_of_a_mailbox(cyrus, cyrus_user, tmp_path, monkeypatch):
    _with_dev_folder(cyrus, cyrus_user)
    cyrus.deliver_files(cyrus_user, "INBOX.Lists.dev", [make_message(subject="dev weekly")])
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: dev
          mailbox: Lists/dev
          match: {subject: dev}
          schedule: {every: 1h}
          actions: [{add_keyword: $Old}]
    """)
    result = run_cli("-c", config, "explain", "me", "INBOX.Lists.dev", "1")
    assert "Traceback" not in result.out + result.err and "ValueError" not in result.err
    assert result.code == 0, result.out + result.err
    assert "rule 'dev'" in result.out and "MATCHED, decided by subject: 'dev'" in result.out
