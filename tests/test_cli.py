"""The command line: exit codes 0/1/2, check, --dry-run, the state lock, status, plugins.

Most tests call `mailrules.cli.main([...])` in-process (helpers.run_cli); a few run the
real `python -m mailrules.cli` in a subprocess.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers import Lab, read_only_directory, run_cli

from mailrules.builtins import mailrules_actions

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

OFFLINE_HEADER = """\
version: 1
accounts:
  me:
    host: 127.0.0.1
    port: 1
    tls: none
    username: me
    password_env: MAILRULES_TEST_UNUSED
rules:
"""


def offline_config(tmp_path, rules: str, name: str = "rules.yaml"):
    path = tmp_path / name
    path.write_text(OFFLINE_HEADER + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n")
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


# ----------------------------------------------------------------------------- bad configuration: exit 2


def test_malformed_yaml_exits_2_naming_file_line_and_column(tmp_path):
    path = offline_config(tmp_path, """
        - name: broken
          actions: [flag
    """)
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_CONFIG
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+", result.err), result.err


def test_an_unknown_key_exits_2_naming_it_and_its_place(tmp_path):
    path = offline_config(tmp_path, """
        - name: typo
          mach: {from: a}
          actions: [flag]
    """)
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_CONFIG
    line = OFFLINE_HEADER.count("\n") + 2
    assert f"{path}:{line}:" in result.err and "mach" in result.err, result.err


def test_a_bad_duration_exits_2(tmp_path):
    path = offline_config(tmp_path, """
        - name: old
          match: {older_than: 3 fortnights}
          actions: [flag]
    """)
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_CONFIG
    assert "older_than" in result.err and f"{path}:" in result.err


def test_an_include_cycle_exits_2(tmp_path):
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\nrules: []\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\nrules: []\n")
    path = tmp_path / "rules.yaml"
    path.write_text(OFFLINE_HEADER.replace("rules:\n", "include: [a.yaml]\nrules: []\n"))
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_CONFIG
    assert "cycle" in result.err, result.err


def test_a_missing_included_file_exits_2(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(OFFLINE_HEADER.replace("rules:\n", "include: [nowhere.yaml]\nrules: []\n"))
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_CONFIG
    assert "nowhere.yaml" in result.err


def test_a_missing_rules_file_exits_2(tmp_path):
    result = run_cli("-c", tmp_path / "absent.yaml", "check")
    assert result.code == EXIT_CONFIG
    assert "absent.yaml" in result.err


def test_an_unknown_rule_name_exits_2_before_connecting(tmp_path):
    path = offline_config(tmp_path, """
        - name: real
          actions: [flag]
    """)
    result = run_cli("-c", path, "--state", tmp_path / "state", "run", "--once", "--rule", "imaginary")
    assert result.code == EXIT_CONFIG
    assert "imaginary" in result.err
    assert "logged in" not in result.err


def test_run_once_on_a_file_whose_rules_are_broken_exits_2_and_touches_no_mail(dovecot, tmp_path, monkeypatch):
    """The first connection opens on the accounts alone, before the rules load: a broken rule
    still exits 2 with its place, no traceback, and the mail stays as it was."""
    user = dovecot.add_user()
    lab = Lab(dovecot, user, tmp_path / user.name, monkeypatch)
    lab.tmp.mkdir()
    lab.deliver("report 1")
    lab.write("""
        - name: broken
          match: {subject: report}
          actions: [{frobnicate: Reports}]
    """)
    result = lab.run()
    assert result.code == EXIT_CONFIG
    assert "frobnicate" in result.err and "rules.yaml:" in result.err and "Traceback" not in result.err
    assert lab.where() == {"report 1": ["INBOX"]}


def test_a_usage_error_exits_2(tmp_path):
    assert run_cli("run", "--no-such-option").code == EXIT_CONFIG
    assert run_cli().code == EXIT_CONFIG


def test_the_installed_command_exits_2_on_a_bad_file(tmp_path):
    path = offline_config(tmp_path, """
        - name: typo
          mach: {}
          actions: [flag]
    """)
    proc = subprocess.run([sys.executable, "-m", "mailrules.cli", "-c", str(path), "check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_CONFIG
    assert f"{path}:" in proc.stderr


# ----------------------------------------------------------------------------- check


def test_check_of_a_valid_file_exits_0_without_connecting(tmp_path):
    path = offline_config(tmp_path, """
        - name: a
          actions: [flag]
        - name: b
          actions: [{move: Lists/dev}]
    """)
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_OK
    assert "OK" in result.out and "2 rule(s)" in result.out


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("match: {raw: '(UNSEEN'}", "raw: unbalanced parentheses"),
        ("match: {larger: 100000000000000000000000000}", "larger: at most"),
        ("match: {older_than: 99999999999999999999999d}", "older_than: at most"),
        ('actions: [{move: "Lists\\r\\ndev"}]', "move: a line break"),
        ("where: [{regex: {'X(': a}}]", "expected a header name"),
        ("schedule: {every: 99999999999999w}", "schedule: every: at most"),
        ('match: {subject: "\\0"}', "subject: a NUL"),
    ],
)
def test_check_refuses_values_every_run_would_fail_on_with_file_and_line(tmp_path, line, says):
    rule = ["- name: r", f"  {line}"] + ([] if line.startswith("actions:") else ["  actions: [flag]"])
    path = offline_config(tmp_path, "\n".join(rule))
    result = run_cli("-c", path, "check")
    assert result.code == EXIT_CONFIG, result.out
    assert f"{path}:" in result.err and says in result.err, result.err
    assert "Traceback" not in result.err


def test_check_accepts_the_example_rules_file(monkeypatch):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "rules.example.yaml"
    result = run_cli("-c", example, "check")
    assert result.code == EXIT_OK, result.err


def test_check_connect_reports_capabilities_and_mailboxes(lab):
    lab.write("""
        - name: a
          actions: [{move: Lists/dev}]
    """)
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_OK, result.out + result.err
    assert "capabilities:" in result.out and "MOVE" in result.out and "UIDPLUS" in result.out
    assert "mailbox INBOX" in result.out
    assert "Lists/dev does not exist yet" in result.out


def test_check_connect_reports_a_missing_watched_mailbox_and_exits_1(lab):
    lab.write("""
        - name: a
          actions: [flag]
    """, watch=["INBOX", "Nonexistent"])
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_FAILURE
    assert "Nonexistent: MISSING" in result.out, result.out


def test_check_connect_reports_missing_capabilities(dovecot_factory, tmp_path, monkeypatch):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ IDLE")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    lab.write("""
        - name: a
          actions: [flag]
    """)
    result = lab.cli("check", "--connect")
    missing = re.search(r"missing: (.*)", result.out)
    assert missing and "MOVE" in missing.group(1) and "UIDPLUS" in missing.group(1), result.out
    assert "UIDPLUS" in result.out.split("missing:")[1]


def test_check_connect_with_a_wrong_password_exits_1(lab):
    lab.write("""
        - name: a
          actions: [flag]
    """)
    lab.monkeypatch.setenv("MAILRULES_TEST_PW_ME", "wrong")
    result = lab.cli("check", "--connect")
    assert result.code == EXIT_FAILURE
    assert "FAILED" in result.out


# ----------------------------------------------------------------------------- run: runtime failures exit 1


def test_connection_refused_exits_1_and_changes_nothing(lab):
    lab.deliver("x")
    lab.write("""
        - name: a
          actions: [flag]
    """, port=closed_port())
    result = lab.run()
    assert result.code == EXIT_FAILURE
    assert "me" in result.err and "INBOX" in result.err
    assert lab.flags() == {"x": set()}


def test_run_once_on_success_exits_0_and_logs_every_action(lab):
    (uid,) = lab.deliver({"subject": "x", "message_id": "<abc@example.org>"})
    lab.write("""
        - name: tag it
          actions: [{add_keyword: $K}]
    """)
    result = lab.run()
    assert result.code == EXIT_OK
    assert f"rule 'tag it' account me mailbox INBOX UID {uid} Message-ID <abc@example.org>: add_keyword $K" \
        in result.err, result.err


def test_run_once_with_a_failed_action_exits_1_after_doing_the_rest(lab):
    lab.deliver("bad", "good")
    lab.write("""
        - name: refused
          match: {subject: bad}
          actions: [{move: "~Refused"}]
        - name: others
          match: {subject: good}
          actions: [flag]
    """)
    result = lab.run()
    assert result.code == EXIT_FAILURE
    assert lab.flags() == {"bad": set(), "good": {"\\Flagged"}}


# ----------------------------------------------------------------------------- dry run


def test_dry_run_prints_uid_from_subject_and_actions(lab):
    uid_a, _ = lab.deliver(
        {"subject": "Build failed", "from_": "CI <ci@example.org>"},
        {"subject": "Lunch?", "from_": "Bob <bob@example.org>"},
    )
    lab.write("""
        - name: builds
          match: {subject: build}
          actions: [{add_keyword: $CI}, {move: CI}]
    """)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    assert "builds" in result.out and "add_keyword $CI" in result.out and "move CI" in result.out
    line = next(line for line in result.out.splitlines() if f"UID {uid_a}" in line)
    assert "ci@example.org" in line and "Build failed" in line
    assert "Lunch?" not in result.out


def test_dry_run_changes_nothing_on_the_server(lab):
    lab.deliver("copy me", "move me", "delete me", "flag me", "seen me")
    lab.deliver("elsewhere", folder="Lists")
    lab.write("""
        - name: copy
          match: {subject: copy}
          actions: [{copy: New/Folder}]
        - name: move
          match: {subject: move}
          actions: [{move: Another}]
        - name: delete
          match: {subject: delete}
          actions: [delete]
        - name: flags
          match: {subject: flag}
          actions: [flag, {add_keyword: $X}, {remove_keyword: $Y}]
        - name: seen
          match: {subject: seen}
          actions: [seen, trash]
    """, watch=["INBOX", "Lists"])
    before = lab.snapshot(uids=True)
    result = lab.run("--dry-run")
    assert result.code == EXIT_OK, result.err
    assert lab.snapshot(uids=True) == before
    for message in ("copy me", "move me", "delete me", "flag me", "seen me"):
        assert message in result.out


def test_dry_run_does_not_use_up_the_new_mail(lab):
    lab.deliver("x")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run("--dry-run").code == EXIT_OK
    assert lab.run().code == EXIT_OK
    assert lab.flags() == {"x": {"\\Flagged"}}


def test_dry_run_after_a_real_run_shows_only_new_mail(lab):
    lab.deliver("old")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run().code == EXIT_OK
    lab.deliver("new")
    result = lab.run("--dry-run")
    assert "'new'" in result.out and "'old'" not in result.out  # the sample messages' quoted subjects


# ----------------------------------------------------------------------------- one process per state


def test_a_second_run_on_the_same_state_refuses_to_start(lab):
    lab.deliver("x")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from mailrules.lock import StateLock; l = StateLock(sys.argv[1]); l.acquire();"
         " print('locked', flush=True); sys.stdin.read()", str(lab.state)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = lab.run()
        assert result.code != EXIT_OK
        assert f"pid {holder.pid}" in result.err, result.err
        assert lab.flags() == {"x": set()}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert lab.run().code == EXIT_OK, "the lock goes with the process that held it"
    assert lab.flags() == {"x": {"\\Flagged"}}


def test_a_killed_run_leaves_no_stale_lock(lab):
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from mailrules.lock import StateLock; StateLock(sys.argv[1]).acquire();"
         " print('locked', flush=True); time.sleep(600)", str(lab.state)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=30)
    assert lab.run().code == EXIT_OK


# ----------------------------------------------------------------------------- status


def test_status_before_any_run_says_so(tmp_path):
    path = offline_config(tmp_path, """
        - name: a
          actions: [flag]
    """)
    result = run_cli("-c", path, "--state", tmp_path / "state", "status")
    assert result.code == EXIT_OK
    assert "no state yet" in result.out


def test_status_shows_progress_pending_and_given_up_messages(lab):
    uid_bad, _ = lab.deliver({"subject": "bad", "message_id": "<bad@example.org>"}, "good")
    lab.write("""
        - name: refused
          match: {subject: bad}
          actions: [{move: "~Refused"}]
    """)
    assert lab.run().code == EXIT_FAILURE
    status = lab.cli("status")
    assert status.code == EXIT_OK
    assert "me INBOX: processed up to UID 2" in status.out
    assert f"pending: UID {uid_bad} at rule 'refused' (attempt 1)" in status.out, status.out
    for _ in range(4):
        lab.run()
    status = lab.cli("status").out
    assert f"given up: UID {uid_bad} Message-ID <bad@example.org> at rule 'refused' after 5 attempts" in status
    assert "pending 0, given up 1" in status


# ----------------------------------------------------------------------------- plugins


def test_plugins_lists_the_builtin_predicate_and_every_builtin_action(tmp_path):
    result = run_cli("plugins")
    assert result.code == EXIT_OK
    assert result.out.startswith("builtin")
    assert "predicate regex" in result.out
    for action in mailrules_actions():
        assert re.search(rf"^\s*action\s+{action.name}\s", result.out, re.M), action.name


def test_version(capsys):
    result = run_cli("--version")
    assert result.code == EXIT_OK
    assert "mailrules" in (result.out + result.err + capsys.readouterr().out)


def test_password_comes_from_the_environment_only(lab, monkeypatch):
    lab.deliver("x")
    lab.write("""
        - name: a
          actions: [flag]
    """)
    assert lab.user.password not in lab.config.read_text()
    monkeypatch.delenv("MAILRULES_TEST_PW_ME")  # the rules file alone cannot log in
    missing = lab.run()
    assert missing.code == EXIT_FAILURE
    assert "MAILRULES_TEST_PW_ME is not set" in missing.err
    assert lab.flags() == {"x": set()}
    wrong = "Wrong-Pässwörd-" + os.urandom(4).hex()
    monkeypatch.setenv("MAILRULES_TEST_PW_ME", wrong)  # what the variable says is what is sent
    refused = lab.run()
    assert refused.code == EXIT_FAILURE and "rejected the login" in refused.err
    assert wrong not in refused.err + refused.out and lab.flags() == {"x": set()}
    monkeypatch.setenv("MAILRULES_TEST_PW_ME", lab.user.password)
    done = lab.run()
    assert done.code == EXIT_OK, done.err
    assert lab.flags() == {"x": {"\\Flagged"}}
    assert lab.user.password not in done.err + done.out + missing.err + refused.err


def test_status_with_a_broken_rules_file_shows_the_progress_and_exits_2(tmp_path):
    from mailrules.state import StateStore

    store = StateStore(tmp_path / "state")
    store.set_mailbox("me", "INBOX", 7, 42)
    store.close()
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent("""\
        version: 1
        accounts:
          me: {host: 127.0.0.1, tls: none, username: me, password_env: X}
        rules:
          - name: x
            where: [{no_such_plugin: 1}]
            actions: [flag]
    """))
    result = run_cli("-c", str(rules), "--state", str(tmp_path / "state"), "status")
    assert result.code == 2
    assert "me INBOX: processed up to UID 42" in result.out
    assert "no_such_plugin" in result.err


# ----------------------------------------------------------------------------- a state that cannot be used


def _damage(path, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 3],
                      "random bytes": os.urandom(max(len(data), 8192))}[kind])


@pytest.mark.parametrize("kind", ["empty", "truncated", "random bytes"])
@pytest.mark.parametrize("command", [("run", "--once"), ("run", "--dry-run"), ("status",)])
def test_a_broken_state_file_exits_1_naming_it_without_a_traceback(tmp_path, kind, command):
    from mailrules.state import StateStore

    store = StateStore(tmp_path / "state")
    store.set_mailbox("me", "INBOX", 7, 42)
    with store.transaction() as db:
        db.executemany("INSERT INTO placed VALUES (?,?,?,?)", [("me", "A", 1, uid) for uid in range(3000)])
    store.close()
    state_file = tmp_path / "state" / "state.sqlite3"
    _damage(state_file, kind)
    before = state_file.read_bytes()
    path = offline_config(tmp_path, """
        - name: a
          actions: [flag]
    """)
    result = run_cli("-c", path, "--state", tmp_path / "state", *command)
    assert result.code == EXIT_FAILURE, result.err
    assert str(state_file) in result.err and "Traceback" not in result.err + result.out
    assert "logged in" not in result.err  # refused before any work
    assert state_file.read_bytes() == before


def test_status_without_a_state_says_nothing_was_processed_and_creates_nothing(tmp_path):
    path = offline_config(tmp_path, """
        - name: a
          actions: [flag]
    """)
    result = run_cli("-c", path, "--state", tmp_path / "state", "status")
    assert result.code == EXIT_OK, result.err
    assert "nothing processed yet" in result.out
    assert not (tmp_path / "state").exists()


def test_status_and_dry_run_read_a_state_in_a_read_only_directory_and_run_refuses_clearly(lab):
    lab.deliver("old")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run().code == EXIT_OK
    lab.deliver("new")
    with read_only_directory(lab.state):
        status = lab.cli("status")
        assert status.code == EXIT_OK, status.err
        assert "me INBOX: processed up to UID 1" in status.out
        dry = lab.run("--dry-run")
        assert dry.code == EXIT_OK, dry.err
        assert "'new'" in dry.out and "'old'" not in dry.out  # the sample messages' quoted subjects
        run = lab.run()
        assert run.code == EXIT_FAILURE
        assert str(lab.state) in run.err and "Traceback" not in run.err
    assert lab.flags() == {"old": {"\\Flagged"}, "new": set()}
    assert lab.run().code == EXIT_OK
    assert lab.flags() == {"old": {"\\Flagged"}, "new": {"\\Flagged"}}


def test_a_full_disk_in_the_middle_of_a_run_fails_the_batch_and_the_next_run_loses_and_doubles_nothing(
        lab, monkeypatch):
    import sqlite3

    from mailrules.state import StateStore
    from mailrules.testing.daemon import message_contents

    lab.deliver(*[f"m{i}" for i in range(5)])
    with lab.client() as client:
        originals = message_contents(client, "INBOX")
    lab.write("""
        - name: keep a copy
          actions: [{copy: Copies}]
        - name: archive
          actions: [{move: Archive}]
    """)
    real_add_step = StateStore.add_step

    def full_after_the_action(self, run_id, seq, rule_index, action_index, uids, state, detail=None):
        if state == "done" and action_index >= 0:  # the server did it; recording that fails
            raise sqlite3.OperationalError("database or disk is full")
        return real_add_step(self, run_id, seq, rule_index, action_index, uids, state, detail)

    def full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(StateStore, "add_step", full_after_the_action)
        m.setattr(StateStore, "set_error", full)
        failed = lab.run()
    assert failed.code == EXIT_FAILURE
    assert "disk is full" in failed.err and "Traceback" not in failed.err
    assert lab.run().code == EXIT_OK
    with lab.client() as client:
        assert message_contents(client, "Copies") == originals
        assert message_contents(client, "Archive") == originals
        assert message_contents(client, "INBOX") == collections.Counter()
