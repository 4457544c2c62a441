"""The benchmark: mailrules vs imapfilter vs a bare IMAPClient script on the same Dovecot mailbox.

    python bench/run.py                       # everything: 10,000 messages, 3 repetitions
    python bench/run.py --quick               # a smoke run: 1,000 / 200 messages, 1 repetition
    python bench/run.py --tools imapfilter,bare --scenarios a,b

For every scenario, repetition and tool (the order rotates each repetition), a fresh user
gets the same generated mailbox (bench/generate.py, written as Maildir files by the test
kit, not APPENDed); the tool runs as a child process, timed (wall clock) and measured (peak
RSS, by /usr/bin/time); then the final state of every folder of that user
(Message-ID and flags, keywords included, \\Recent excluded) is read back and compared
with the reference (the first imapfilter run; without imapfilter, the first run). Any
difference is printed and makes the command exit 1.

Scenarios:
  a  backlog, 12 rules (bench/rules.*), loopback
  b  the same through TcpProxy(delay=0.010): 10 ms each way, a 20 ms round trip
  c  body regex over every message (bench/rules_body.*), loopback
  d  the same through the proxy, with --body-proxy-messages (default 1,000)
  e  c's worst case: the regex's literal (`build #`) in 90% of bodies, so the server's
     BODY prefilter cannot narrow (bench/generate.py common_literal), loopback

Prints a markdown table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402
import imaptrace  # noqa: E402
import yaml  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

TOOLS = ("imapfilter", "mailrules", "bare", "mailrules-server")
DEFAULT_TOOLS = ("imapfilter", "mailrules", "bare")
# mailrules-server: mailrules with every rule searched by the server (MAILRULES_LOCAL_HEADERS=0,
# mailrules/local_headers.py), run in the same rotation to measure local header evaluation
PROXY_DELAY = 0.010  # seconds, each way


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    rules: str  # "rules" (12 rules) or "body" (body regex)
    messages: int
    proxy: bool
    target_ratio: float  # mailrules' median time / imapfilter's must be <= this
    target_memory: bool = False  # and its peak RSS lower than imapfilter's
    common_literal: bool = False  # the mailbox of scenario e (bench/generate.py)


@dataclass
class Run:
    scenario: str
    tool: str
    repetition: int
    seconds: float
    maxrss_mb: float
    returncode: int
    user: str
    log: str
    identical: bool | None = None
    output_tail: str = ""


@dataclass
class Outcome:
    runs: list[Run] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    reference: dict | None = None
    states: dict[int, dict] = field(default_factory=dict)  # id(run) -> final state
    ref_state: dict | None = None
    traces: dict[str, dict] = field(default_factory=dict)


# --------------------------------------------------------------------------- the test kit


# imapfilter 2.8 sends all of a search's UIDs in one COPY or STORE; Dovecot answers a command line
# over imap_max_line_length (64 KB by default) with BAD "Too long argument", so at 100,000
# messages imapfilter's larger moves failed (mailrules splits long UID sets). With long lines
# allowed, both tools do the same work at every size; no command of mailrules' is that long.
LONG_LINES = "\nimap_max_line_length = 4M\n"


def kit():
    """The test kit's Dovecot server and proxy (mailrules.testing)."""
    try:
        from mailrules.testing.dovecot import DovecotServer
    except ImportError as exc:  # pragma: no cover - reported, not papered over
        raise SystemExit(f"bench: mailrules.testing.dovecot is not available ({exc})") from exc
    try:
        from mailrules.testing.proxy import TcpProxy
    except ImportError:
        TcpProxy = None  # noqa: N806 - only the proxy scenarios need it
    return DovecotServer, TcpProxy


@dataclass
class RawlogBench:
    """Scenario a on a private Dovecot that keeps a rawlog of every session (`sessions.py`, `floor.py`)."""

    server: Any
    mail: list[generate.GeneratedMessage]
    scenario: Scenario
    tmp: Path
    rawroot: Path

    @classmethod
    def start(cls, prefix: str, messages: int, extra_conf: str = "") -> RawlogBench:
        DovecotServer, _ = kit()  # noqa: N806
        mail = generate.generate(messages, generate.DEFAULT_SEED, time.time())
        tmp = Path(tempfile.mkdtemp(prefix=prefix))
        rawroot = tmp / "rawlog"
        rawroot.mkdir()
        os.chmod(rawroot, 0o777)
        server = DovecotServer(tmp / "dovecot", extra_conf=imaptrace.rawlog_conf(rawroot) + extra_conf)
        server.start()
        return cls(server, mail, Scenario("a", "12 rules, loopback", "rules", messages, False, 1.05), tmp, rawroot)

    def user(self, label: str):
        """A new user holding the scenario's mailbox, its sessions logged under rawroot/label."""
        (self.rawroot / label).mkdir()
        os.chmod(self.rawroot / label, 0o777)  # Dovecot writes it as the user
        user = self.server.add_user(label)
        deliver(self.server, user, "INBOX", self.mail)
        return user

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def deliver(server, user, mailbox: str, messages: list[generate.GeneratedMessage]) -> None:
    """Write the messages as Maildir files with the kit's deliver_files (no APPEND).

    deliver_files sets one mtime (INTERNALDATE) and one set of flags per call, so messages
    are grouped by (arrival slot, flags): about 180 calls for 90 days.
    """
    groups: dict[tuple[float, str], list[bytes]] = {}
    for m in messages:
        groups.setdefault((m.internaldate, "S" if m.seen else ""), []).append(m.data)
    for (mtime, flags), datas in sorted(groups.items()):
        server.deliver_files(user, mailbox, datas, mtime=mtime, flags=flags)


# --------------------------------------------------------------------------- measuring


def run_measured(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> tuple[float, float, int]:
    """Run `cmd`; return (wall seconds, peak RSS MB of the command, exit code). The command's CPU
    seconds (user + system, also from /usr/bin/time) are left in `log` + ".cpu".

    The peak RSS comes from /usr/bin/time (%M), not from our own wait4(): on Linux a child
    inherits its parent's RSS high-water mark through fork and exec, so wait4() here would
    report at least this process's size (which holds the whole generated mailbox).
    /usr/bin/time is small; what it reports is the tool's own peak.
    """
    rss_file = log.with_suffix(".rss")
    full = ["/usr/bin/time", "-f", "%U %S %M", "-o", str(rss_file), *cmd]
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(full, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
        elapsed = time.perf_counter() - t0
    try:
        # The last line; earlier ones may say "Command exited with non-zero status N".
        words = rss_file.read_text().split()
        kib = int(words[-1])
        log.with_suffix(".cpu").write_text(f"{float(words[-3]) + float(words[-2]):.2f}\n")
    except (OSError, ValueError, IndexError):
        kib = 0
    return elapsed, kib / 1024.0, proc.returncode


def tool_command(tool: str, scenario: Scenario, host: str, port: int, user, workdir: Path) -> tuple[list[str], dict]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "TZ": os.environ.get("TZ", "UTC"),
    }
    if tool == "imapfilter":
        env.update(
            BENCH_IMAP_HOST=host,
            BENCH_IMAP_PORT=str(port),
            BENCH_IMAP_USER=user.name,
            BENCH_IMAP_PASSWORD=user.password,
            BENCH_RULES_LUA=str(BENCH / ("rules.lua" if scenario.rules == "rules" else "rules_body.lua")),
        )
        return ["imapfilter", "-c", str(BENCH / "imapfilter_config.lua")], env
    if tool == "bare":
        env["BENCH_IMAP_PASSWORD"] = user.password
        cmd = [sys.executable, str(BENCH / "bare_imapclient.py"), "--host", host, "--port", str(port)]
        return cmd + ["--user", user.name, "--scenario", scenario.rules], env
    if tool in ("mailrules", "mailrules-server"):
        if tool == "mailrules-server":
            env["MAILRULES_LOCAL_HEADERS"] = "0"
        src = BENCH / ("rules.yaml" if scenario.rules == "rules" else "rules_body.yaml")
        cfg = yaml.safe_load(src.read_text())
        acct = cfg["accounts"]["bench"]
        acct.update(host=host, port=port, username=user.name)
        cfg_path = workdir / "rules.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        env["MAILRULES_BENCH_PASSWORD"] = user.password
        env["PYTHONPATH"] = str(REPO)
        state = workdir / "state"
        # The console script's entry point, run by this interpreter from this checkout.
        launcher = "from mailrules.console import console; console()"
        cmd = [sys.executable, "-c", launcher, "-c", str(cfg_path), "run", "--once", "--state", str(state)]
        return cmd, env
    raise ValueError(tool)


# --------------------------------------------------------------------------- final state


def snapshot(host: str, port: int, user) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Every folder of `user`: sorted [(Message-ID, sorted flags without \\Recent)]."""
    state: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    with IMAPClient(host, port=port, ssl=False, timeout=120) as c:
        c.login(user.name, user.password)
        for _flags, _sep, name in c.list_folders():
            if b"\\Noselect" in _flags or b"\\NonExistent" in _flags:
                continue
            c.select_folder(name, readonly=True)
            items: list[tuple[str, tuple[str, ...]]] = []
            uids = c.search(["ALL"])
            for i in range(0, len(uids), 2000):
                chunk = uids[i : i + 2000]
                data = c.fetch(chunk, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
                for _uid, item in data.items():
                    raw = item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]") or b""
                    msgid = raw.decode("ascii", "replace").partition(":")[2].strip()
                    flags = tuple(
                        sorted(
                            f.decode() if isinstance(f, bytes) else str(f)
                            for f in item[b"FLAGS"]
                            if f.lower() != b"\\recent"
                        )
                    )
                    items.append((msgid, flags))
            state[name] = sorted(items)
        c.logout()
    return state


def diff_states(ref: dict, got: dict, limit: int = 15) -> list[str]:
    out: list[str] = []
    for folder in sorted(set(ref) | set(got)):
        a = ref.get(folder, [])
        b = got.get(folder, [])
        if a == b:
            continue
        sa, sb = set(a), set(b)
        out.append(f"folder {folder!r}: reference {len(a)} messages, this run {len(b)}")
        for item in sorted(sa - sb)[:limit]:
            out.append(f"    only in reference: {item[0]} {' '.join(item[1]) or '(no flags)'}")
        for item in sorted(sb - sa)[:limit]:
            out.append(f"    only in this run:  {item[0]} {' '.join(item[1]) or '(no flags)'}")
        if sa == sb:
            out.append("    (same items, different multiplicity: duplicates)")
    return out


def describe(state: dict) -> str:
    parts = []
    for folder in sorted(state):
        items = state[folder]
        kw: dict[str, int] = {}
        for _, flags in items:
            for f in flags:
                kw[f] = kw.get(f, 0) + 1
        flags_s = ", ".join(f"{k} {v}" for k, v in sorted(kw.items()))
        parts.append(f"  {folder}: {len(items)}" + (f" ({flags_s})" if flags_s else ""))
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000, help="mailbox size for a, b, c (default 10000)")
    ap.add_argument("--body-proxy-messages", type=int, default=1_000, help="mailbox size for d (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per tool and scenario (default 3)")
    ap.add_argument("--quick", action="store_true", help="1,000 / 200 messages, 1 repetition")
    ap.add_argument("--tools", default=",".join(DEFAULT_TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--scenarios", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e")
    ap.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (Dovecot, logs)")
    ap.add_argument(
        "--trace",
        action="store_true",
        help="also run each tool once on a Dovecot with rawlog and count commands and round trips",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.messages, args.body_proxy_messages, args.repeat = 1_000, 200, 1
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for t in args.tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}")
    for s in args.scenarios:
        if s not in "abcde" or len(s) != 1:
            ap.error(f"unknown scenario {s!r}")
    return args


def scenarios_for(args: argparse.Namespace) -> list[Scenario]:
    all_ = {
        "a": Scenario("a", "backlog, 12 rules, loopback", "rules", args.messages, False, 0.8),
        "b": Scenario("b", "backlog, 12 rules, 20 ms RTT", "rules", args.messages, True, 0.6),
        "c": Scenario("c", "body regex, loopback", "body", args.messages, False, 0.5, True),
        "d": Scenario("d", "body regex, 20 ms RTT", "body", args.body_proxy_messages, True, 0.1),
        "e": Scenario("e", "body regex, literal in 90%, loopback", "body", args.messages, False, 0.5, True, True),
    }
    return [all_[k] for k in args.scenarios]


def check_tools(tools: list[str]) -> None:
    if not os.access("/usr/bin/time", os.X_OK):
        raise SystemExit("bench: /usr/bin/time is needed to measure peak memory (apt-get install time)")
    if "imapfilter" in tools and not shutil.which("imapfilter"):
        raise SystemExit("bench: imapfilter is not installed (apt-get install imapfilter)")
    if "mailrules" in tools:
        probe = subprocess.run(
            [sys.executable, "-c", "import mailrules.cli"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            raise SystemExit(f"bench: mailrules' CLI is not importable:\n{probe.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.loadavg_at_start = os.getloadavg()
    if args.loadavg_at_start[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"bench: warning: load average {args.loadavg_at_start[0]:.1f} on {os.cpu_count()} CPUs: "
            "other work on this machine will make the timings noisy",
            flush=True,
        )
    check_tools(args.tools)
    args.source_at_start = source_digest()
    DovecotServer, TcpProxy = kit()  # noqa: N806
    scenarios = scenarios_for(args)
    if any(s.proxy for s in scenarios) and TcpProxy is None:
        raise SystemExit("bench: mailrules.testing.proxy (TcpProxy) is not available")

    now = time.time()
    t0 = time.perf_counter()
    sizes = sorted({(s.messages, s.common_literal) for s in scenarios})
    mail = {key: generate.generate(key[0], args.seed, now, key[1]) for key in sizes}
    for key in sizes:
        print(f"generated: {generate.summary(mail[key])}", flush=True)
    print(f"(generation took {time.perf_counter() - t0:.1f} s)", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="mailrules-bench-"))
    outcomes: dict[str, Outcome] = {s.key: Outcome() for s in scenarios}
    failures: list[str] = []
    trace_rows: list = []
    server = DovecotServer(tmp / "dovecot", extra_conf=LONG_LINES)
    server.start()
    try:
        for sc in scenarios:
            print(f"\n== scenario {sc.key}: {sc.title}, {sc.messages} messages", flush=True)
            outcome = outcomes[sc.key]
            for rep in range(args.repeat):
                order = args.tools[rep % len(args.tools) :] + args.tools[: rep % len(args.tools)]
                for tool in order:
                    run, state = one_run(server, TcpProxy, sc, tool, rep, mail[(sc.messages, sc.common_literal)], tmp)
                    outcome.runs.append(run)
                    outcome.states[id(run)] = state
            compare(outcome, failures)
            outcome.states.clear()
        if args.trace:
            trace_rows = run_traces(DovecotServer, TcpProxy, scenarios, outcomes, args.tools, mail, tmp, failures)
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")

    full_size = args.messages >= 10_000 and args.body_proxy_messages >= 1_000
    table, summary = report(scenarios, outcomes, args.tools, full_size)
    load = os.getloadavg()
    print(f"\nload average at start {args.loadavg_at_start[0]:.1f}, at end {load[0]:.1f} ({os.cpu_count()} CPUs)")
    src_end = source_digest()
    changed = src_end.split("+")[-1] != args.source_at_start.split("+")[-1]
    print(f"mailrules source {args.source_at_start}" + (f" -> {src_end} (CHANGED during the run)" if changed else ""))
    print("\n" + table)
    if trace_rows:
        print("\nProtocol trace (one extra run per tool, Dovecot rawlog; see bench/imaptrace.py):\n")
        print(imaptrace.table(trace_rows))
    write_json(args, scenarios, outcomes, summary, now, trace_rows)
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        return 1
    return 0


def one_run(server, TcpProxy, sc: Scenario, tool: str, rep: int, messages, tmp: Path, label: str = "", on_exit=None):  # noqa: N803
    label = label or f"{sc.key}{rep}{tool[:4]}{'s' if tool == 'mailrules-server' else ''}"
    user = server.add_user(label)
    deliver(server, user, "INBOX", messages)
    workdir = tmp / "runs" / label
    workdir.mkdir(parents=True)
    log = workdir / "output.log"
    with contextlib.ExitStack() as stack:
        host, port = server.host, server.port
        if sc.proxy:
            proxy = stack.enter_context(TcpProxy(server.host, server.port, delay=PROXY_DELAY))
            host, port = "127.0.0.1", proxy.port
        cmd, env = tool_command(tool, sc, host, port, user, workdir)
        seconds, rss, rc = run_measured(cmd, env, log, workdir)
    tail = log.read_text(errors="replace")[-2000:]
    run = Run(sc.key, tool, rep, seconds, rss, rc, user.name, str(log), output_tail=tail)
    cpu_file = log.with_suffix(".cpu")
    cpu = cpu_file.read_text().strip() if cpu_file.exists() else "?"
    print(f"  rep {rep + 1} {tool:<10} {seconds:8.2f} s  {rss:7.1f} MB  cpu {cpu} s  exit {rc}", flush=True)
    if on_exit is not None:
        on_exit()
    state = snapshot(server.host, server.port, user)
    # The mailbox is not needed any more: keep the disk (and the page cache) small.
    shutil.rmtree(server.mail_dir / user.name, ignore_errors=True)
    return run, state


def run_traces(DovecotServer, TcpProxy, scenarios, outcomes, tools, mail, tmp: Path, failures):  # noqa: N803
    """One more run of every tool per scenario on a Dovecot that keeps a rawlog."""
    rawroot = tmp / "rawlog"
    rawroot.mkdir()
    os.chmod(rawroot, 0o777)
    rows = []
    server = DovecotServer(tmp / "trace-dovecot", extra_conf=imaptrace.rawlog_conf(rawroot) + LONG_LINES)
    server.start()
    try:
        for sc in scenarios:
            print(f"\n== trace of scenario {sc.key}: {sc.title}, {sc.messages} messages", flush=True)
            ref = outcomes[sc.key].ref_state
            for tool in tools:
                label = f"t{sc.key}{tool[:4]}{'s' if tool == 'mailrules-server' else ''}"
                (rawroot / label).mkdir()
                os.chmod(rawroot / label, 0o777)
                sessions = []

                def collect(label=label, sessions=sessions):
                    # The tool has exited; let Dovecot finish its rawlog, then read it before
                    # our own verification connection adds a session.
                    time.sleep(0.5)
                    sessions.append(imaptrace.analyse_user(rawroot / label))

                run, state = one_run(
                    server, TcpProxy, sc, tool, 0, mail[(sc.messages, sc.common_literal)], tmp, label=label, on_exit=collect
                )
                session = sessions[0]
                rows.append((sc.key, tool, run.seconds, session))
                outcomes[sc.key].traces[tool] = {"wall_seconds": run.seconds, **session.as_dict()}
                diff = diff_states(ref, state) if ref is not None else []
                if run.returncode != 0 or diff:
                    msg = f"trace run of scenario {sc.key}: {tool} exited {run.returncode}" + (
                        " and left a DIFFERENT mailbox" if diff else ""
                    )
                    print("  !!!!!!!! " + msg + "\n  " + "\n  ".join(diff), flush=True)
                    failures.append(msg)
    finally:
        with contextlib.suppress(Exception):
            server.stop()
    return rows


def compare(outcome: Outcome, failures: list[str]) -> None:
    """Compare every run's final state with the reference run's (imapfilter's first)."""
    runs = outcome.runs
    for r in runs:
        if r.returncode != 0:
            failures.append(f"scenario {r.scenario}: {r.tool} exited {r.returncode} (log {r.log})")
            print(f"  !! {r.tool} exited {r.returncode}; end of its output:\n{r.output_tail}", flush=True)
    ok = [r for r in runs if r.returncode == 0]
    if not ok:
        return
    ref = next((r for r in ok if r.tool == "imapfilter"), ok[0])
    ref_state = outcome.ref_state = outcome.states[id(ref)]
    outcome.reference = {"tool": ref.tool, "repetition": ref.repetition}
    print(f"  final state ({ref.tool}, repetition {ref.repetition + 1}; folder: messages (flags)):", flush=True)
    print(describe(ref_state), flush=True)
    for r in runs:
        diff = diff_states(ref_state, outcome.states[id(r)])
        r.identical = not diff
        if diff:
            head = (
                f"scenario {r.scenario}: {r.tool} (repetition {r.repetition + 1}) left a DIFFERENT mailbox "
                f"from {ref.tool} (repetition {ref.repetition + 1})"
            )
            print("\n  !!!!!!!! " + head, flush=True)
            for line in diff:
                print("  " + line, flush=True)
            failures.append(head)
            outcome.differences.extend([head, *diff])
    if all(r.identical for r in runs):
        print(f"  all {len(runs)} runs left identical mailboxes", flush=True)


def report(scenarios: list[Scenario], outcomes: dict[str, Outcome], tools: list[str], full_size: bool = True):
    lines = [
        "| scenario | tool | median s | peak RSS MB | time vs imapfilter | RSS vs imapfilter | target | runs | state |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    summary: dict[str, dict] = {}
    for sc in scenarios:
        out = outcomes[sc.key]
        summary[sc.key] = {}
        by_tool: dict[str, list[Run]] = {}
        for r in out.runs:
            by_tool.setdefault(r.tool, []).append(r)
        med = {t: statistics.median(r.seconds for r in rs) for t, rs in by_tool.items()}
        rss = {t: statistics.median(r.maxrss_mb for r in rs) for t, rs in by_tool.items()}
        for tool in tools:
            if tool not in by_tool:
                continue
            ratio = med[tool] / med["imapfilter"] if "imapfilter" in med else None
            rratio = rss[tool] / rss["imapfilter"] if "imapfilter" in rss else None
            target = ""
            met = None
            if tool == "mailrules" and ratio is not None:
                target = f"<= {sc.target_ratio}x" + (", less RAM" if sc.target_memory else "")
                if full_size:
                    met = ratio <= sc.target_ratio and (not sc.target_memory or rss[tool] < rss["imapfilter"])
                    target += " MET" if met else " MISSED"
                else:
                    target += " (not judged: the targets are for 10,000 / 1,000 messages)"
            ok = all(r.returncode == 0 for r in by_tool[tool])
            same = all(r.identical for r in by_tool[tool])
            state = "identical" if ok and same else ("FAILED" if not ok else "DIFFERENT")
            lines.append(
                f"| {sc.key}: {sc.title} ({sc.messages} msgs) | {tool} | {med[tool]:.2f} | {rss[tool]:.0f} | "
                f"{'' if ratio is None else f'{ratio:.2f}x'} | {'' if rratio is None else f'{rratio:.2f}x'} | "
                f"{target} | {len(by_tool[tool])} | {state} |"
            )
            summary[sc.key][tool] = {
                "median_seconds": med[tool],
                "median_peak_rss_mb": rss[tool],
                "ratio_vs_imapfilter": ratio,
                "rss_ratio_vs_imapfilter": rratio,
                "target_met": met,
                "state": state,
            }
    return "\n".join(lines), summary


def source_digest() -> str:
    """HEAD and a digest of mailrules' source files (they may be edited while a benchmark runs)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((REPO / "mailrules").rglob("*.py")):
        h.update(str(path.relative_to(REPO)).encode() + b"\0")
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return f"{head.stdout.strip() or 'no-commit'}+{h.hexdigest()[:12]}"
    return h.hexdigest()[:12]


def write_json(args, scenarios, outcomes, summary, now: float, trace_rows) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    versions = {"python": platform.python_version()}
    with contextlib.suppress(Exception):
        versions["imapfilter"] = subprocess.run(["imapfilter", "-V"], capture_output=True, text=True).stdout.split("  ")[0]
    with contextlib.suppress(Exception):
        versions["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    data = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": args.loadavg_at_start,
            "loadavg_at_end": os.getloadavg(),
        },
        "versions": versions,
        "parameters": {
            "messages": args.messages,
            "body_proxy_messages": args.body_proxy_messages,
            "repeat": args.repeat,
            "seed": args.seed,
            "tools": args.tools,
            "proxy_delay_each_way_s": PROXY_DELAY,
        },
        "mailrules_source": {"at_start": args.source_at_start, "at_end": source_digest()},
        "scenarios": {
            sc.key: {
                **asdict(sc),
                "summary": summary.get(sc.key, {}),
                "runs": [{k: v for k, v in asdict(r).items() if k != "output_tail"} for r in outcomes[sc.key].runs],
                "differences": outcomes[sc.key].differences,
                "trace": outcomes[sc.key].traces,
            }
            for sc in scenarios
        },
    }
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
