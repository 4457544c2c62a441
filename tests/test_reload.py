"""SIGHUP against a real Dovecot: a broken rules file never stops the daemon or its old rules.

Issue 9, item 9 and "Tests that prove less than they claim": every way a reload can fail (a
deleted or unreadable file, a file that parses but does not validate, control characters,
deep nesting, an alias bomb) is logged with the reason (file:line when the file has one),
the daemon goes on with the old rules, and a later good reload applies. A schedule change
applies too. A SIGTERM while a reload is loading stops the daemon at once.

"Filed by the old rules" is checked by content (`message_contents`), not by Message-ID.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from mailrules.testing.daemon import DaemonHarness, message_contents, wait_until

FILE_RULES = """\
  - name: file
    match: {subject: msg}
    actions:
      - add_keyword: $Filed
      - move: Done
"""


@pytest.fixture
def harness(dovecot, imap_user, tmp_path):
    made: list[DaemonHarness] = []

    def make(rules: str = FILE_RULES, **kwargs) -> DaemonHarness:
        h = DaemonHarness(dovecot, imap_user, tmp_path / f"d{len(made)}", rules=rules, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def deliver(imap, make_message, subject: str, folder: str = "INBOX") -> str:
    """APPEND one message; the SHA-256 digest of its content (as `message_contents` counts it)."""
    import hashlib

    raw = make_message(subject=subject)
    imap.append(folder, raw)
    return hashlib.sha256(raw).hexdigest()


def wait_in(imap, folder: str, digest: str) -> None:
    wait_until(lambda: message_contents(imap, folder)[digest] >= 1, 30, message=f"the message in {folder}")


def started(harness, rules: str = FILE_RULES) -> DaemonHarness:
    daemon = harness(rules)
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    return daemon


def criteria_bomb(levels: int = 9, width: int = 9) -> str:
    """Valid criteria that alias each other: `levels` nested any: of `width` (9**9 leaves)."""
    expr = "&c0 {subject: x}"
    for n in range(1, levels + 1):
        expr = f"&c{n} {{any: [{expr}, " + ", ".join([f"*c{n - 1}"] * (width - 1)) + "]}"
    return expr


def _unreadable(daemon: DaemonHarness) -> None:
    if os.geteuid() == 0:
        pytest.skip("needs a user other than root (root reads a file of mode 000)")
    daemon.config.chmod(0)


BROKEN = {
    # name: (how the file is broken, what the error log line must contain: a regex)
    "deleted": (lambda d: d.config.unlink(), r"rules\.yaml: cannot read the rules file: No such file"),
    "a directory": (
        lambda d: (d.config.unlink(), d.config.mkdir()),
        r"rules\.yaml: cannot read the rules file: it is a directory",
    ),
    "unreadable": (_unreadable, r"rules\.yaml: cannot read the rules file: Permission denied"),
    "fails validation": (
        lambda d: d.write_rules(FILE_RULES.replace("move: Done", "fly: Done")),
        r"rules\.yaml:\d+:\d+: rule 'file': actions: unknown action 'fly'",
    ),
    "a control character": (
        lambda d: d.write_rules(FILE_RULES.replace("msg", "m\x01sg")),
        r"rules\.yaml:\d+:\d+: invalid YAML: control character U\+0001",
    ),
    "deep nesting": (
        lambda d: d.write_rules(FILE_RULES.replace("{subject: msg}", "{not: " * 1000 + "{subject: x}" + "}" * 1000)),
        r"rules\.yaml:\d+:\d+: invalid YAML: nested more than",
    ),
    "an alias bomb": (
        lambda d: d.write_rules(FILE_RULES.replace("{subject: msg}", criteria_bomb())),
        r"rules\.yaml:\d+:\d+: too large: .* with aliases expanded",
    ),
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_sighup_with_a_broken_file_keeps_the_old_rules_and_logs_why(harness, imap, make_message, how):
    breaks, reason = BROKEN[how]
    daemon = started(harness)
    breaks(daemon)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("the old rules stay in force")
    error = next(line for line in daemon.log().splitlines() if "the old rules stay in force" in line)
    assert re.search(reason, error), error
    digest = deliver(imap, make_message, "msg after the broken reload")
    wait_in(imap, "Done", digest)  # the old rules still file it
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()
    assert message_contents(imap, "Done") == {digest: 1}
    assert not message_contents(imap, "INBOX")


def test_a_good_reload_after_a_broken_one_applies_the_new_rules(harness, imap, make_message):
    daemon = started(harness)
    daemon.write_rules(FILE_RULES.replace("msg", "m\x01sg"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("the old rules stay in force")
    daemon.write_rules(FILE_RULES.replace("move: Done", "move: Elsewhere"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: reloaded")
    digest = deliver(imap, make_message, "msg after the good reload")
    wait_in(imap, "Elsewhere", digest)
    assert daemon.stop() == 0
    assert message_contents(imap, "Elsewhere") == {digest: 1}
    assert not message_contents(imap, "Done")


SWEEP_RULES = """\
  - name: tidy old
    match: {subject: old}
    actions:
      - copy: OldCopy
    schedule: {every: 1h}
"""


def test_sighup_with_a_changed_schedule_sweeps_on_the_new_one(harness, imap, make_message):
    old = [deliver(imap, make_message, f"old {i}") for i in range(3)]
    daemon = started(harness, SWEEP_RULES)  # never swept before: the first sweep is an hour away
    daemon.write_rules(SWEEP_RULES.replace("{every: 1h}", "{every: 1s}"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: reloaded")
    daemon.wait_for_log(r"sweep every:1: 3 messages")
    assert daemon.stop() == 0
    assert daemon.count(r"sweep every:3600") == 0
    assert message_contents(imap, "OldCopy") == {digest: 1 for digest in old}


def test_sigterm_while_a_reload_is_loading_stops_the_daemon_at_once(harness):
    """The load runs beside the main loop: a large file still loading does not delay SIGTERM."""
    daemon = started(harness)
    many = "".join(f"  - {{name: r{n}, match: {{subject: x{n}}}, actions: [flag]}}\n" for n in range(50_000))
    daemon.write_rules(FILE_RULES + many)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("SIGHUP: loading")
    assert daemon.stop() == 0
    log = daemon.log()
    assert "SIGTERM: the reload of the rules file under way is abandoned" in log
    assert "SIGHUP: reloaded" not in log


def test_a_rules_file_replaced_by_a_fifo_does_not_block_the_reload(harness, imap, make_message):
    daemon = started(harness)
    daemon.config.unlink()
    os.mkfifo(daemon.config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("the old rules stay in force")
    assert "it is a named pipe" in daemon.log()
    digest = deliver(imap, make_message, "msg after the fifo")
    wait_in(imap, "Done", digest)
    assert daemon.stop() == 0
