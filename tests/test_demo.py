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


def test_demo_keep_serves_ones_own_messages_for_a_dry_run(tmp_path, demo_run):
    """The try-it path: --load puts one's mail into account 'me'; the printed dry run works."""
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "a.eml").write_bytes(make_message(subject="from my own mailbox", headers={"List-Id": "<x.example>"}))
    mbox = mail / "old.mbox"
    mbox.write_bytes(b"From someone@example.org Mon Jan  1 00:00:00 2024\n"
                     + make_message(subject="an mbox message").replace(b"\r\n", b"\n") + b"\n")
    proc = subprocess.Popen([sys.executable, "-m", "mailrules", "demo", "--keep", "--load", str(mail)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = _read_until(proc, "In a mail client:", HANG_LIMIT)
        assert "holds 2 message(s)" in out, out
        dry_run = re.search(r"^\s+(mailrules run --once --dry-run -c \S+)$", out, re.M)
        assert dry_run, out
        result = subprocess.run([sys.executable, "-m", *dry_run.group(1).split()], capture_output=True,
                                text=True, timeout=HANG_LIMIT, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "mailing lists" in result.stderr + result.stdout
        assert "add_keyword $List" in result.stderr + result.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0


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
