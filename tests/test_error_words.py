"""Failures are reported in words, never by a Python class name; a missing mailbox names its readers.

A user reading `AuthenticationError: ...`, `SecretUnavailableError` or `error: select failed: ...`
(imaplib's exception class is called `error`) learns the name of a class, not what to do.
"""

from __future__ import annotations

import imaplib
import re

import pytest
from helpers import run_cli

from mailrules.connect import AuthenticationError, ConnectionFailedError, SecretUnavailableError
from mailrules.daemon.health import describe

CLASS_NAME = re.compile(r"\b(\w*Error|error|abort|Exception|Timeout\w*):")


@pytest.mark.parametrize("exc", [
    AuthenticationError("account 'me': the server rejected the login"),
    SecretUnavailableError("account 'me': environment variable PW is not set"),
    ConnectionFailedError("account 'me': cannot connect to imap.example.com:993"),
    imaplib.IMAP4.error("select failed: Mailbox doesn't exist: X"),
    imaplib.IMAP4.abort("EOF from the server"),
    TimeoutError(),
    ConnectionResetError(104, "Connection reset by peer"),
    RuntimeError(),
])
def test_the_daemons_failure_descriptions_name_no_class(exc):
    text = describe(exc)
    assert text and not CLASS_NAME.search(text), text
    assert type(exc).__name__ not in text


def rules_file(tmp_path, dovecot, user, watch: str) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(f"""version: 1
accounts:
  me:
    host: {dovecot.host}
    port: {dovecot.port}
    tls: none
    username: {user.name}
    password_env: WORDS_TEST_PASSWORD
    watch: {watch}
rules:
  - name: old stuff
    mailbox: Archive/Old
    match: {{older_than: 30d}}
    actions: [seen]
""")
    return str(path)


def test_a_missing_watched_mailbox_at_run_time_names_the_rule_and_its_file_line(tmp_path, dovecot, imap_user,
                                                                               monkeypatch):
    monkeypatch.setenv("WORDS_TEST_PASSWORD", imap_user.password)
    path = rules_file(tmp_path, dovecot, imap_user, "[INBOX, Archive/Old]")
    result = run_cli("-c", path, "--state", tmp_path / "state", "run", "--once")
    assert result.code == 1
    assert "mailbox Archive/Old does not exist on the server" in result.err, result.err
    assert "rule 'old stuff' (" in result.err and "rules.yaml:11:5)" in result.err, result.err
    assert "select failed" not in result.err and "error: " not in result.err


def test_a_refused_login_at_run_time_is_reported_without_a_class_name(tmp_path, dovecot, imap_user, monkeypatch):
    monkeypatch.setenv("WORDS_TEST_PASSWORD", "wrong")
    path = rules_file(tmp_path, dovecot, imap_user, "[INBOX]")
    result = run_cli("-c", path, "--state", tmp_path / "state", "run", "--once")
    assert result.code == 1 and "rejected the login" in result.err, result.err
    assert "AuthenticationError" not in result.err


def test_an_unset_password_variable_at_run_time_is_reported_without_a_class_name(tmp_path, dovecot, imap_user,
                                                                                 monkeypatch):
    monkeypatch.delenv("WORDS_TEST_PASSWORD", raising=False)
    path = rules_file(tmp_path, dovecot, imap_user, "[INBOX]")
    result = run_cli("-c", path, "--state", tmp_path / "state", "run", "--once")
    assert result.code == 1 and "WORDS_TEST_PASSWORD is not set" in result.err, result.err
    assert "SecretUnavailableError" not in result.err


def test_explain_of_a_mailbox_the_server_lacks_is_reported_without_a_class_name(tmp_path, dovecot, imap_user,
                                                                                monkeypatch):
    monkeypatch.setenv("WORDS_TEST_PASSWORD", imap_user.password)
    path = rules_file(tmp_path, dovecot, imap_user, "[INBOX]")
    result = run_cli("-c", path, "explain", "me", "Nowhere", "1")
    assert result.code == 1, result.out + result.err
    assert "Nowhere" in result.err and not CLASS_NAME.search(result.err), result.err


def test_suggest_on_a_mailbox_the_server_lacks_is_reported_without_a_class_name(tmp_path, dovecot, imap_user,
                                                                               monkeypatch):
    monkeypatch.setenv("WORDS_TEST_PASSWORD", imap_user.password)
    path = rules_file(tmp_path, dovecot, imap_user, "[INBOX]")
    result = run_cli("-c", path, "suggest", "me", "--from", "Nowhere")
    assert result.code == 1, result.out + result.err
    assert not CLASS_NAME.search(result.err), result.err
