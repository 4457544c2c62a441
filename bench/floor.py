"""The server's floor for scenario a: mailrules' own commands, answered with no client time at all.

    python bench/floor.py                 # 5 alternated runs on 10,000 messages
    python bench/floor.py --runs 8 --messages 10000

One `run --once` of mailrules on the bench mailbox is recorded (Dovecot's rawlog); then, on fresh
copies of the mailbox, every command it sent after LOGIN is replayed in one pipelined write by a
bare socket (no parsing, no waiting between commands), alternately with imapfilter's whole run.
The replay's wall time is what Dovecot needs for mailrules' command sequence: no client can
be faster without sending the server less work. Prints each pair and the median ratio
(replay / imapfilter); the target of scenario a (<= 0.8x) leaves the client the difference.
Timings only; `run.py` checks that the tools agree.

    python bench/floor.py --parts         # what each kind of command costs the server

`--parts` replays, alternately, the whole recording and the recording without one kind of
command at a time (`PARTS`), and prints the median of each and its difference from the whole:
the server time a change of protocol could save there, before it is built.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import imaptrace  # noqa: E402
import run  # noqa: E402


def recorded_commands(bench: run.RawlogBench) -> list[bytes]:
    """The commands of one mailrules run after LOGIN, as sent (LOGOUT left out)."""
    user = bench.user("rec")
    workdir = bench.tmp / "rec"
    workdir.mkdir()
    cmd, env = run.tool_command("mailrules", bench.scenario, bench.server.host, bench.server.port, user, workdir)
    subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, check=True)
    time.sleep(0.3)  # let Dovecot finish the rawlog
    return [line for line in imaptrace.commands_sent(bench.rawroot / "rec") if b" LOGOUT" not in line.upper()[:20]]


def replay(server, user, commands: list[bytes]) -> tuple[float, int]:
    """Wall seconds of LOGIN plus the commands in one write, until the server closes; NO/BAD answers."""
    start = time.perf_counter()
    with socket.create_connection((server.host, server.port), timeout=120) as sock:
        sock.recv(4096)
        sock.sendall(f'L LOGIN {user.name} "{user.password}"\r\n'.encode())
        answer = b""
        while b"L OK" not in answer:
            answer += sock.recv(65536)
        sock.sendall(b"".join(c + b"\r\n" for c in commands) + b"Z LOGOUT\r\n")
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    return time.perf_counter() - start, len(re.findall(rb"\r\n[\w.+-]+ (?:NO|BAD) ", bytes(received)))


# The kinds of command `--parts` leaves out, one at a time (a command matching the expression).
PARTS = {
    "flags read with a COPY or MOVE": re.compile(rb"^\S+ UID FETCH [\d,:]+ \(FLAGS\)$"),
    "searches before a flag STORE": re.compile(
        rb"^\S+ UID SEARCH RETURN \(ALL\) UID [\d,:]+ (?:UN(?:SEEN|FLAGGED|ANSWERED|DRAFT)|UNKEYWORD \S+)$"),
    "size searches": re.compile(rb" (?:LARGER|SMALLER) \d+"),
    "address searches": re.compile(rb' (?:FROM|TO|CC|BCC) "'),
}


def parts(bench: run.RawlogBench, commands: list[bytes], runs: int) -> None:
    """Median replay of the whole recording and of the recording without each of `PARTS`."""
    variants = {"whole": commands}
    for name, pattern in PARTS.items():
        variants[f"without {name}"] = [c for c in commands if not pattern.search(c)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs):
        for k, (name, sent) in enumerate(variants.items() if i % 2 == 0 else reversed(variants.items())):
            user = bench.user(f"p{i}v{k}")
            times[name].append(replay(bench.server, user, sent)[0])
            shutil.rmtree(bench.server.mail_dir / user.name, ignore_errors=True)
    whole = statistics.median(times["whole"])
    print(f"{'replay':44} {'commands':>8} {'median s':>9} {'vs whole':>9}")
    for name, sent in variants.items():
        median = statistics.median(times[name])
        print(f"{name:44} {len(sent):8} {median:9.3f} {(median - whole) * 1000:+8.0f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="alternated runs of each")
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--parts", action="store_true", help="the cost of each kind of command (PARTS) instead")
    args = ap.parse_args(argv)
    run.check_tools(["mailrules"] if args.parts else ["imapfilter", "mailrules"])
    bench = run.RawlogBench.start("mailrules-floor-", args.messages, run.LONG_LINES)
    server = bench.server
    ratios = []
    try:
        commands = recorded_commands(bench)
        if args.parts:
            parts(bench, commands, args.runs)
            return 0
        print(f"mailrules sent {len(commands)} commands after LOGIN; replaying them against imapfilter's run")
        print("replay s  imapfilter s  ratio")
        for i in range(args.runs):
            times = {}
            for tool in ("replay", "imapfilter") if i % 2 == 0 else ("imapfilter", "replay"):
                user = bench.user(f"{tool[:4]}{i}")
                if tool == "replay":
                    times[tool], refused = replay(server, user, commands)
                    if refused:
                        print(f"  (the replay had {refused} NO/BAD answers: not the same work)")
                else:
                    workdir = bench.tmp / f"if{i}"
                    workdir.mkdir()
                    cmd, env = run.tool_command(tool, bench.scenario, server.host, server.port, user, workdir)
                    times[tool], _rss, _code = run.run_measured(cmd, env, workdir / "output.log", workdir)
                shutil.rmtree(server.mail_dir / user.name, ignore_errors=True)
            ratios.append(times["replay"] / times["imapfilter"])
            print(f"{times['replay']:8.2f}  {times['imapfilter']:12.2f}  {ratios[-1]:5.2f}", flush=True)
        print(f"median ratio {statistics.median(ratios):.2f}")
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
