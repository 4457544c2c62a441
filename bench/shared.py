"""Shared mailbox at scale: three daemons, 1,000 messages over about a minute, a SIGKILL.

    python bench/shared.py                              # 1,000 messages, 60 s, 3 daemons
    python bench/shared.py --messages 300 --seconds 20 --daemons 2
    python bench/shared.py --scenario takeover          # SIGKILLs and SIGSTOPs mid-rule
    python bench/shared.py --scenario sweep             # overlapping sweeps every 5 s

Scenario ``takeover``: rule 1 copies to Archive, adds a keyword and copies to Archive2 (a
copy done, a second action pending when a fault lands), claim_timeout 3s, each daemon behind
a proxy adding 10 ms of round trip (so that faults land mid-rule); during the feed, daemons
are in turn SIGKILLed (restarted 2 s later) and SIGSTOPped past claim_timeout (SIGCONT 5 s
later: a paused holder that comes back). Archive and Archive2 must hold each message once.
Scenario ``sweep``: a rule scheduled every 5 s copies to Swept and marks $Swept the messages
without it; the three daemons' sweeps overlap; Swept must hold each message once.

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

import signal  # noqa: E402

from mailrules.claims import done_keyword  # noqa: E402
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


TAKEOVER_RULES = """\
  - name: file
    match: {subject: shared}
    actions:
      - copy: Archive
      - add_keyword: $Filed
      - copy: Archive2
  - name: away
    match: {subject: away}
    actions:
      - move: Done
"""

SWEEP_RULES = """\
  - name: sweep
    schedule: {every: 5s}
    match: {not: {keyword: $Swept}}
    actions:
      - copy: Swept
      - add_keyword: $Swept
"""


def _undone(client) -> int:
    validity = int(client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"])
    return len(client.search(["UNKEYWORD", done_keyword("INBOX", validity)]))


def _unswept(client) -> int:
    client.select_folder("INBOX", readonly=True)
    return len(client.search(["UNKEYWORD", "$Swept"]))


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
    ap.add_argument("--scenario", choices=("kill", "takeover", "sweep"), default="kill")
    args = ap.parse_args()
    if args.scenario != "kill":
        return faults(args)

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


def _fault(daemons: list[DaemonHarness], n: int, events: list[str], elapsed: float) -> None:
    """Fault number n: SIGKILL (restarted 2 s later) or SIGSTOP (SIGCONT 5 s later) of a daemon."""
    d = daemons[n % len(daemons)]
    if n % 2 == 0:
        d.kill()
        events.append(f"{elapsed:.1f}s kill d{n % len(daemons)}")
        time.sleep(2)
        d.start()
    else:
        d.signal(signal.SIGSTOP)
        events.append(f"{elapsed:.1f}s stop d{n % len(daemons)}")
        time.sleep(5)
        d.signal(signal.SIGCONT)


def faults(args) -> int:
    """The takeover and sweep scenarios (see the module docstring)."""
    from mailrules.testing.proxy import TcpProxy

    root = Path(tempfile.mkdtemp(prefix="mailrules-shared-"))
    server = DovecotServer(root / "dovecot").start()
    proxies: list[TcpProxy] = []
    try:
        user = server.add_user()
        client = server.client(user)
        folders = ("Archive", "Archive2") if args.scenario == "takeover" else ("Swept",)
        for f in folders:
            client.create_folder(f)
        daemons = []
        for i in range(args.daemons):
            proxy = TcpProxy(server.host, server.port, delay=0.005).start()
            proxies.append(proxy)
            rules = TAKEOVER_RULES if args.scenario == "takeover" else SWEEP_RULES
            daemons.append(DaemonHarness(server, user, root / f"d{i}", rules=rules, shared="true",
                                         claim_timeout="3s", port=proxy.port))
        for d in daemons:
            d.start()
        for d in daemons:
            d.wait_for_log("mailrules daemon started")
        sent: list[bytes] = []
        gap = args.seconds / args.messages
        started = time.monotonic()
        events: list[str] = []
        every = max(1, args.messages // 6) if args.scenario == "takeover" else 0
        for i in range(args.messages):
            raw = make_message(subject=f"shared {i}" + (" away" if i % 2 == 0 else ""), size_padding=200)
            sent.append(raw)
            client.append("INBOX", raw)
            if every and i % every == every // 2:
                _fault(daemons, i // every, events, time.monotonic() - started)
            delay = started + (i + 1) * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        fed = time.monotonic() - started
        if args.scenario == "takeover":
            wait_until(lambda: _undone(client) == 0, 600, interval=0.5, message="every message done")
        else:
            wait_until(lambda: _unswept(client) == 0, 600, interval=0.5, message="every message swept")
            time.sleep(6)  # one more round of sweeps: they must find nothing left
        drained = time.monotonic() - started
        codes = [d.stop() for d in daemons]
        contents = {f: message_contents(client, f) for f in folders}
        everything = _digests(sent)
        ok = all(c == everything for c in contents.values()) and codes == [0] * len(daemons)
        if args.scenario == "takeover":  # and the moves: each moved message once, the others in INBOX
            moved, inbox = message_contents(client, "Done"), message_contents(client, "INBOX")
            ok = ok and moved == _digests(sent[0::2]) and inbox == _digests(sent[1::2])
        report = {
            "scenario": args.scenario, "messages": args.messages, "daemons": args.daemons, "fed_s": round(fed, 1),
            "all_done_s": round(drained, 1), "faults": events,
            "takeovers": sum(len(re.findall("took over a claim", p.read_text(errors="replace")))
                             for d in daemons for p in d.dir.glob("daemon-*.log")),
            "lost_by_takeover": sum(len(re.findall("taken over by another instance", p.read_text(errors="replace")))
                                    for d in daemons for p in d.dir.glob("daemon-*.log")),
            "duplicated": {f: sum(n - 1 for n in c.values() if n > 1) for f, c in contents.items()},
            "missing": {f: len(everything - c) for f, c in contents.items()}, "exit_codes": codes, "ok": ok,
        }
        print(json.dumps(report, indent=2))
        client.logout()
        for d in daemons:
            d.close()
        return 0 if ok else 1
    finally:
        for proxy in proxies:
            proxy.stop()
        server.stop()
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
