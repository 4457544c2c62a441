"""NOTIFY's push delay on Dovecot beside IDLE's; and the daemon's arrival-to-action on a non-home mailbox.

    python bench/notify_push.py                  # 30 trials of each
    python bench/notify_push.py --trials 50 --json out.json

Push delay: two bare clients on a private Dovecot, one IDLEing with mailbox Side selected,
one with ``NOTIFY SET STATUS (mailboxes (Side) (MessageNew))`` and IDLE in the
authenticated state (Side not selected). Each trial APPENDs one message to Side from a
third connection; the time from the APPEND's tagged OK to each client's EXISTS / STATUS
line. Both watch the same APPEND, so the comparison is paired.

Daemon: `mailrules run` watching INBOX and Side (rule: subject "probe" -> move to Done), on
a server that advertises NOTIFY (Side watched by NOTIFY) and on one that does not (Side
gets an IDLE connection of its own). Per trial: APPEND to Side, then the time until the
message's file appears in Done's Maildir (polled every 0.5 ms). Runs alternate.

Not part of CI: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailrules.testing.daemon import DaemonHarness  # noqa: E402
from mailrules.testing.dovecot import DovecotServer  # noqa: E402
from mailrules.testing.messages import make_message  # noqa: E402

RULES = """\
  - name: probe
    match: {subject: probe}
    actions:
      - move: Done
"""
NO_NOTIFY = "IMAP4rev1 LITERAL+ UIDPLUS MOVE IDLE ESEARCH CONDSTORE"


class Raw:
    """A hand-driven IMAP connection (the floor: no library between the socket and the clock)."""

    def __init__(self, server: DovecotServer, user) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.buf = b""
        self.until(b"\r\n")
        self.send(f"a LOGIN {user.name} {user.password}", b"a OK")

    def until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        head, _, self.buf = self.buf.partition(marker)
        return head

    def send(self, command: str, until: bytes) -> bytes:
        self.sock.sendall(command.encode() + b"\r\n")
        return self.until(until)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values) * 1000, 1), "p90_ms": round(_pct(values, 0.9) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1), "n": len(values)}


def push_delays(server: DovecotServer, trials: int, gap: float) -> dict[str, dict[str, float]]:
    user = server.add_user()
    setup = server.client(user)
    setup.create_folder("Side")
    idle = Raw(server, user)
    idle.send("s SELECT Side", b"s OK")
    idle.send("i IDLE", b"+ idling\r\n")
    notify = Raw(server, user)
    notify.send("n NOTIFY SET STATUS (mailboxes (Side) (MessageNew))", b"n OK")
    notify.send("i IDLE", b"+ idling\r\n")
    out: dict[str, list[float]] = {"IDLE": [], "NOTIFY": []}
    for k in range(trials):
        setup.append("Side", make_message(subject=f"push {k}"))
        appended = time.monotonic()
        idle.until(b" EXISTS\r\n")
        out["IDLE"].append(time.monotonic() - appended)
        notify.until(b"* STATUS ")
        notify.until(b"\r\n")
        out["NOTIFY"].append(time.monotonic() - appended)
        time.sleep(gap)
    setup.logout()
    return {k: _summary(v) for k, v in out.items()}


def daemon_latency(server: DovecotServer, root: Path, trials: int, label: str, gap: float) -> list[float]:
    user = server.add_user()
    setup = server.client(user)
    for folder in ("Side", "Done"):
        setup.create_folder(folder)
    h = DaemonHarness(server, user, root / label, rules=RULES, watch=["INBOX", "Side"])
    h.start("--since-now")
    h.wait_for_log("watching Side with NOTIFY" if label == "NOTIFY" else "mailbox Side: watching with IDLE")
    time.sleep(1.0)
    done = server.mailbox_path(user, "Done")
    out = []
    try:
        for k in range(trials):
            before = _files(done)
            setup.append("Side", make_message(subject=f"probe {k}"))
            appended = time.monotonic()
            while _files(done) <= before:
                if time.monotonic() - appended > 30:
                    raise AssertionError(f"{label}: probe {k} not filed:\n{h.log()[-2000:]}")
                time.sleep(0.0005)
            out.append(time.monotonic() - appended)
            time.sleep(gap)
    finally:
        h.stop()
        setup.logout()
    return out


def _files(maildir: Path) -> int:
    return sum(len(list((maildir / sub).iterdir())) for sub in ("new", "cur") if (maildir / sub).exists())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--gap", type=float, default=1.0,
                        help="seconds between trials (Dovecot's 0.5 s notification timer, started by the previous "
                             "trial's own MOVE, shortens the next push when the gap is shorter)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailrules-notify-"))
    with DovecotServer(root / "dovecot").start() as server, \
            DovecotServer(root / "dovecot-idle", capabilities=NO_NOTIFY).start() as plain:
        result = {"push": push_delays(server, args.trials, args.gap), "gap_s": args.gap}
        print("push delay (server):", json.dumps(result["push"]), flush=True)
        runs: dict[str, list[float]] = {"NOTIFY": [], "IDLE": []}
        for rnd in range(2):  # alternated halves
            for label, srv in (("NOTIFY", server), ("IDLE", plain))[:: 1 if rnd == 0 else -1]:
                runs[label] += daemon_latency(srv, root / f"r{rnd}", args.trials // 2, label, args.gap)
        result["daemon"] = {k: _summary(v) for k, v in runs.items()}
        print("daemon, APPEND to action on Side:", json.dumps(result["daemon"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
