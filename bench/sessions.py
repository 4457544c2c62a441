"""Where the wall time of scenario a goes: inside the IMAP session, or outside it (start-up).

    python bench/sessions.py              # 4 alternated runs of imapfilter and mailrules
    python bench/sessions.py --runs 8 --messages 10000

Each run gets a fresh user with the generated mailbox on one private Dovecot that keeps a
rawlog (as `run.py --trace` does, but for every run). Per run it prints the wall time,
the time inside the IMAP session (after LOGIN, from the rawlog), what is left outside it
(interpreter start-up, imports, configuration, connecting, LOGIN, exit), and the server's
and the client's share of the session (`imaptrace.analyse_user`). Timings only; `run.py`
checks that the tools agree.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import imaptrace  # noqa: E402
import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs per tool (alternating which goes first)")
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args(argv)
    run.check_tools(["imapfilter", "mailrules"])
    bench = run.RawlogBench.start("mailrules-sessions-", args.messages)
    server, scenario, tmp = bench.server, bench.scenario, bench.tmp
    try:
        print("tool        wall s  session s  outside s  server s  client s")
        for i in range(args.runs):
            for tool in ("imapfilter", "mailrules") if i % 2 == 0 else ("mailrules", "imapfilter"):
                label = f"{tool[:4]}{i}"
                user = bench.user(label)
                workdir = tmp / "runs" / label
                workdir.mkdir(parents=True)
                cmd, env = run.tool_command(tool, scenario, server.host, server.port, user, workdir)
                seconds, _rss, code = run.run_measured(cmd, env, workdir / "output.log", workdir)
                time.sleep(0.3)  # let Dovecot finish the rawlog
                s = imaptrace.analyse_user(bench.rawroot / label)
                print(f"{tool:<10} {seconds:7.2f} {s.duration:10.2f} {seconds - s.duration:10.2f} "
                      f"{sum(s.server_seconds.values()):9.2f} {s.client_seconds:9.2f}"
                      + ("" if code == 0 else f"  (exit {code})"), flush=True)
                shutil.rmtree(server.mail_dir / user.name, ignore_errors=True)
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
