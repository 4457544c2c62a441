"""Soak: the daemon under steady arrivals and random `doveadm kick`s for minutes; RSS stays flat.

    python bench/soak.py                      # 5 minutes, 5 messages/s, a kick every ~30 s
    python bench/soak.py --minutes 30 --rate 20 --kick-every 10

A private Dovecot, one user watching INBOX and Side (two IDLE connections), one rule
(keyword + copy to Archive + move to Done). A feeder APPENDs messages at a steady rate,
alternating between the two mailboxes; a kicker drops every connection of the user at
random (exponential) intervals. The daemon's RSS, open file descriptors and threads are
sampled every few seconds from /proc. At the end the feeder stops, the daemon drains,
gets SIGTERM, and every message must have been acted on exactly once.

The verdict: RSS is flat if the median of the last third of the samples is within
10 % + 2 MB of the median of the second third (the first third is warm-up); descriptors
and threads must not grow. Exit status 1 on a lost or repeated message or growth.
Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailrules.testing.daemon import DaemonHarness, message_ids, wait_until  # noqa: E402
from mailrules.testing.dovecot import DovecotServer  # noqa: E402
from mailrules.testing.messages import make_message  # noqa: E402

RULES = """\
  - name: soak
    match: {subject: soak}
    actions:
      - add_keyword: $Soaked
      - copy: Archive
      - move: Done
"""


def _proc_stats(pid: int) -> dict[str, int]:
    out = {"rss_kb": 0, "threads": 0, "fds": 0}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second")
    parser.add_argument("--kick-every", type=float, default=30.0, help="mean seconds between kicks (0: none)")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mailrules-soak-"))
    server = DovecotServer(root / "dovecot").start()
    stop = threading.Event()
    sent: list[str] = []
    attempted: set[str] = set()
    kicks = 0
    samples: list[dict] = []
    daemon = None
    try:
        user = server.add_user()
        setup = server.client(user)
        for folder in ("Side", "Done", "Archive"):
            setup.create_folder(folder)
        setup.logout()
        daemon = DaemonHarness(server, user, root / "daemon", rules=RULES, watch=["INBOX", "Side"], timeout=10,
                               idle_interval=60, poll_interval=30, reconnect_max=5)
        daemon.start()
        daemon.wait_for_log("watching Side with NOTIFY")  # Dovecot advertises NOTIFY
        pid = daemon.proc.pid

        def feeder() -> None:
            client = None
            interval = 1.0 / args.rate
            next_at = time.monotonic()
            i = 0
            while not stop.is_set():
                try:
                    if client is None:
                        client = server.client(user)
                    raw = make_message(subject=f"soak {i}", size_padding=random.randrange(0, 20000))
                    mid = raw.split(b"Message-ID:", 1)[1].split(b"\r\n", 1)[0].strip().decode()
                    attempted.add(mid)  # a kick may cut the answer to an APPEND that worked
                    client.append("INBOX" if i % 2 == 0 else "Side", raw)
                    sent.append(mid)
                    i += 1
                except Exception:  # noqa: BLE001 - kicked: reconnect (an APPEND that failed is simply resent)
                    client = None
                    continue
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
            if client is not None:
                client.logout()

        def kicker() -> None:
            nonlocal kicks
            while args.kick_every > 0 and not stop.wait(random.expovariate(1.0 / args.kick_every)):
                server.kick(user)
                kicks += 1

        threads = [threading.Thread(target=feeder, daemon=True), threading.Thread(target=kicker, daemon=True)]
        for t in threads:
            t.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            stats = _proc_stats(pid)
            stats["t"] = round(time.monotonic() - started, 1)
            stats["sent"] = len(sent)
            samples.append(stats)
            print(f"t={stats['t']:7.1f}s sent={stats['sent']:6d} rss={stats['rss_kb'] / 1024:6.1f} MB "
                  f"fds={stats['fds']:3d} threads={stats['threads']:2d} kicks={kicks}", flush=True)
            time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
        stop.set()
        for t in threads:
            t.join(30)

        client = server.client(user)
        wait_until(lambda: sum(message_ids(client, "Done").values()) >= len(sent), 300, interval=1.0,
                   message="the daemon to drain")
        exit_code = daemon.stop()
        done, archived = message_ids(client, "Done"), message_ids(client, "Archive")
        left = sum(message_ids(client, "INBOX").values()) + sum(message_ids(client, "Side").values())
        client.logout()
        exactly_once = (
            all(v == 1 for v in done.values()) and all(v == 1 for v in archived.values())
            and set(sent) <= set(done) <= attempted and set(done) == set(archived) and left == 0
        )

        n = len(samples)
        warm, tail = samples[n // 3: 2 * n // 3] or samples, samples[2 * n // 3:] or samples
        rss_warm = statistics.median(s["rss_kb"] for s in warm) / 1024
        rss_tail = statistics.median(s["rss_kb"] for s in tail) / 1024
        flat = rss_tail <= rss_warm * 1.10 + 2.0
        fds_ok = max(s["fds"] for s in tail) <= max(s["fds"] for s in warm) + 2
        threads_ok = max(s["threads"] for s in tail) <= max(s["threads"] for s in warm)
        result = {
            "minutes": args.minutes, "messages": len(sent), "kicks": kicks, "daemon_exit": exit_code,
            "exactly_once": exactly_once, "duplicates_done": sum(v - 1 for v in done.values() if v > 1),
            "duplicates_archive": sum(v - 1 for v in archived.values() if v > 1),
            "missing": len(set(sent) - set(done)), "left_in_watched": left,
            "rss_mb": {"warm_median": round(rss_warm, 1), "tail_median": round(rss_tail, 1),
                       "max": round(max(s["rss_kb"] for s in samples) / 1024, 1)},
            "fds": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)],
            "threads": [min(s["threads"] for s in samples), max(s["threads"] for s in samples)],
            "rss_flat": flat, "fds_flat": fds_ok, "threads_flat": threads_ok,
        }
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps({**result, "samples": samples}, indent=2) + "\n")
        ok = exactly_once and flat and fds_ok and threads_ok and exit_code == 0
        print("soak: OK" if ok else "soak: FAILED")
        return 0 if ok else 1
    finally:
        stop.set()
        if daemon is not None:
            daemon.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
