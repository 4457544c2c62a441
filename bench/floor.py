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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="alternated runs of each")
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args(argv)
    run.check_tools(["imapfilter", "mailrules"])
    bench = run.RawlogBench.start("mailrules-floor-", args.messages, run.LONG_LINES)
    server = bench.server
    ratios = []
    try:
        commands = recorded_commands(bench)
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
