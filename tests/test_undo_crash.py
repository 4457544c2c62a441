"""`undo` killed with SIGKILL midway and run again reverses the run exactly once.

60 messages (a third already flagged) were flagged, given a keyword, copied to Archive and
moved to Done by one pass. The undo runs behind a proxy that slows every command, and is
killed at seeded random moments; `undo RUN --yes` again resumes it from its journal. At the
end every mailbox holds exactly what it held before the pass, counted by content: the multiset
of (folder, SHA-256 of the whole message, flags and keywords).
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time

import pytest

from mailrules.testing.daemon import DaemonHarness, account_by_content, wait_until
from mailrules.testing.proxy import TcpProxy

N = 60
RULES = """\
  - name: file
    match: {subject: batch}
    actions:
      - flag
      - add_keyword: $Filed
      - copy: Archive
      - move: Done
"""


def undo_rows(state) -> int:
    """How far the undo got: its journal's step rows (0 before it began)."""
    try:
        db = sqlite3.connect(f"file:{state / 'state.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT count(*) + coalesce(sum(s.state='done'), 0) FROM step s JOIN run r "
                             "ON r.id=s.run_id WHERE r.kind='undo:1'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


contents = account_by_content  # the multiset by content that "exactly as before" compares


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_undo_killed_midway_and_run_again_restores_every_mailbox_exactly(seed, dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    dovecot.deliver_files(user, "INBOX", [make_message(subject=f"batch {i}", body=f"body {i}\n") for i in range(N)])
    client = dovecot.client(user)
    client.create_folder("Done")
    client.create_folder("Archive")
    client.select_folder("INBOX")
    client.add_flags(client.search(["ALL"])[::3], ["\\Flagged"])
    before = contents(client)
    rng = random.Random(f"undo-crash-{seed}")
    with TcpProxy(dovecot.host, dovecot.port, delay=0.02) as proxy:
        harness = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES, port=proxy.port)
        assert harness.run("run", "--once").returncode == 0
        assert contents(client) != before
        for _ in range(3):
            proc = subprocess.Popen(harness.command("undo", "1", "--yes"), env=harness.env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            steps = rng.randrange(1, 9)  # 4 reversals: intent and done rows (or an intent rewritten)
            wait_until(lambda p=proc, n=steps: undo_rows(harness.state) >= n or p.poll() is not None, timeout=60)
            time.sleep(rng.uniform(0.0, 0.08))
            proc.kill()
            proc.wait()
        final = harness.run("undo", "1", "--yes")
        assert final.returncode == 0 or "undone already" in final.stderr, final.stderr
    assert contents(client) == before
