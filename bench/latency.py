"""Arrival-to-action latency of the daemon, over the floor of a bare IDLE client; and a burst.

    python bench/latency.py                    # 40 trials, 1,000-message INBOX, burst of 500
    python bench/latency.py --imapfilter       # the same with imapfilter's enter_idle() loop
    python bench/latency.py --trials 100 --json out.json

A private Dovecot gets a user whose INBOX already holds `--mailbox-size` messages (already
processed: the daemon starts with --since-now). The daemon (`mailrules run`, a
subprocess, default settings) has one rule: subject "latency-probe" -> move to Probe.

Latency trial: APPEND one probe message to INBOX; the time until the moved message is
visible in Probe (its file appears in Probe's Maildir, polled every 0.5 ms), minus the
time a bare IDLE client on INBOX takes to see the same APPEND (its EXISTS). Dovecot
delays IDLE pushes by about 0.5 s, so that is the floor; the difference is the daemon's
overhead: waking up, SELECT, SEARCH, journal, MOVE. Target: p50 <= 25 ms.

Burst: `--burst` probe messages APPENDed back to back on one connection; the time until
all of them are in Probe (drain), from the first APPEND and from the last.

Not part of CI: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailrules.testing.daemon import DaemonHarness  # noqa: E402
from mailrules.testing.dovecot import DovecotServer  # noqa: E402
from mailrules.testing.messages import make_message  # noqa: E402

RULES = """\
  - name: probe
    match: {subject: latency-probe}
    actions:
      - move: Probe
"""

IMAPFILTER_LUA = """\
options.timeout = 120
options.info = false
options.expunge = true
options.create = true
options.subscribe = false
options.starttls = false
account = IMAP {{ server = '{host}', port = {port}, username = '{user}', password = '{password}' }}
while true do
  local r = account.INBOX:contain_subject('latency-probe')
  r:move_messages(account['Probe'])
  account.INBOX:enter_idle()
end
"""

TARGET_P50_MS = 25.0
SPACING = 1.0  # seconds between a trial's move and the next APPEND


class IdleClock(threading.Thread):
    """A bare IDLE client on INBOX recording when it sees each EXISTS (the floor)."""

    def __init__(self, server: DovecotServer, user) -> None:
        super().__init__(daemon=True, name="idle-clock")
        self.client = server.client(user, "INBOX", readonly=True)
        self.client.idle()
        self.seen: list[float] = []
        self.cond = threading.Condition()
        self.stopping = False

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001
            print(f"the bare IDLE client failed: {exc!r}", file=sys.stderr)
            raise

    def _run(self) -> None:
        while not self.stopping:
            for resp in self.client.idle_check(timeout=0.2):
                # EXPUNGE too: if the daemon was notified first and already moved the message,
                # this client's first news of the APPEND may be the EXPUNGE
                if len(resp) >= 2 and resp[1] in (b"EXISTS", b"EXPUNGE"):
                    with self.cond:
                        self.seen.append(time.monotonic())
                        self.cond.notify_all()

    def first_after(self, t0: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                later = [t for t in self.seen if t >= t0]
                if later:
                    return later[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the bare IDLE client saw no EXISTS")
                self.cond.wait(left)

    def stop(self) -> None:
        self.stopping = True
        self.join(2)
        try:
            self.client.idle_done()
            self.client.logout()
        except Exception:  # noqa: BLE001
            pass


def _count(dirs: list[Path]) -> int:
    n = 0
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            n += sum(1 for _ in os.scandir(d))
    return n


def _wait_count(dirs: list[Path], n: int, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        if _count(dirs) >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} messages in Probe after {timeout}s")
        time.sleep(0.0005)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="mailrules-latency-"))
    server = DovecotServer(root / "dovecot").start()
    proc = None
    daemon = None
    clock = None
    try:
        user = server.add_user()
        filler = (make_message(subject=f"ordinary mail {i}", size_padding=2000) for i in range(args.mailbox_size))
        server.deliver_files(user, "INBOX", filler)
        client = server.client(user)
        client.create_folder("Probe")
        probe_dirs = [server.mailbox_path(user, "Probe") / sub for sub in ("new", "cur")]

        if args.imapfilter:
            lua = root / "latency.lua"
            lua.write_text(IMAPFILTER_LUA.format(host=server.host, port=server.port, user=user.name,
                                                 password=user.password))
            proc = subprocess.Popen(["imapfilter", "-c", str(lua)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # it logs nothing: give it time to log in and enter IDLE
            tool = "imapfilter"
        else:
            daemon = DaemonHarness(server, user, root / "daemon", rules=RULES, timeout=60, idle_interval=300,
                                   poll_interval=60, reconnect_max=300)
            daemon.start("--since-now")
            daemon.wait_for_log("watching with IDLE")
            tool = "mailrules"
        clock = IdleClock(server, user)
        clock.start()
        time.sleep(0.5)

        floors, overheads, totals = [], [], []
        skipped = 0
        moved = _count(probe_dirs)
        for i in range(args.warmup + args.trials):
            raw = make_message(subject=f"latency-probe {i}")
            t0 = time.monotonic()
            client.append("INBOX", raw)
            t_appended = time.monotonic()
            moved += 1
            t_moved = _wait_count(probe_dirs, moved)
            try:
                t_exists = clock.first_after(t0, timeout=3.0)
            except TimeoutError:
                skipped += 1  # the bare client was told nothing (the message came and went)
                time.sleep(SPACING)
                continue
            if i >= args.warmup:
                floors.append((t_exists - t_appended) * 1000)
                overheads.append((t_moved - t_exists) * 1000)
                totals.append((t_moved - t_appended) * 1000)
            # Dovecot sends IDLE news 0.5 s after the *first* change it noticed: the next APPEND
            # must come well after the last change (the move) or it rides on that timer
            time.sleep(SPACING + 0.2 * ((i * 7919) % 10) / 10)

        burst = {}
        if args.burst:
            t_start = time.monotonic()
            for i in range(args.burst):
                client.append("INBOX", make_message(subject=f"latency-probe burst {i}"))
            t_last = time.monotonic()
            t_drained = _wait_count(probe_dirs, moved + args.burst, timeout=300)
            moved += args.burst
            burst = {
                "messages": args.burst,
                "append_s": round(t_last - t_start, 3),
                "drain_from_first_append_s": round(t_drained - t_start, 3),
                "drain_after_last_append_s": round(t_drained - t_last, 3),
            }
        client.select_folder("INBOX", readonly=True)
        deadline = time.monotonic() + 10  # the last MOVE may still be expunging the source
        while (leftover := len(client.search(["SUBJECT", "latency-probe"]))) and time.monotonic() < deadline:
            time.sleep(0.1)
            client.noop()
        client.logout()
        result = {
            "tool": tool,
            "mailbox_size": args.mailbox_size,
            "trials": len(overheads),
            "skipped": skipped,
            "floor_ms": {"p50": round(statistics.median(floors), 1), "p90": round(_pct(floors, 90), 1)},
            "overhead_ms": {
                "p50": round(statistics.median(overheads), 1),
                "p90": round(_pct(overheads, 90), 1),
                "max": round(max(overheads), 1),
                "min": round(min(overheads), 1),
            },
            "total_ms": {"p50": round(statistics.median(totals), 1), "p90": round(_pct(totals, 90), 1)},
            "burst": burst,
            "left_in_inbox": leftover,
        }
        if daemon is not None:
            result["daemon_exit"] = daemon.stop()
        return result
    finally:
        if clock is not None:
            clock.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if daemon is not None:
            daemon.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mailbox-size", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--imapfilter", action="store_true", help="measure imapfilter's enter_idle() loop instead")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args()
    result = run(args)
    o, f, t = result["overhead_ms"], result["floor_ms"], result["total_ms"]
    print(f"{result['tool']}: {result['trials']} trials ({result['skipped']} without a floor reading), "
          f"INBOX of {result['mailbox_size']} messages")
    print(f"  floor (bare IDLE client sees the APPEND): p50 {f['p50']} ms, p90 {f['p90']} ms")
    print(f"  APPEND -> move visible:                   p50 {t['p50']} ms, p90 {t['p90']} ms")
    print(f"  overhead over the floor:                  p50 {o['p50']} ms, p90 {o['p90']} ms, "
          f"min {o['min']} ms, max {o['max']} ms")
    if result["burst"]:
        b = result["burst"]
        print(f"  burst of {b['messages']}: appended in {b['append_s']} s, all moved {b['drain_from_first_append_s']} s "
              f"after the first APPEND ({b['drain_after_last_append_s']} s after the last)")
    if result["left_in_inbox"]:
        print(f"  ERROR: {result['left_in_inbox']} probe messages were left in INBOX")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    verdict = "meets" if o["p50"] <= TARGET_P50_MS else "misses"
    if result["tool"] == "mailrules":
        print(f"  p50 overhead {o['p50']} ms {verdict} the target of {TARGET_P50_MS:g} ms")
    return 1 if result["left_in_inbox"] else 0


if __name__ == "__main__":
    sys.exit(main())
