"""N processes with --shard over one Dovecot: one SIGKILLed and restarted mid-load; every message once.

    python bench/sharded.py                       # 30 accounts, 3 processes, 90 s at 10 msg/s
    python bench/sharded.py --accounts 12 --duration 30

A private Dovecot, `--accounts` users each watching INBOX, F1, F2 (rule: subject "many-" ->
move to Done). `--processes` `mailrules run --shard I/N` processes, each with its own state
directory, the same rules file. A feeder (from 127.0.0.2, see many.py) APPENDs `--rate`
messages per second to random (account, mailbox) for `--duration` seconds; at a third of it
process 0 gets SIGKILL, at two thirds it is restarted (same state directory). Checked:

* every account served by exactly one process at a time: every `--sample-every` seconds,
  `doveadm who -1` counts each account's connections from the daemons' address (two
  processes serving one account would hold 3-4; the cap is 2), and every process's logs
  (all its runs) name only accounts of its own shard (`mailrules.daemon.shard.shard_of`);
* every message acted on once, by content: Done holds each message sent to the account
  once, the watched mailboxes are empty;
* arrival-to-action (inotify, as many.py) for the accounts of the killed shard and the others,
  and the drain after the feed.

Prints JSON; exit status 1 on any violation. Not part of CI.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from many import LIMITS, Feeder, Inotify, connections, pct, verify, wait_drained  # noqa: E402

from mailrules.daemon.shard import shard_of  # noqa: E402
from mailrules.testing.daemon import DaemonHarness  # noqa: E402
from mailrules.testing.dovecot import DovecotServer, User  # noqa: E402

FOLDERS = ["INBOX", "F1", "F2"]
RULES = """\
  - name: many
    match: {subject: many-}
    actions:
      - move: Done
"""


def rules_file(server: DovecotServer, users: list[User]) -> str:
    accounts = "".join(
        f"  {u.name}:\n    host: {server.host}\n    port: {server.port}\n    tls: none\n    username: {u.name}\n"
        f"    password_env: MAILRULES_TEST_PASSWORD\n    watch: [{', '.join(FOLDERS)}]\n"
        for u in users
    )
    return f"version: 1\naccounts:\n{accounts}rules:\n{RULES}"


class ConnectionWatch(threading.Thread):
    """Samples each account's connections; records every sample where one exceeds `cap`."""

    def __init__(self, server: DovecotServer, every: float, cap: int) -> None:
        super().__init__(daemon=True, name="connections")
        self.server, self.every, self.cap = server, every, cap
        self.max_conn: collections.Counter[str] = collections.Counter()
        self.violations: list[tuple[float, str, int]] = []
        self.samples = 0
        self.stop_event = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            self.samples += 1
            for name, n in connections(self.server).items():
                self.max_conn[name] = max(self.max_conn[name], n)
                if n > self.cap:
                    self.violations.append((round(time.monotonic() - self.started, 1), name, n))


def foreign_accounts(daemon: DaemonHarness, index: int, count: int, names: set[str]) -> set[str]:
    """Accounts named in this process's logs (every run) that belong to another shard."""
    seen: set[str] = set()
    for log in daemon.dir.glob("daemon-*.log"):
        seen |= set(re.findall(r"account (\S+?)[:,]? ", log.read_text(errors="replace"))) & names
    return {a for a in seen if shard_of(a, count) != index}


def main() -> int:  # noqa: PLR0915 - a script's sequence of phases, read top to bottom
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=30)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--sample-every", type=float, default=1.0)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailrules-sharded-"))
    server = DovecotServer(root / "dovecot", extra_conf=LIMITS).start()
    daemons: list[DaemonHarness] = []
    watch = conns = None
    try:
        load0 = os.getloadavg()
        users = [server.add_user(f"acct{i:03d}", "benchpw") for i in range(args.accounts)]
        for u in users:
            c = server.client(u)
            for f in [*FOLDERS[1:], "Done"]:
                c.create_folder(f)
            c.logout()
        names = {u.name for u in users}
        text = rules_file(server, users)
        shares = collections.Counter(shard_of(n, args.processes) for n in names)
        for i in range(args.processes):
            d = DaemonHarness(server, users[0], root / f"d{i}", rules="")
            d.write_rules("", raw=text)
            daemons.append(d)
            d.start("--shard", f"{i}/{args.processes}")
        for i, d in enumerate(daemons):
            d.wait_for_log("watching with IDLE", count=shares[i], timeout=120)
            d.wait_for_log("watching .* with NOTIFY", count=shares[i], timeout=120)
        watch = Inotify({server.mailbox_path(u, "Done") / sub: u.name for u in users for sub in ("new", "cur")})
        watch.start()
        conns = ConnectionWatch(server, args.sample_every, 2)
        conns.start()
        feeder = Feeder(server, users)
        started = time.monotonic()
        killed_at = restarted_at = None
        k = 0
        while (at := started + k / args.rate) < started + args.duration:
            time.sleep(max(0.0, at - time.monotonic()))
            feeder.send(random.choice(users), random.choice(FOLDERS))
            k += 1
            now = time.monotonic() - started
            if killed_at is None and now >= args.duration / 3:
                daemons[0].kill()
                killed_at = now
            if restarted_at is None and now >= 2 * args.duration / 3:
                daemons[0].start("--shard", f"0/{args.processes}")
                restarted_at = now
        fed = time.monotonic()
        drained = wait_drained(watch, len(feeder.sent), 300)
        conns.stop_event.set()
        conns.join(5)
        codes = [d.stop(60) for d in daemons]
        feeder.close()
        counts = verify(server, users, feeder)
        foreign = {i: sorted(foreign_accounts(d, i, args.processes, names)) for i, d in enumerate(daemons)}
        lat: dict[str, list[float]] = {"killed shard": [], "other shards": []}
        for token, (name, _box, _digest, at) in feeder.sent.items():
            kind = "killed shard" if shard_of(name, args.processes) == 0 else "other shards"
            lat[kind].append(watch.seen[token] - at)
        result = {
            "accounts": args.accounts, "processes": args.processes, "accounts_per_shard": dict(sorted(shares.items())),
            "messages": len(feeder.sent), "duration_s": args.duration,
            "killed_at_s": round(killed_at or 0, 1), "restarted_at_s": round(restarted_at or 0, 1),
            "drain_after_feed_s": round(drained - fed, 2),
            "latency_ms": {k: {"n": len(v), "p50": round(pct(v, 0.5) * 1000, 1), "p99": round(pct(v, 0.99) * 1000, 1),
                               "max": round(max(v, default=0) * 1000, 1)} for k, v in lat.items()},
            "connection_samples": conns.samples, "max_connections_per_account": max(conns.max_conn.values(), default=0),
            "over_cap_samples": conns.violations[:20], "foreign_accounts_in_logs": foreign,
            **counts, "exit_codes": codes,
            "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        ok = (counts["doubled"] == counts["missing"] == counts["unexpected"] == counts["left_in_watched"] == 0
              and not conns.violations and not any(foreign.values()) and codes == [0] * len(daemons))
        result["ok"] = ok
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        if watch is not None:
            watch.stopping = True
        if conns is not None:
            conns.stop_event.set()
        for d in daemons:
            d.close()
        server.stop()
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
