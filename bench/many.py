"""Many accounts in one process: 100 accounts x 10 watched mailboxes, steady load with kicks, then a burst.

    python bench/many.py                          # 100 x 10, 5 minutes at 10 msg/s, burst of 5,000
    python bench/many.py --duration 60            # quick: one minute of steady load
    python bench/many.py --accounts 10 --duration 30 --burst 500 --idle 20   # smoke run

A private Dovecot (process and client limits raised for ~300 connections) gets `--accounts`
users with INBOX, F1..F9 (all watched) and Done. One `mailrules run` serves them all from one
rules file (rule: subject "many-" -> move to Done). Phases:

1. steady load: `--rate` messages per second APPENDed to random (account, mailbox) for
   `--duration` seconds; every `--kick-every` seconds `doveadm kick` drops the daemon's
   connections of `--kick` random accounts (only the daemon's: the feeder connects from
   127.0.0.2 and the daemon from 127.0.0.1, and the kick names that address);
2. drain, then `--idle` seconds without traffic: the daemon's CPU time over that window;
3. a burst of `--burst` messages over every (account, mailbox), as fast as the feeder goes:
   drain time from the first APPEND and from the last.

Arrival-to-action: from the APPEND's tagged OK to the moved file's appearance in the
account's Done Maildir (inotify on Done/new and Done/cur, no polling), per folder kind: home
(INBOX, the worker's own IDLE) and the others (NOTIFY). The push floor is measured in the
same run by bare clients on a separate account (not the daemon's): IDLE on its INBOX and
NOTIFY STATUS for its F1, a probe every few seconds; "over the floor" subtracts that floor's
median; the same again for the messages of accounts not kicked from 3 s before their APPEND to
their action (`steady_not_kicked`), which shows what the kicks cost. Connections per account: `doveadm who -1` every `--sample-every` seconds (the
daemon's address only), the maximum per account. RSS from /proc. Exactly once: at the end,
per account, Done holds every message sent to that account once (SHA-256 of the content)
and the watched mailboxes are empty. Prints JSON; exit status 1 on a lost or doubled
message, a leftover, or more than `--max-connections` connections for an account.
Not part of CI.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import random
import re
import select
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailrules.testing.daemon import DaemonHarness, content_digest, message_contents  # noqa: E402
from mailrules.testing.dovecot import DovecotServer, User  # noqa: E402
from mailrules.testing.messages import make_message  # noqa: E402

RULES = """\
  - name: many
    match: {subject: many-}
    actions:
      - move: Done
"""
FOLDERS = ["INBOX"] + [f"F{i}" for i in range(1, 10)]
LIMITS = """
default_process_limit = 2000
default_client_limit = 20000
service anvil {
  client_limit = 50000
}
"""
FEEDER_ADDRESS = "127.0.0.2"
DAEMON_ADDRESS = "127.0.0.1"
TOKEN = re.compile(rb"many-(\d+)")
IN_CREATE, IN_MOVED_TO = 0x100, 0x80


class Inotify(threading.Thread):
    """First sighting of each token in any Done Maildir (inotify via libc: no polling, no CPU when idle)."""

    def __init__(self, dirs: dict[Path, str]) -> None:
        super().__init__(daemon=True, name="inotify")
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.wds: dict[int, Path] = {}
        for d in dirs:
            wd = self.libc.inotify_add_watch(self.fd, str(d).encode(), IN_CREATE | IN_MOVED_TO)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {d}")
            self.wds[wd] = d
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            now = time.monotonic()
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                continue
            pos = 0
            while pos < len(data):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16: pos + 16 + length].rstrip(b"\0").decode()
                pos += 16 + length
                self._record(self.wds[wd] / name, now)

    def _record(self, path: Path, now: float) -> None:
        try:
            head = path.read_bytes()[:4096]
        except FileNotFoundError:  # already renamed new -> cur: seen there
            return
        m = TOKEN.search(head)
        if m:
            with self.lock:
                self.seen.setdefault(int(m.group(1)), now)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


class RawClient:
    """A hand-driven IMAP connection from a chosen local address (the feeder; the floor probes)."""

    def __init__(self, server: DovecotServer, user: User, source: str = FEEDER_ADDRESS) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=30, source_address=(source, 0))
        self.buf = b""
        self.n = 0
        self.until(b"\r\n")
        self.command(f"LOGIN {user.name} {user.password}")

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        head, _, self.buf = self.buf.partition(marker)
        return head

    def command(self, text: str, literal: bytes | None = None) -> bytes:
        self.n += 1
        tag = f"c{self.n}"
        if literal is None:
            self.sock.sendall(f"{tag} {text}\r\n".encode())
        else:
            self.sock.sendall(f"{tag} {text} {{{len(literal)}+}}\r\n".encode() + literal + b"\r\n")
        prefix = f"{tag} ".encode()
        while True:
            line = self.until(b"\r\n")
            if line.startswith(prefix):
                break
        if not line[len(prefix):].startswith(b"OK"):
            raise RuntimeError(f"{text.split()[0]}: {line!r}")
        return line

    def discard_pending(self) -> None:
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(30)
        self.buf = b""

    def append(self, mailbox: str, raw: bytes) -> None:
        self.command(f"APPEND {mailbox}", raw)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Feeder:
    """APPENDs numbered messages; one connection per account, from FEEDER_ADDRESS (never kicked)."""

    def __init__(self, server: DovecotServer, users: list[User]) -> None:
        self.server = server
        self.users = users
        self.clients: dict[str, RawClient] = {}
        self.locks = {u.name: threading.Lock() for u in users}
        self.sent: dict[int, tuple[str, str, str, float]] = {}  # token -> (user, mailbox, digest, appended at)
        self.next = 0
        self.lock = threading.Lock()

    def send(self, user: User, mailbox: str) -> None:
        with self.lock:
            token = self.next
            self.next += 1
        raw = make_message(subject=f"many-{token} to {mailbox}", body=f"message {token}\r\n")
        with self.locks[user.name]:
            client = self.clients.get(user.name)
            if client is None:
                client = self.clients[user.name] = RawClient(self.server, user)
            client.append(mailbox, raw)
            at = time.monotonic()
        with self.lock:
            self.sent[token] = (user.name, mailbox, content_digest(raw), at)

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def floor_probe(server: DovecotServer, user: User, stop: threading.Event, out: dict[str, list[float]]) -> None:
    """Bare clients' push delay: IDLE on INBOX and NOTIFY STATUS for F1, one APPEND every ~3 s, alternately."""
    idle = RawClient(server, user, DAEMON_ADDRESS)
    idle.command("SELECT INBOX")
    notify = RawClient(server, user, DAEMON_ADDRESS)
    notify.command("NOTIFY SET STATUS (mailboxes (F1) (MessageNew))")
    for c in (idle, notify):
        c.sock.sendall(b"i IDLE\r\n")
        c.until(b"+ idling\r\n")
    feeder = RawClient(server, user)
    k = 0
    while not stop.wait(3.0 + random.random()):
        which, waiter, marker = ("home", idle, b" EXISTS\r\n") if k % 2 == 0 else ("notify", notify, b"* STATUS ")
        waiter.discard_pending()  # a late second STATUS of the previous trial is not this trial's push
        feeder.append("INBOX" if which == "home" else "F1", make_message(subject=f"floor {k}"))
        at = time.monotonic()
        waiter.until(marker)
        out[which].append(time.monotonic() - at)
        if which == "notify":
            waiter.until(b"\r\n")
        k += 1
    for c in (idle, notify, feeder):
        c.close()


def connections(server: DovecotServer) -> collections.Counter[str]:
    """The daemon's IMAP connections per user, from `doveadm who -1` (the feeder's address left out)."""
    out: collections.Counter[str] = collections.Counter()
    for line in server.doveadm("who", "-1", check=False).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "imap" and parts[-1] == DAEMON_ADDRESS and parts[0] != "floor":
            out[parts[0]] += 1
    return out


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def rules_file(server: DovecotServer, users: list[User]) -> str:
    accounts = "".join(
        f"  {u.name}:\n    host: {server.host}\n    port: {server.port}\n    tls: none\n    username: {u.name}\n"
        f"    password_env: MAILRULES_TEST_PASSWORD\n    watch: [{', '.join(FOLDERS)}]\n"
        for u in users
    )
    return f"version: 1\naccounts:\n{accounts}rules:\n{RULES}"


class Sampler(threading.Thread):
    """Every few seconds: connections per account (max kept) and the daemon's RSS."""

    def __init__(self, server: DovecotServer, pid: int, every: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.server, self.pid, self.every = server, pid, every
        self.max_conn: collections.Counter[str] = collections.Counter()
        self.totals: list[int] = []
        self.rss: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            counts = connections(self.server)
            for name, n in counts.items():
                self.max_conn[name] = max(self.max_conn[name], n)
            self.totals.append(sum(counts.values()))
            self.rss.append(proc_stat(self.pid)[1])


def wait_drained(watch: Inotify, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while watch.count() < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{watch.count()} of {expected} messages acted on after {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic()


def steady(feeder: Feeder, server: DovecotServer, users: list[User], args: argparse.Namespace) -> list[tuple[float, str]]:
    """Phase 1: the steady load with kicks; returns the kicks (monotonic time, account)."""
    kicks: list[tuple[float, str]] = []
    started = time.monotonic()
    next_kick = started + args.kick_every
    k = 0
    while True:
        at = started + k / args.rate
        if at >= started + args.duration:
            break
        time.sleep(max(0.0, at - time.monotonic()))
        feeder.send(random.choice(users), random.choice(FOLDERS))
        k += 1
        if args.kick and time.monotonic() >= next_kick:
            for u in random.sample(users, min(args.kick, len(users))):
                kicks.append((time.monotonic(), u.name))
                server.doveadm("kick", u.name, DAEMON_ADDRESS, check=False)
            next_kick += args.kick_every
    return kicks


def burst(feeder: Feeder, users: list[User], n: int, threads: int = 4) -> tuple[float, float]:
    """Phase 3: `n` messages spread over every (account, mailbox), from `threads` feeder threads."""
    targets = [(u, f) for u in users for f in FOLDERS]
    random.shuffle(targets)
    jobs = [targets[i % len(targets)] for i in range(n)]
    first = time.monotonic()

    def work(part: list[tuple[User, str]]) -> None:
        for user, folder in part:
            feeder.send(user, folder)

    by_account: dict[str, list[tuple[User, str]]] = collections.defaultdict(list)
    for job in jobs:
        by_account[job[0].name].append(job)
    parts: list[list[tuple[User, str]]] = [[] for _ in range(threads)]
    for i, part in enumerate(by_account.values()):  # one account's connection used by one thread only
        parts[i % threads].extend(part)
    pool = [threading.Thread(target=work, args=(p,)) for p in parts]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return first, time.monotonic()


def latencies(feeder: Feeder, watch: Inotify, tokens: set[int], floor: dict[str, float]) -> dict:
    out: dict[str, dict] = {}
    for kind in ("home", "notify"):
        raw = [watch.seen[t] - feeder.sent[t][3] for t in tokens
               if t in watch.seen and (feeder.sent[t][1] == "INBOX") == (kind == "home")]
        over = [v - floor[kind] for v in raw]
        out[kind] = {"n": len(raw), "p50_ms": round(pct(raw, 0.5) * 1000, 1), "p99_ms": round(pct(raw, 0.99) * 1000, 1),
                     "max_ms": round(max(raw, default=0) * 1000, 1),
                     "over_floor_p50_ms": round(pct(over, 0.5) * 1000, 1),
                     "over_floor_p99_ms": round(pct(over, 0.99) * 1000, 1)}
    return out


def unkicked(feeder: Feeder, watch: Inotify, tokens: set[int], kicks: list[tuple[float, str]],
             before: float = 3.0) -> set[int]:
    """The messages whose account was not kicked from `before` s before their APPEND until their action."""
    by_account: dict[str, list[float]] = collections.defaultdict(list)
    for at, name in kicks:
        by_account[name].append(at)
    out = set()
    for t in tokens:
        name, _box, _digest, at = feeder.sent[t]
        end = watch.seen.get(t, float("inf"))
        if not any(at - before <= k <= end for k in by_account.get(name, [])):
            out.add(t)
    return out


def slow_messages(feeder: Feeder, watch: Inotify, tokens: set[int], over: float = 2.0) -> list[dict]:
    """The messages acted on more than `over` seconds after their APPEND (wall-clock times, for the logs)."""
    shift = time.time() - time.monotonic()
    out = []
    for t in sorted(tokens):
        name, box, _digest, at = feeder.sent[t]
        if t in watch.seen and watch.seen[t] - at > over:
            out.append({"token": t, "account": name, "mailbox": box,
                        "appended": time.strftime("%H:%M:%S", time.gmtime(at + shift)) + f".{int((at + shift) % 1 * 1000):03d}",
                        "latency_s": round(watch.seen[t] - at, 2)})
    return out


def verify(server: DovecotServer, users: list[User], feeder: Feeder) -> dict:
    """By content: Done holds each message sent to the account once; the watched mailboxes are empty."""
    expected: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, _box, digest, _at in feeder.sent.values():
        expected[name][digest] += 1
    doubled = missing = extra = left = 0
    for u in users:
        client = server.client(u)
        done = message_contents(client, "Done")
        left += sum(sum(message_contents(client, f).values()) for f in FOLDERS)
        client.logout()
        doubled += sum(n - 1 for n in done.values() if n > 1)
        missing += sum((expected[u.name] - done).values())
        extra += sum((done - expected[u.name]).values())
    return {"doubled": doubled, "missing": missing, "unexpected": extra, "left_in_watched": left}


def setup(server: DovecotServer, n: int) -> list[User]:
    users = [server.add_user(f"acct{i:03d}", "benchpw") for i in range(n)]
    for u in users:
        c = server.client(u)
        for f in [*FOLDERS[1:], "Done"]:
            c.create_folder(f)
        c.logout()
    return users


def inotify_room(accounts: int) -> str | None:
    """Why the run would not measure push latency (too few inotify instances), or None.

    Every Dovecot imap process watches its mailbox with an inotify instance of the mail
    user; past ``fs.inotify.max_user_instances`` (128 by default) Dovecot logs "Inotify
    instance limit ... exceeded, disabling" and those connections learn of new mail only
    every ``mailbox_idle_check_interval`` (30 s): the benchmark would measure that.
    """
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    if not path.exists():
        return None
    have, need = int(path.read_text()), 4 * accounts + 200  # 2 per account, the feeder's, other instances
    if have >= need:
        return None
    return (f"fs.inotify.max_user_instances is {have}; {accounts} accounts need about {need} (Dovecot would "
            f"fall back to checking every 30 s). Raise it first: sysctl -w fs.inotify.max_user_instances=8192")


def main() -> int:  # noqa: PLR0915 - a script's sequence of phases, read top to bottom
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of steady load")
    ap.add_argument("--rate", type=float, default=10.0, help="messages per second in the steady load")
    ap.add_argument("--kick-every", type=float, default=30.0)
    ap.add_argument("--kick", type=int, default=10, help="accounts kicked each time (0: none)")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds without traffic for the idle CPU")
    ap.add_argument("--burst", type=int, default=5000)
    ap.add_argument("--sample-every", type=float, default=2.0)
    ap.add_argument("--max-connections", type=int, default=2, help="the per-account target")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    ap.add_argument("--server-check-interval", type=int, default=0, metavar="S",
                    help="Dovecot's mailbox_idle_check_interval (default: Dovecot's own, 30 s); see bench/README.md")
    ap.add_argument("--rawlog", action="store_true", help="Dovecot keeps a rawlog of every session (with --keep)")
    args = ap.parse_args()
    if (problem := inotify_room(args.accounts)) is not None:
        print(f"many.py: {problem}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="mailrules-many-"))
    rawlog = f"protocol imap {{\n  rawlog_dir = {root}/rawlog/%u\n}}\n" if args.rawlog else ""
    if args.rawlog:  # Dovecot writes a user's rawlog only into a directory that exists
        os.chmod(root, 0o755)
        for name in [f"acct{i:03d}" for i in range(args.accounts)] + ["floor"]:
            (root / "rawlog" / name).mkdir(parents=True)
            os.chmod(root / "rawlog" / name, 0o777)
        os.chmod(root / "rawlog", 0o777)
    check = f"mailbox_idle_check_interval = {args.server_check_interval}s\n" if args.server_check_interval else ""
    server = DovecotServer(root / "dovecot", extra_conf=LIMITS + rawlog + check).start()
    daemon = feeder = watch = sampler = None
    stop = threading.Event()
    try:
        load0 = os.getloadavg()
        users = setup(server, args.accounts)
        floor_user = setup_floor(server)
        daemon = DaemonHarness(server, users[0], root / "daemon", rules="")
        daemon.write_rules("", raw=rules_file(server, users))
        t0 = time.monotonic()
        daemon.start()
        daemon.wait_for_log("watching with IDLE", count=len(users), timeout=300)
        daemon.wait_for_log("watching .* with NOTIFY", count=len(users), timeout=300)
        ready_s = time.monotonic() - t0
        print(f"daemon ready: {len(users)} accounts watched in {ready_s:.1f}s", flush=True)
        watch = Inotify({server.mailbox_path(u, "Done") / sub: u.name for u in users for sub in ("new", "cur")})
        watch.start()
        sampler = Sampler(server, daemon.proc.pid, args.sample_every)
        sampler.start()
        feeder = Feeder(server, users)
        floor: dict[str, list[float]] = {"home": [], "notify": []}
        probe = threading.Thread(target=floor_probe, args=(server, floor_user, stop, floor), daemon=True)
        probe.start()

        kick_log = steady(feeder, server, users, args)
        kicks = len(kick_log)
        steady_tokens = set(feeder.sent)
        wait_drained(watch, len(steady_tokens), 300)
        stop.set()
        probe.join(15)
        floor_p50 = {k: statistics.median(v) if v else 0.5 for k, v in floor.items()}
        steady_lat = latencies(feeder, watch, steady_tokens, floor_p50)
        print("steady:", json.dumps(steady_lat), flush=True)
        calm = unkicked(feeder, watch, steady_tokens, kick_log)
        calm_lat = latencies(feeder, watch, calm, floor_p50)
        print(f"steady, the {len(calm)} messages of accounts not kicked meanwhile:", json.dumps(calm_lat), flush=True)
        slow = slow_messages(feeder, watch, steady_tokens)
        print(f"steady: {len(slow)} messages acted on more than 2 s after their APPEND", flush=True)

        time.sleep(5)  # the last passes' after-effects (re-IDLE, NOTIFY re-arm)
        cpu0, rss_before_idle = proc_stat(daemon.proc.pid)
        time.sleep(args.idle)
        cpu1, rss_idle = proc_stat(daemon.proc.pid)
        print(f"idle: {cpu1 - cpu0:.2f} s CPU over {args.idle:g} s; RSS {rss_idle:.1f} MB", flush=True)

        burst_result = {}
        if args.burst:
            first, last = burst(feeder, users, args.burst)
            drained = wait_drained(watch, len(feeder.sent), 900)
            burst_result = {"messages": args.burst, "append_s": round(last - first, 2),
                            "drain_from_first_s": round(drained - first, 2),
                            "drain_after_last_s": round(drained - last, 2),
                            "latency": latencies(feeder, watch, set(feeder.sent) - steady_tokens, floor_p50)}
            print("burst:", json.dumps(burst_result), flush=True)
        sampler.stop_event.set()
        sampler.join(10)
        cpu_end, rss_end = proc_stat(daemon.proc.pid)
        exit_code = daemon.stop(120)
        feeder.close()
        counts = verify(server, users, feeder)
        over_cap = {n: c for n, c in sampler.max_conn.items() if c > args.max_connections}
        result = {
            "accounts": args.accounts, "mailboxes": args.accounts * len(FOLDERS), "duration_s": args.duration,
            "rate": args.rate, "server_check_interval_s": args.server_check_interval or 30, "steady_messages": len(steady_tokens), "kicks": kicks, "ready_s": round(ready_s, 1),
            "floor_ms": {k: {"p50": round(v * 1000, 1), "n": len(floor[k])} for k, v in floor_p50.items()},
            "steady": steady_lat, "steady_not_kicked": calm_lat, "steady_slow": slow, "idle_cpu_s": round(cpu1 - cpu0, 2), "idle_s": args.idle,
            "rss_mb": {"max": round(max(sampler.rss, default=rss_end), 1), "idle": round(rss_idle, 1),
                       "end": round(rss_end, 1)},
            "daemon_cpu_total_s": round(cpu_end, 1),
            "connections": {"max_per_account": max(sampler.max_conn.values(), default=0),
                            "accounts_over_cap": over_cap, "max_total": max(sampler.totals, default=0)},
            "burst": burst_result, **counts, "daemon_exit": exit_code,
            "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        ok = (counts["doubled"] == counts["missing"] == counts["unexpected"] == counts["left_in_watched"] == 0
              and not over_cap and exit_code == 0)
        result["ok"] = ok
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        stop.set()
        if watch is not None:
            watch.stopping = True
        if sampler is not None:
            sampler.stop_event.set()
        if daemon is not None:
            daemon.close()
        server.stop()
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def setup_floor(server: DovecotServer) -> User:
    user = server.add_user("floor", "benchpw")
    c = server.client(user)
    c.create_folder("F1")
    c.logout()
    return user


if __name__ == "__main__":
    sys.exit(main())
