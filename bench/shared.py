"""Shared mailbox at scale: three daemons, 1,000 messages over about a minute, a SIGKILL.

    python bench/shared.py                              # 1,000 messages, 60 s, 3 daemons
    python bench/shared.py --messages 300 --seconds 20 --daemons 2

A private Dovecot, one user; every daemon has its own state directory and the same rules
file with ``shared: true`` (claim_timeout 20s): rule 1 copies every message to Archive and
adds a keyword, rule 2 moves one message in two to Done. A feeder APPENDs the messages at a
steady rate; at a third of the stream daemon 0 gets SIGKILL, at two thirds it is restarted
(same state directory: its journal resumes what it held). After the feeder stops, the
daemons drain; then every message must have been acted on exactly once, counted by content:
Archive holds each message once (two instances acting would copy it twice), Done the moved
half once, INBOX the rest, each marked $MRDone. Prints JSON (timings, per-daemon shares,
takeovers); exit status 1 on a lost or repeated message. Not part of CI.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailrules.claims import DONE  # noqa: E402
from mailrules.testing.daemon import DaemonHarness, message_contents, wait_until  # noqa: E402
from mailrules.testing.dovecot import DovecotServer  # noqa: E402
from mailrules.testing.messages import make_message  # noqa: E402

RULES = """\
  - name: file
    match: {subject: shared}
    actions:
      - copy: Archive
      - add_keyword: $Filed
  - name: away
    match: {subject: away}
    actions:
      - move: Done
"""


def _digests(raws: list[bytes]) -> collections.Counter[str]:
    return collections.Counter(hashlib.sha256(r).hexdigest() for r in raws)


def _undone(client) -> int:
    client.select_folder("INBOX", readonly=True)
    return len(client.search(["UNKEYWORD", DONE]))


def _acted(daemon: DaemonHarness) -> int:
    """Messages copied to Archive by this daemon, from its logs (all its runs)."""
    total = 0
    for log in sorted(daemon.dir.glob("daemon-*.log")):
        text = log.read_text(errors="replace")
        total += len(re.findall(r"Message-ID [^:]*: copy Archive", text))
        total += sum(int(n) for n in re.findall(r": copy Archive: (\d+) messages: ", text))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--daemons", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mailrules-shared-"))
    server = DovecotServer(root / "dovecot").start()
    try:
        user = server.add_user()
        client = server.client(user)
        client.create_folder("Archive")
        daemons = [DaemonHarness(server, user, root / f"d{i}", rules=RULES, shared="true", claim_timeout="20s")
                   for i in range(args.daemons)]
        for d in daemons:
            d.start()
        for d in daemons:
            d.wait_for_log("mailrules daemon started")
        sent: list[bytes] = []
        gap = args.seconds / args.messages
        started = time.monotonic()
        killed_at = restarted_at = None
        for i in range(args.messages):
            raw = make_message(subject=f"shared {i}" + (" away" if i % 2 == 0 else ""), size_padding=200)
            sent.append(raw)
            client.append("INBOX", raw)
            if i == args.messages // 3:
                daemons[0].kill()
                killed_at = time.monotonic() - started
            if i == 2 * args.messages // 3:
                daemons[0].start()
                restarted_at = time.monotonic() - started
            delay = started + (i + 1) * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        fed = time.monotonic() - started
        wait_until(lambda: _undone(client) == 0, 300, interval=0.5, message="every message done")
        drained = time.monotonic() - started
        codes = [d.stop() for d in daemons]
        archive, done, inbox = (message_contents(client, f) for f in ("Archive", "Done", "INBOX"))
        ok = (archive == _digests(sent) and done == _digests(sent[0::2]) and inbox == _digests(sent[1::2])
              and codes == [0] * len(daemons))
        report = {
            "messages": args.messages, "daemons": args.daemons, "fed_s": round(fed, 1),
            "all_done_s": round(drained, 1), "drain_after_feed_s": round(drained - fed, 1),
            "killed_at_s": round(killed_at or 0, 1), "restarted_at_s": round(restarted_at or 0, 1),
            "acted_per_daemon": [_acted(d) for d in daemons],
            "takeovers": sum(len(re.findall("took over the claim", p.read_text(errors="replace")))
                             for d in daemons for p in d.dir.glob("daemon-*.log")),
            "archive_doubles": sum(n - 1 for n in archive.values() if n > 1),
            "archive_missing": len(_digests(sent) - archive), "exit_codes": codes, "ok": ok,
        }
        print(json.dumps(report, indent=2))
        client.logout()
        for d in daemons:
            d.close()
        return 0 if ok else 1
    finally:
        server.stop()
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
