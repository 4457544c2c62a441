"""`mailrules init`: a starter rules file at the default path, never over one, then checked.

Spec ("Command line"): writes a starter rules file at the default path (never over an existing
one) from a few questions or flags (--host, --username, --password-from), then checks it with
`check --connect`. The check runs against the private Dovecot of the test kit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from helpers import run_cli

from mailrules.config import load
from mailrules.init import init_command


@pytest.fixture
def config_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home" / ".config" / "mailrules" / "rules.yaml"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAILRULES_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return path


def test_init_writes_a_rules_file_that_loads_at_the_default_path(config_path):
    result = run_cli("init", "--host", "imap.example.com", "--username", "me@example.com",
                     "--password-from", "command:pass show mail/me", "--no-check")
    assert result.code == 0, result.err
    assert f"Wrote {config_path}" in result.out
    account = load(config_path).accounts["mail"]
    assert (account.host, account.port, account.username) == ("imap.example.com", 993, "me@example.com")
    assert account.auth.kind == "password_command" and account.auth.value == "pass show mail/me"


def test_init_never_overwrites_an_existing_rules_file(config_path):
    config_path.parent.mkdir(parents=True)
    config_path.write_text("my own rules\n")
    result = run_cli("init", "--host", "h", "--username", "u", "--password-from", "keyring", "--no-check")
    assert result.code == 2 and "already exists" in result.err
    assert config_path.read_text() == "my own rules\n"


def test_init_asks_for_what_the_flags_leave_out(config_path):
    args = argparse.Namespace(config=None, host=None, port=None, tls="implicit", username=None,
                              password_from=None, account="mail", no_check=True)
    answers = iter(["imap.example.org", "me", "env:MAIL_PASSWORD"])
    assert init_command(args, ask=lambda _question: next(answers)) == 0
    account = load(config_path).accounts["mail"]
    assert account.host == "imap.example.org" and account.auth.value == "MAIL_PASSWORD"


def test_init_refuses_a_password_given_instead_of_where_it_comes_from(config_path):
    result = run_cli("init", "--host", "h", "--username", "u", "--password-from", "hunter2", "--no-check")
    assert result.code == 2 and "keyring, env:VARIABLE or command:COMMAND" in result.err
    assert "hunter2" not in result.out and not config_path.exists()


def test_init_without_a_terminal_names_the_missing_flag(config_path):
    result = run_cli("init", "--host", "h", "--no-check")
    assert result.code == 2 and "--username is needed" in result.err


def test_init_checks_the_new_file_against_the_server(config_path, dovecot, imap_user, monkeypatch):
    monkeypatch.setenv("INIT_TEST_PASSWORD", imap_user.password)
    result = run_cli("init", "--host", dovecot.host, "--port", str(dovecot.port), "--tls", "none",
                     "--username", imap_user.name, "--password-from", "env:INIT_TEST_PASSWORD")
    assert result.code == 0, result.out + result.err
    assert f"connected to {dovecot.host}:{dovecot.port} as {imap_user.name}" in result.out
    assert "All good" in result.out


def test_init_says_in_words_what_the_check_found_wrong_and_keeps_the_file(config_path, dovecot, imap_user,
                                                                        monkeypatch):
    monkeypatch.setenv("INIT_TEST_PASSWORD", "wrong-" + imap_user.password)
    result = run_cli("init", "--host", dovecot.host, "--port", str(dovecot.port), "--tls", "none",
                     "--username", imap_user.name, "--password-from", "env:INIT_TEST_PASSWORD")
    assert result.code == 1
    assert "FAILED" in result.out and "The rules file is written" in result.out
    assert "Traceback" not in result.out + result.err and "Error:" not in result.out + result.err
    assert config_path.exists()


def test_no_rules_file_points_to_init_and_demo_keep(config_path):
    result = run_cli("check")
    assert result.code == 2
    assert "mailrules init" in result.err and "mailrules demo --keep" in result.err
