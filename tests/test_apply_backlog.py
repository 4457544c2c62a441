"""The issue's "done when": on a 5,000-message mailbox with the 12 benchmark rules (moves, copies,
flags, keywords) plus a copy to another account, where some messages already carry the flags and
keywords the rules set, `apply --yes` then `undo --last --yes` leaves every mailbox of both
accounts exactly as before, counted by content (folder, SHA-256 of the whole message, flags and
keywords). Slow (about a minute); prints the times of apply and undo.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from test_undo_crash import contents

from mailrules.testing.daemon import DaemonHarness

REPO = Path(__file__).resolve().parents[1]
N = 5000


def bench_rules() -> str:
    text = (REPO / "bench" / "rules.yaml").read_text()
    rules = text[text.index("rules:\n") + len("rules:\n"):]
    return rules + """\
  - name: backup security
    match: {header: {List-Id: security.lists.example.org}}
    actions: [{copy: "other:Backup"}]
"""


@pytest.mark.slow
def test_apply_then_undo_last_on_5000_messages_leaves_both_accounts_as_before(dovecot, tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import generate

    messages = generate.generate(N)
    user, other = dovecot.add_user(), dovecot.add_user()
    dovecot.deliver_files(user, "INBOX", [m.data for m in messages])
    client, other_client = dovecot.client(user), dovecot.client(other)
    client.select_folder("INBOX")
    uids = client.search(["ALL"])
    client.add_flags(uids[::7], ["\\Flagged", "$Dev", "$CIFailed"])  # already what some rules set
    client.add_flags(uids[::5], ["\\Seen"])
    other_client.create_folder("Backup")
    before = (contents(client), contents(other_client))
    harness = DaemonHarness(dovecot, user, tmp_path / "d", rules="")
    harness.write_rules("", raw=(
        "version: 1\naccounts:\n"
        f"  t: {{host: 127.0.0.1, port: {dovecot.port}, tls: none, username: {user.name}, "
        "password_env: MAILRULES_TEST_PASSWORD}\n"
        f"  other: {{host: 127.0.0.1, port: {dovecot.port}, tls: none, username: {other.name}, "
        "password_env: OTHER_PW, watch: [Nothing]}\n"
        "rules:\n" + bench_rules()))
    env = harness.env()
    env["OTHER_PW"] = other.password
    harness.env = lambda: env  # type: ignore[method-assign]
    started = time.monotonic()
    applied = harness.run("apply", "--account", "t", "--yes", timeout=600)
    apply_seconds = time.monotonic() - started
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert (contents(client), contents(other_client)) != before
    started = time.monotonic()
    undone = harness.run("undo", "--last", "--yes", timeout=600)
    undo_seconds = time.monotonic() - started
    assert undone.returncode == 0, undone.stderr[-2000:]
    print(f"apply {apply_seconds:.1f} s, undo {undo_seconds:.1f} s")
    assert "left alone" not in undone.stdout, undone.stdout[-2000:]
    assert (contents(client), contents(other_client)) == before
