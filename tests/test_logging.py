"""What mailrules writes to its log: bounded human lines, JSON lines, -v/-vv, progress on a terminal.

Units format hand-made records with `mailrules.logformat`; the integration tests run
`run --once` on the private Dovecot (in-process, or in a subprocess on a pseudo-terminal).
"""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from mailrules.logformat import JSON_KEYS, MAX_LINE, HumanFormatter, JsonFormatter, ProtocolLines
from mailrules.testing.messages import make_message

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def record(msg: str = "a message", *args, level: int = logging.INFO, name: str = "mailrules.engine",
           **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def batch(n: int, **extra) -> logging.LogRecord:
    """The engine's record of one action on `n` messages."""
    uids = list(range(1, n + 1))
    mids = [f"<message-{u}@example.org>" for u in uids]
    messages = ", ".join(f"UID {u} {m}" for u, m in zip(uids, mids, strict=True))
    fields = {"event": "action", "rule": "archive", "account": "me", "mailbox": "INBOX",
              "action": "move Archive", "uids": uids, "message_ids": mids, "count": n, **extra}
    return record("rule %r account %s mailbox %s: %s: %d messages: %s", "archive", "me", "INBOX",
                  "move Archive", n, messages, **fields)


# ----------------------------------------------------------------------------- human lines


def test_a_batch_line_states_the_count_and_the_first_three_messages():
    line = HumanFormatter().format(batch(3000))
    assert "\n" not in line and len(line) <= MAX_LINE, line
    assert "rule 'archive' account me mailbox INBOX: move Archive: 3000 messages: " in line
    assert line.endswith("UID 1 <message-1@example.org>, UID 2 <message-2@example.org>, "
                         "UID 3 <message-3@example.org> and 2997 more"), line


def test_a_small_batch_keeps_the_text_of_its_log_call():
    line = HumanFormatter().format(batch(2))
    assert line.endswith("move Archive: 2 messages: UID 1 <message-1@example.org>, UID 2 <message-2@example.org>")


def test_a_batch_names_shortened_subjects_when_known():
    line = HumanFormatter().format(batch(5, subjects=["x" * 300] * 5))
    assert '"' + "x" * 39 + '…"' in line and len(line) <= MAX_LINE, line


def test_every_line_is_bounded_whatever_the_content():
    long_rule = "r" * 2000
    server_text = "NO " + "y" * 10_000
    for rec in (record("rule %r: the server said %s", long_rule, server_text),
                batch(50, rule=long_rule, action="move " + "z" * 5000, message_ids=["<" + "m" * 3000 + ">"] * 50)):
        for verbose in (0, 1, 2):
            for line in HumanFormatter(verbose=verbose).format(rec).splitlines():
                assert len(line) <= MAX_LINE, (verbose, len(line))
    cut = HumanFormatter().format(record("%s", "y" * 10_000))
    assert cut.endswith("more characters)"), cut[-80:]


@pytest.mark.parametrize("verbose", [0, 1])
def test_no_control_character_from_a_message_reaches_the_human_log_raw(verbose):
    hostile = batch(5, message_ids=["<a2\x1b[31m@x>", "<b\x9b2J@x>", "<c\x07@x>", "<d\x7f@x>", "<e@x>"])
    one = record("rule %r: moved UID 1 %s", "r\x1b]0;title\x07", "<a2\x1b[31m@x>")
    for rec in (hostile, one):
        text = HumanFormatter(verbose=verbose).format(rec)
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), text
    assert "<a2\\u001b[31m@x>" in HumanFormatter().format(one)  # escaped as the JSON log escapes it


def test_a_line_break_in_a_message_does_not_start_a_line_without_timestamp():
    text = HumanFormatter().format(record("the server said %s", "BAD one\r\nsecond line"))
    assert "\n" not in text and "one ⏎ second line" in text


def test_at_v_the_full_list_follows_on_bounded_lines_with_timestamps():
    lines = HumanFormatter(verbose=1).format(batch(3000)).splitlines()
    assert len(lines) > 2
    assert all(TIMESTAMP.match(line) and len(line) <= MAX_LINE for line in lines)
    listed = [int(u) for line in lines[1:] for u in re.findall(r"UID (\d+) ", line)]
    assert listed == list(range(1, 3001))
    assert "move Archive: messages 1-" in lines[1] and " of 3000: " in lines[1]


def test_a_traceback_follows_its_line_in_full():
    try:
        raise ValueError("x" * 1000)
    except ValueError:
        rec = record("details", exc_info=None)
        rec.exc_info = sys.exc_info()
    text = HumanFormatter().format(rec)
    assert text.splitlines()[0].endswith(": details")
    assert "x" * 1000 in text and "Traceback" in text


# ----------------------------------------------------------------------------- JSON lines


def test_json_lines_parse_and_carry_the_stable_keys_with_the_full_lists():
    obj = json.loads(JsonFormatter().format(batch(3000)))
    assert set(JSON_KEYS) <= set(obj)
    assert obj["event"] == "action" and obj["rule"] == "archive" and obj["account"] == "me"
    assert obj["mailbox"] == "INBOX" and obj["action"] == "move Archive" and obj["count"] == 3000
    assert obj["uid"] == list(range(1, 3001)) and obj["message_id"][2999] == "<message-3000@example.org>"
    assert obj["level"] == "INFO" and obj["error"] is None
    assert "and 2997 more" in obj["message"]  # the message stays readable


def test_json_keys_are_null_where_they_do_not_apply():
    obj = json.loads(JsonFormatter().format(record("mailrules daemon started (pid %d)", 7)))
    assert obj["event"] == "log" and obj["message"] == "mailrules daemon started (pid 7)"
    assert all(obj[k] is None for k in ("rule", "account", "mailbox", "uid", "message_id", "action", "count",
                                         "error"))


def test_json_carries_the_traceback_in_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("details")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["traceback"]


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("formatter", [HumanFormatter(verbose=1), JsonFormatter()], ids=["text", "json"])
def test_a_secret_in_structured_fields_is_redacted(formatter):
    from mailrules.secrets import register_secret

    secret = "canary-9f8e7d6c5b4a"
    register_secret(secret)
    rec = batch(5, rule=f"rule {secret}", error=f"LOGIN {secret} refused", event="action_failed",
                message_ids=[f"<{secret}@x>"] * 5)
    text = formatter.format(rec)
    assert secret not in text and "***" in text


# ----------------------------------------------------------------------------- -vv


def test_at_vv_the_protocol_lines_stay_and_imaplibs_parse_notes_go():
    keep = ProtocolLines()
    assert keep.filter(record("  > b'ABCD1 SELECT INBOX'", name="imapclient.imaplib"))
    assert keep.filter(record("  < b'* 3 EXISTS'", name="imapclient.imaplib"))
    assert not keep.filter(record("\tmatched r'(?P<tag>...)' => ('ABCD1',)", name="imapclient.imaplib"))
    assert not keep.filter(record("untagged_responses[EXISTS] 0 += [\"b'3'\"]", name="imapclient.imaplib"))
    assert keep.filter(record("matched anything", name="mailrules.engine"))


def test_v_shows_each_rules_search_result_on_run_once(lab):
    lab.deliver("a", "b")
    lab.write("""
        - name: tag it
          match: {subject: a}
          actions: [{add_keyword: $K}]
    """)
    quiet = lab.run()
    assert "messages match" not in quiet.err
    lab.deliver("a2")
    result = lab.cli("-v", "run", "--once")
    assert result.code == 0, result.err
    assert "rule 'tag it' account me mailbox INBOX: 1 of 1 messages match" in result.err, result.err


def test_vv_shows_the_protocol_without_imaplib_parse_notes(lab):
    lab.deliver("a")
    lab.write("""
        - name: tag it
          actions: [{add_keyword: $K}]
    """)
    result = lab.cli("-vv", "run", "--once")
    assert result.code == 0, result.err
    assert re.search(r"imapclient\.imaplib: > b'\w+ SELECT \"INBOX\"'", result.err), result.err[-2000:]
    assert re.search(r"imapclient\.imaplib: < b'\w+ OK ", result.err), result.err[-2000:]
    assert "untagged_responses" not in result.err and "matched " not in result.err, result.err[-2000:]
    assert lab.user.password not in result.err


# ----------------------------------------------------------------------------- a large batch, end to end


def test_moving_3000_messages_prints_bounded_lines_that_state_the_count(lab):
    lab.server.deliver_files(lab.user, "INBOX",
                             (make_message(subject=f"m{i}", message_id=f"<m{i}@example.org>") for i in range(3000)))
    lab.write("""
        - name: archive all
          actions: [{move: Archive}]
    """)
    result = lab.run()
    assert result.code == 0, result.err[-3000:]
    lines = result.err.splitlines()
    assert max(len(line) for line in lines) <= MAX_LINE, max(lines, key=len)[:300]
    assert "account me mailbox INBOX: 3000 new or retried, 3000 actions applied, 0 failed" in result.err
    moved = sum(int(n) for n in re.findall(r"move Archive: (\d+) messages: ", result.err))
    assert moved == 3000, result.err[-3000:]
    assert len(lab.messages("Archive")) == 3000


def test_log_format_json_lines_parse_and_carry_the_keys(lab):
    lab.deliver({"subject": "a", "message_id": "<a@example.org>"}, {"subject": "b", "message_id": "<b@example.org>"})
    lab.write("""
        - name: archive all
          actions: [{move: Archive}]
    """)
    result = lab.cli("--log-format", "json", "run", "--once")
    assert result.code == 0, result.err
    objects = [json.loads(line) for line in result.err.splitlines()]
    assert objects and all(set(JSON_KEYS) <= set(o) for o in objects)
    (action,) = [o for o in objects if o["event"] == "action"]
    assert action["rule"] == "archive all" and action["account"] == "me" and action["mailbox"] == "INBOX"
    assert action["action"] == "move Archive" and action["count"] == 2
    assert action["message_id"] == ["<a@example.org>", "<b@example.org>"] and len(action["uid"]) == 2
    (summary,) = [o for o in objects if o["event"] == "summary"]
    assert summary["count"] == 2


# ----------------------------------------------------------------------------- progress on a terminal

CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_on(lab, *, terminal: bool, daemon: bool = False) -> str:
    """`mailrules run --once` in a subprocess, its stderr a pseudo-terminal (or a pipe): the output.

    daemon: `mailrules run` instead, stopped (SIGTERM) once it has caught up.
    """
    env = {**os.environ, "MAILRULES_CATCHUP_BATCH": "50", "MAILRULES_ONCE_BATCH": "50", "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
    cmd = [sys.executable, "-m", "mailrules", "-c", str(lab.config), "--state", str(lab.state), "run"]
    cmd += [] if daemon else ["--once"]
    if not terminal:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr
    leader, follower = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    stopping = False  # SIGTERM once: a second one, after the daemon's own shutdown, would kill it
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
            if daemon and not stopping and b"caught up on" in b"".join(chunks[-2:]) and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                stopping = True
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode(errors="replace")


def _segments(output: str) -> list[str]:
    """What each line of the screen started with: escape sequences removed, split at CR and LF."""
    return [s for s in re.split(r"[\r\n]", CSI.sub("", output)) if s.strip()]


@pytest.fixture
def backlog(lab):
    lab.server.deliver_files(lab.user, "INBOX", (make_message(subject=f"m{i}") for i in range(600)))
    lab.write("""
        - name: archive all
          actions: [{move: Archive}]
    """)
    return lab


def test_on_a_terminal_run_once_shows_a_bar_and_no_log_line_is_glued_to_it(backlog):
    output = _run_on(backlog, terminal=True)
    segments = _segments(output)
    assert any("━" in s and "/600" in s for s in segments), output[-3000:]  # the bar was drawn
    logged = [s for s in segments if re.search(r" (INFO|WARNING|ERROR) mailrules", s)]
    assert logged and all(TIMESTAMP.match(s) for s in logged), [s for s in logged if not TIMESTAMP.match(s)][:3]
    assert "caught up on 600 messages" in output
    assert len(backlog.messages("Archive")) == 600


def test_without_a_terminal_no_bar_is_drawn(backlog):
    output = _run_on(backlog, terminal=False)
    assert "━" not in output and "\r" not in output and "\x1b" not in output, output[-2000:]
    assert all(TIMESTAMP.match(line) for line in output.splitlines()), output[-2000:]
    assert "catching up on 600 messages" in output and "caught up on 600 messages" in output


def test_on_a_terminal_the_daemons_log_lines_are_never_glued_to_its_bar(backlog):
    output = _run_on(backlog, terminal=True, daemon=True)
    segments = _segments(output)
    assert any("━" in s and "/600" in s for s in segments), output[-3000:]
    logged = [s for s in segments if re.search(r" (INFO|WARNING|ERROR) mailrules", s)]
    assert logged and all(TIMESTAMP.match(s) for s in logged), [s for s in logged if not TIMESTAMP.match(s)][:3]
    assert "mailrules daemon stopped" in output, output[-2000:]
    assert len(backlog.messages("Archive")) == 600


def test_imaplib_formats_no_debug_text_when_the_protocol_is_not_logged(dovecot, imap_user):
    from mailrules.connect import connect
    from mailrules.imap.internals import imaplib_of
    from mailrules.model import Account, Auth

    account = Account(name="a", host=dovecot.host, port=dovecot.port, username=imap_user.name,
                      auth=Auth("password", imap_user.password), tls="none")
    quiet = connect(account)
    assert imaplib_of(quiet).debug == 0  # imaplib would format every line for nobody
    quiet.logout()
    logger = logging.getLogger("imapclient.imaplib")
    level = logger.level
    logger.setLevel(logging.DEBUG)  # as -vv does
    try:
        logged = connect(account)
    finally:
        logger.setLevel(level)
    assert imaplib_of(logged).debug >= 4  # -vv: the protocol lines are written
    logged.logout()
