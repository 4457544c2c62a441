"""`apply` killed with SIGKILL midway and run again ends exactly as an uninterrupted apply.

The same 60 messages (a third already flagged) are put in two accounts. One gets a plain
`apply --yes`; the other's apply runs behind a slow proxy, is killed at a seeded random
journal step, and `apply --yes` again finishes the interrupted run from its journal. Both
accounts then hold the same multiset of (folder, SHA-256 of the whole message, flags and keywords).
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time

import pytest
from test_undo_crash import RULES, contents

from mailrules.testing.daemon import DaemonHarness, wait_until
from mailrules.testing.proxy import TcpProxy

N = 60


def apply_rows(state) -> tuple[int, bool]:
    """How far the apply got (its journal's step rows) and whether its run finished."""
    try:
        db = sqlite3.connect(f"file:{state / 'state.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            steps = db.execute("SELECT count(*) FROM step s JOIN run r ON r.id=s.run_id "
                               "WHERE r.kind LIKE 'apply%' AND s.state!='plan'").fetchone()[0]
            done = db.execute("SELECT count(*) FROM run WHERE kind='apply' AND finished IS NOT NULL").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0, False
    return int(steps), bool(done)


def prepared(dovecot, raws):
    user = dovecot.add_user()
    dovecot.deliver_files(user, "INBOX", raws)
    client = dovecot.client(user)
    client.select_folder("INBOX")
    client.add_flags(client.search(["ALL"])[::3], ["\\Flagged"])
    return user, client


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_apply_killed_midway_and_run_again_ends_as_an_uninterrupted_apply(seed, dovecot, tmp_path, make_message):
    raws = [make_message(subject=f"batch {i}", body=f"body {i}\n") for i in range(N)]
    reference, reference_client = prepared(dovecot, raws)
    assert DaemonHarness(dovecot, reference, tmp_path / "ref", rules=RULES).run("apply", "--yes").returncode == 0
    user, client = prepared(dovecot, raws)
    rng = random.Random(f"apply-crash-{seed}")
    with TcpProxy(dovecot.host, dovecot.port, delay=0.02) as proxy:
        harness = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES, port=proxy.port)
        proc = subprocess.Popen(harness.command("apply", "--yes"), env=harness.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        steps = rng.randrange(1, 6)
        wait_until(lambda: apply_rows(harness.state)[0] >= steps or proc.poll() is not None, timeout=60)
        time.sleep(rng.uniform(0.0, 0.08))
        proc.kill()
        proc.wait()
        if not apply_rows(harness.state)[1]:
            again = harness.run("apply", "--yes")
            assert again.returncode == 0, again.stderr
    assert contents(client) == contents(reference_client)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_an_apply_killed_midway_and_finished_is_undone_exactly(seed, dovecot, tmp_path, make_message):
    raws = [make_message(subject=f"batch {i}", body=f"body {i}\n") for i in range(N)]
    user, client = prepared(dovecot, raws)
    client.create_folder("Done")
    client.create_folder("Archive")
    before = contents(client)
    rng = random.Random(f"apply-undo-crash-{seed}")
    with TcpProxy(dovecot.host, dovecot.port, delay=0.02) as proxy:
        harness = DaemonHarness(dovecot, user, tmp_path / "d", rules=RULES, port=proxy.port)
        proc = subprocess.Popen(harness.command("apply", "--yes"), env=harness.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        steps = rng.randrange(1, 6)
        wait_until(lambda: apply_rows(harness.state)[0] >= steps or proc.poll() is not None, timeout=60)
        time.sleep(rng.uniform(0.0, 0.08))
        proc.kill()
        proc.wait()
        if not apply_rows(harness.state)[1]:
            assert harness.run("apply", "--yes").returncode == 0
        undone = harness.run("undo", "--last", "--yes")
        assert undone.returncode == 0, undone.stderr
    assert contents(client) == before, undone.stdout
