"""NOTIFY's push delay on Dovecot beside IDLE's; and the daemon's arrival-to-action on a non-home mailbox.

    python bench/notify_push.py                  # 30 trials of each
    python bench/notify_push.py --trials 50 --json out.json
    python bench/notify_push.py --rotation       # NOTIFY after Dovecot's list index log rotates

Push delay: two bare clients on a private Dovecot, one IDLEing with mailbox Side selected,
one with ``NOTIFY SET STATUS (mailboxes (Side) (MessageNew))`` and IDLE in the
authenticated state (Side not selected). Each trial APPENDs one message to Side from a
third connection; the time from the APPEND's tagged OK to each client's EXISTS / STATUS
line. Both watch the same APPEND, so the comparison is paired.

Daemon: `mailrules run` watching INBOX and Side (rule: subject "probe" -> move to Done), on
a server that advertises NOTIFY (Side watched by NOTIFY) and on one that does not (Side
gets an IDLE connection of its own). Per trial: APPEND to Side, then the time until the
message's file appears in Done's Maildir (polled every 0.5 ms). Runs alternate.

Rotation (``--rotation``, bare clients only): a NOTIFY client for mailbox A (nothing
selected); another connection toggles \\Seen in mailbox Other until the account's
``dovecot.list.index.log`` is a new file (Dovecot rotates it at 64 KB); then one APPEND to A
and the time until ``* STATUS A`` arrives (40 s at most). Cases: no rotation; after a
rotation; after a rotation with, between the two, a NOOP, a second NOTIFY SET, or NOTIFY NONE
then NOTIFY SET; and a second NOTIFY SET without a rotation. Each case on a fresh NOTIFY
connection; the inotify watches of the Dovecot processes (/proc/PID/fdinfo) are printed
beside the log's inode.

Not part of CI: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
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


SET_A = "NOTIFY SET STATUS (mailboxes (A) (MessageNew MessageExpunge))"
ROTATION_CASES: list[tuple[str, bool, list[str]]] = [
    ("no rotation", False, []),
    ("after a rotation", True, []),
    ("after a rotation, then NOOP", True, ["NOOP"]),
    ("after a rotation, then NOTIFY SET again", True, [SET_A]),
    ("after a rotation, then NOTIFY NONE and NOTIFY SET", True, ["NOTIFY NONE", SET_A]),
    ("no rotation, NOTIFY SET twice", False, [SET_A]),
    ("no rotation, NOTIFY NONE and NOTIFY SET", False, ["NOTIFY NONE", SET_A]),
]


def _watched(log: Path) -> str:
    """Whether an imap process's inotify watch (/proc/PID/fdinfo) is on the log file now, or on the rotated one."""
    inodes: set[int] = set()
    for pid in subprocess.run(["pgrep", "-x", "imap"], capture_output=True, text=True).stdout.split():
        try:
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                inodes |= {int(line.split()[2][4:], 16) for line in text.splitlines() if line.startswith("inotify")}
        except OSError:
            continue
    old = log.with_name(log.name + ".2")
    return (f"watch on the current log: {'yes' if log.stat().st_ino in inodes else 'no'}; "
            f"on the rotated one: {'yes' if old.exists() and old.stat().st_ino in inodes else 'no'}")


def _rotate(server: DovecotServer, user, log: Path) -> None:
    """Toggle \\Seen in Other until Dovecot has put a new dovecot.list.index.log in place."""
    toggler = Raw(server, user)
    toggler.send("s SELECT Other", b"s OK")
    inode = log.stat().st_ino
    n = 0
    while log.stat().st_ino == inode:
        n += 1
        toggler.send(f"t{n} STORE 1 +FLAGS (\\Seen)", f"t{n} OK".encode())
        toggler.send(f"u{n} STORE 1 -FLAGS (\\Seen)", f"u{n} OK".encode())
    toggler.sock.close()


def rotation(server: DovecotServer) -> dict[str, float | None]:
    """Seconds from an APPEND to A until the NOTIFY client hears of it, per case (None: not within 40 s)."""
    user = server.add_user("rot", "benchpw")
    feeder = Raw(server, user)
    for k, name in enumerate(("A", "Other")):
        feeder.send(f"c{k} CREATE {name}", f"c{k} OK".encode())
    raw = make_message(subject="toggled")
    feeder.sock.sendall(b"ap APPEND Other {%d+}\r\n" % len(raw) + raw + b"\r\n")
    feeder.until(b"ap OK")
    log = server.mailbox_path(user) / "dovecot.list.index.log"
    out: dict[str, float | None] = {}
    for k, (label, rotate, between) in enumerate(ROTATION_CASES):
        client = Raw(server, user)
        client.send(f"n {SET_A}", b"n OK")
        if rotate:
            _rotate(server, user, log)
        time.sleep(1.0)  # a notification Dovecot had pending (its 0.5 s timer) fires first
        for j, command in enumerate(between):
            client.send(f"b{j} {command}", f"b{j} OK".encode())
        client.send("i IDLE", b"+ idling\r\n")
        time.sleep(0.2)
        client.buf = b""
        watches = _watched(log)
        raw = make_message(subject=f"case {k}")
        feeder.sock.sendall(b"a%d APPEND A {%d+}\r\n" % (k, len(raw)) + raw + b"\r\n")
        feeder.until(b"a%d OK" % k)
        sent = time.monotonic()
        try:
            client.until(b"* STATUS A", timeout=40.0)
            out[label] = round(time.monotonic() - sent, 3)
        except (TimeoutError, OSError):
            out[label] = None
        print(f"{label}: {out[label]} s ({watches})", flush=True)
        client.sock.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--gap", type=float, default=1.0,
                        help="seconds between trials (Dovecot's 0.5 s notification timer, started by the previous "
                             "trial's own MOVE, shortens the next push when the gap is shorter)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--rotation", action="store_true", help="only NOTIFY after the list index log rotates")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailrules-notify-"))
    if args.rotation:
        with DovecotServer(root / "dovecot").start() as server:
            result = {"rotation_s": rotation(server)}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
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
