"""Crash safety: SIGKILL the daemon at many points of a large batch; nothing is lost or repeated.

200 messages wait in INBOX; one rule gives each a keyword, copies it to Archive and moves
it to Done. The daemon runs behind a proxy that slows every command a little, takes the
backlog in slices of 25 (so the checkpoint advances many times), and is killed with
SIGKILL at ten points chosen by a seeded random generator: right after a given number of
per-message log lines, or a few milliseconds after logging in (when an interrupted pass
is being resumed and verified). It is restarted until the work is done, and then every
message must have been acted on exactly once: one copy in Archive (no duplicate from a
repeated COPY), one message in Done (no lost move), the keyword on every one. Messages
are counted by a digest of their whole content: some of them share a Message-ID (resent
mail) and some have none, so that a check by Message-ID could not see their losses.

Run for MOVE and for servers without MOVE (COPY + STORE \\Deleted + UID EXPUNGE). Set
MAILRULES_CRASH_SEED to explore other kill points.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import re
import time

import pytest

from mailrules.testing.daemon import DaemonHarness, message_contents, message_ids, wait_until
from mailrules.testing.proxy import TcpProxy

N_MESSAGES = 200
KILLS = 10

RULES = """\
  - name: file
    match: {subject: batch}
    actions:
      - add_keyword: $Filed
      - copy: Archive
      - move: Done
"""

NO_MOVE = "IMAP4rev1 LITERAL+ UIDPLUS NAMESPACE ESEARCH IDLE"


def _done(client) -> bool:
    return not message_ids(client, "INBOX") and sum(message_ids(client, "Done").values()) >= N_MESSAGES


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["move", "copy-store-expunge"])
def test_sigkill_at_many_points_acts_on_every_message_exactly_once(variant, dovecot, dovecot_factory, tmp_path,
                                                                     make_message):
    server = dovecot if variant == "move" else dovecot_factory(capabilities=NO_MOVE)
    user = server.add_user()
    batch = [_generated(make_message, i) for i in range(N_MESSAGES)]
    server.deliver_files(user, "INBOX", batch)
    expected = collections.Counter(hashlib.sha256(raw).hexdigest() for raw in batch)
    assert len(expected) == N_MESSAGES
    rng = random.Random(f"crash-{variant}-{os.environ.get('MAILRULES_CRASH_SEED', '')}")
    client = server.client(user)

    with TcpProxy(server.host, server.port, delay=0.002) as proxy:
        daemon = DaemonHarness(server, user, tmp_path / "daemon", rules=RULES, port=proxy.port)
        env = {"MAILRULES_CATCHUP_BATCH": "25"}
        try:
            kills = 0
            for _ in range(KILLS):
                daemon.start(env=env)
                if rng.random() < 0.3:
                    # soon after login: an interrupted pass is being resumed and verified
                    daemon.wait_for_log("logged in")
                    time.sleep(rng.uniform(0.0, 0.06))
                else:
                    # a slice is 25 messages x 3 actions = 75 message-actions (3 log lines)
                    if not _wait_lines_or_done(daemon, client, rng.randrange(1, 90)):
                        daemon.kill()
                        break  # all done before this kill point
                    time.sleep(rng.uniform(0.0, 0.015))
                daemon.kill()
                kills += 1
            daemon.start(env=env)
            daemon.wait_for_log("mailrules daemon started")
            wait_until(lambda: _done(client), 120, interval=0.1, message="the batch to be filed")
            assert daemon.stop() == 0
        finally:
            daemon.close()

    assert kills >= KILLS // 2
    assert message_contents(client, "Archive") == expected  # no duplicate copy, none missing
    assert message_contents(client, "Done") == expected  # no lost move
    assert not message_contents(client, "INBOX")
    assert _without_keyword(client, "Done", "$Filed") == []
    assert _without_keyword(client, "Archive", "$Filed") == []  # the keyword came before the copy
    status = daemon.run("status")
    assert "given up 0" in status.stdout and "pending 0" in status.stdout, status.stdout
    client.logout()


def _acted(daemon: DaemonHarness) -> int:
    """Message-actions logged so far: a line names one message, or 'N messages: ...'."""
    text = daemon.log()
    single = len(re.findall(r"Message-ID [^:]*: ", text))
    return single + sum(int(n) for n in re.findall(r": (\d+) messages: ", text))


def _wait_lines_or_done(daemon: DaemonHarness, client, lines: int) -> bool:
    """Wait for `lines` logged message-actions (True), or for the work to be finished (False)."""
    next_check = time.monotonic() + 0.5

    def check():
        nonlocal next_check
        if _acted(daemon) >= lines:
            return "reached"
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"the daemon exited on its own:\n{daemon.log()[-3000:]}")
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 0.5
            if _done(client):
                return "done"
        return None

    return wait_until(check, 60, interval=0.002, message=f"{lines} log lines") == "reached"


def _generated(make_message, i: int) -> bytes:
    """Message `i` of the batch: one in five shares a Message-ID with others, one in seven has none."""
    if i % 7 == 0:
        return make_message(subject=f"batch {i}", size_padding=200, headers={"Message-ID": None})
    if i % 5 == 0:
        return make_message(subject=f"batch {i}", size_padding=200, message_id="<resent@batch.example>")
    return make_message(subject=f"batch {i}", size_padding=200)


def _without_keyword(client, folder: str, keyword: str) -> list[int]:
    """UIDs of the messages in `folder` that lack `keyword`."""
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    flags = client.get_flags(uids) if uids else {}
    return sorted(uid for uid, fl in flags.items()
                  if keyword not in {f.decode() if isinstance(f, bytes) else f for f in fl})
