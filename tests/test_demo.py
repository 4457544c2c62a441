"""`mailrules demo`: the example rules at work on a throwaway Dovecot, run as a newcomer runs it.

The main test starts the real command in a subprocess from the repository's directory (as
the README says) and checks what it printed: the actions the daemon applied, and the flags
and keywords the demo read back from the server afterwards. The time limit is generous on
purpose: it catches a demo that hangs, not one that is slow.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli

from mailrules.testing.messages import make_message

REPO = Path(__file__).resolve().parents[1]
HANG_LIMIT = 180  # seconds; the demo takes about 15 s on a 2-core machine


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    from mailrules.testing.dovecot import dovecot_available

    if not dovecot_available():
        if os.environ.get("MAILRULES_REQUIRE_DOVECOT", "").strip() not in ("", "0"):
            pytest.fail("dovecot is not installed, and MAILRULES_REQUIRE_DOVECOT is set", pytrace=False)
        pytest.skip("dovecot is not installed")
    return subprocess.run([sys.executable, "-m", "mailrules", "demo"], cwd=REPO, capture_output=True,
                          text=True, timeout=HANG_LIMIT)


def _server_section(out: str) -> str:
    return out.partition("On the server now:")[2].partition("Summary:")[0]


def test_the_demo_exits_0_by_itself(demo_run):
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr


def test_the_demo_prints_each_action_with_rule_message_and_action(demo_run):
    out = demo_run.stdout
    assert re.search(r"catch-up\s+personal/INBOX\s+dev list\s+Build #812 failed on main\s+move Lists/dev", out)
    assert re.search(r"spam flagged by the server\s+You have WON a prize\s+move Junk", out)
    assert re.search(r"team triage\s+URGENT: outage in eu-west\s+add_keyword \$Triage", out)


def test_the_demo_acts_on_mail_delivered_while_the_daemon_idles(demo_run):
    live = [line for line in demo_run.stdout.splitlines() if line.strip().startswith("live ")]
    assert any("Build #814 failed on main" in line and "move Lists/dev" in line for line in live), live
    assert "6 of 6 messages delivered during IDLE acted on" in demo_run.stdout


def test_the_demo_runs_the_scheduled_sweeps(demo_run):
    assert re.search(r"archive last year\s+Quarterly report 2023-03\s+move Archive/2023", demo_run.stdout)
    assert re.search(r"old newsletters\s+Newsletter: Spring deals\s+trash", demo_run.stdout)


def test_the_server_holds_the_moves_flags_and_keywords_afterwards(demo_run):
    out = demo_run.stdout
    assert re.search(r"personal/Junk\s+0 -> 3", out), out
    assert re.search(r"personal/Team/Standups\s+0 -> 3", out), out
    assert re.search(r"work/Archive/Receipts\s+0 -> 2", out), out  # copied across accounts
    server = _server_section(out)
    assert re.search(r"personal/Lists/dev\s+.*\$Dev x3.*\\Flagged x3", server), server
    assert re.search(r"personal/INBOX\s+.*\$Big x1.*\$Review x", server), server
    assert re.search(r"work/INBOX\s+.*\$Triage x2", server), server


def test_the_demo_summary_counts_moves_flags_and_keywords(demo_run):
    summary = re.search(r"Summary: (\d+) message actions on (\d+) messages \((.*)\)", demo_run.stdout)
    assert summary, demo_run.stdout
    kinds = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (\w+)", summary.group(3)))
    assert kinds["moved"] > 0 and kinds["flags"] > 0 and kinds["keywords"] > 0 and kinds["copied"] > 0


def test_without_dovecot_the_demo_names_the_install_command_and_exits_2(monkeypatch):
    import mailrules.testing.dovecot

    monkeypatch.setattr(mailrules.testing.dovecot, "dovecot_available", lambda: False)
    result = run_cli("demo")
    assert result.code == 2
    assert "as root (Debian, Ubuntu):  apt-get install -y dovecot-imapd" in result.err and "sudo" not in result.err


def test_demo_load_of_a_missing_path_is_a_usage_error(tmp_path):
    from mailrules.testing.dovecot import dovecot_available

    if not dovecot_available():
        pytest.skip("dovecot is not installed")
    result = run_cli("demo", "--load", tmp_path / "nope.mbox")
    assert result.code == 2 and "nope.mbox" in result.err


def test_the_demo_labels_scheduled_sweeps_as_sweeps(demo_run):
    rows = _rows(demo_run.stdout)
    assert any(r[0] == "sweep" and "archive last year" in r[1] for r in rows), rows
    assert not any(r[0] == "catch-up" and ("archive last year" in r[1] or "old newsletters" in r[1]) for r in rows)


def test_the_demo_prints_its_rows_in_a_stable_order_catch_up_then_sweeps_then_live(demo_run):
    phases = [r[0] for r in _rows(demo_run.stdout)]
    order = {"catch-up": 0, "sweep": 1, "live": 2}
    assert phases == sorted(phases, key=order.__getitem__), phases
    assert set(phases) == set(order)


def _rows(out: str) -> list[tuple[str, str]]:
    """(when, rest of the row) of each action row of the demo's table."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^  (catch-up|sweep|live)\s+(.*)$", out, re.M)]


@pytest.fixture(scope="module")
def kept_demo(tmp_path_factory, demo_run):
    """`mailrules demo --keep --load` of an .eml, an mbox and a Maildir, with marks on them."""
    tmp = tmp_path_factory.mktemp("kept")
    mail = tmp / "mail"
    mail.mkdir()
    (mail / "a.eml").write_bytes(make_message(subject="from my own mailbox", headers={"List-Id": "<x.example>"}))
    mbox = mail / "old.mbox"
    read_answered = make_message(subject="read and answered", headers={"Status": "RO", "X-Status": "AF"})
    unread = make_message(subject="an mbox message")
    mbox.write_bytes(b"".join(b"From someone@example.org Mon Jan  1 00:00:00 2024\n" + m.replace(b"\r\n", b"\n")
                              + b"\n" for m in (read_answered, unread)))
    maildir = tmp / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1700000000.1.host:2,DS").write_bytes(make_message(subject="a seen draft"))
    env = {**os.environ, "MAILRULES_DEMO_DIR": str(tmp / "kept")}
    # Started with SIGINT ignored, as a job started with `&` by a script (or a test run started
    # that way) inherits it: Ctrl-C must stop the demo all the same, however pytest was started.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "mailrules", "demo", "--keep", "--load", str(mail),
                                 "--load", str(maildir)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        out = _read_until(proc, "In a mail client:", HANG_LIMIT)
        yield proc, out, tmp / "kept"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def _printed(out: str, word: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if f" {word} " in line and "-c " in line]


def test_demo_keep_prints_commands_that_work_as_printed(kept_demo, tmp_path):
    """The try-it path: --load puts one's mail into account 'me'; the printed dry run works."""
    import shlex

    _proc, out, _kept = kept_demo
    assert "holds 4 message(s)" in out, out
    check, dry_run = _printed(out, "check")[0], next(c for c in _printed(out, "run") if "--dry-run" in c)
    for command in (check, dry_run):
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=HANG_LIMIT,
                                cwd=tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert "add_keyword $List" in result.stderr + result.stdout


def test_demo_keep_prints_every_command_with_the_same_state(kept_demo):
    _proc, out, _kept = kept_demo
    states = {re.search(r"--state (\S+)", c).group(1) for c in _printed(out, "run") + _printed(out, "status")}
    assert len(states) == 1 and len(_printed(out, "run")) == 2, out
    assert "apply" not in out  # `mailrules apply` does not exist (yet)


def test_demo_load_keeps_the_read_answered_flagged_and_draft_marks(kept_demo):
    from imapclient import IMAPClient

    _proc, out, _kept = kept_demo
    port = int(re.search(r"IMAP server: 127.0.0.1 port (\d+)", out).group(1))
    password = re.search(r"^\s+me\s+(\S+)$", out, re.M).group(1)
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30) as client:
        client.login("me", password)
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    flags = {data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip():
             {f.decode() for f in data[b"FLAGS"]} - {"\\Recent"} for data in fetched.values()}
    assert flags["read and answered"] == {"\\Seen", "\\Answered", "\\Flagged"}, flags
    assert flags["an mbox message"] == set(), flags
    assert flags["a seen draft"] == {"\\Seen", "\\Draft"}, flags


def test_demo_keep_never_deletes_the_rules_file_the_user_edited(kept_demo):
    proc, out, kept = kept_demo
    rules = kept / "rules.yaml"
    assert str(rules) in out
    rules.write_text(rules.read_text() + "  # my own rule, and my tests:\n")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=60) == 0
    assert rules.read_text().endswith("# my own rule, and my tests:\n")
    assert f"your rules file stays in {kept}" in proc.stdout.read()


def test_ctrl_c_stops_the_kept_demo_even_when_sigint_was_inherited_ignored(tmp_path):
    """A background job of a script starts with SIGINT ignored; the kept demo must still stop on it."""
    import io
    import threading
    from types import SimpleNamespace

    from mailrules.demo_keep import wait_until_stopped

    started = time.monotonic()
    server = SimpleNamespace(running=True)
    give_up = threading.Timer(10, lambda: setattr(server, "running", False))  # no hang if SIGINT is lost
    give_up.start()
    out = io.StringIO()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        code = wait_until_stopped(server, tmp_path, out)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the disposition found is put back
    finally:
        signal.signal(signal.SIGINT, previous)
        give_up.cancel()
    assert code == 0 and time.monotonic() - started < 5
    assert f"your rules file stays in {tmp_path}" in out.getvalue()


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The process's stdout up to `marker` (raw reads: select() cannot see Python's buffer)."""
    deadline = time.monotonic() + timeout
    seen = b""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while marker.encode() not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} in the demo's output:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            seen += os.read(fd, 65536)
    return seen.decode()
