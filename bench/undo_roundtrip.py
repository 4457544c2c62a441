"""The issue-19 "done when" check: `apply --yes` then `undo --last --yes` leaves every mailbox
exactly as before, also when the apply and, separately, the undo are killed with SIGKILL midway
and run again.

The mailbox is bench/generate.py's (default 5,000 messages), the rules the 12 benchmark rules
(bench/rules.yaml: moves, copies, flags, keywords) plus a copy to a second account; before the
apply, some messages already carry the flags and keywords the rules set (every 7th \\Flagged,
$Dev and $CIFailed, every 5th \\Seen). "Exactly as before" is the multiset of (account, folder,
SHA-256 of the whole message, flags and keywords) over every mailbox of both accounts, counted by
content (SHA-256 rather than SHA-1: the same multiset, a stronger digest).

Three rounds, each on fresh accounts: plain; the apply killed when its journal holds
`--kill-at` rows (default: half as many as the plain round's apply wrote), then `apply --yes`
again finishes it, then a plain undo; a plain apply, then the undo killed likewise halfway,
then `undo --last --yes` again. Each
round prints its times and whether the mailboxes came back exactly; exit 1 if one did not.

    python3 bench/undo_roundtrip.py                   # 5,000 messages (~5 min on 2 cores)
    python3 bench/undo_roundtrip.py --messages 400    # what tests/test_undo_roundtrip.py runs

Needs root and dovecot-imapd (the test kit's private Dovecot). tests/test_undo_roundtrip.py runs
the same rounds at 400 messages.
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402

from mailrules.testing.daemon import DaemonHarness, account_by_content, wait_until  # noqa: E402


def rules_text() -> str:
    """The 12 benchmark rules, plus a copy of one list to the other account."""
    text = (BENCH / "rules.yaml").read_text()
    return text[text.index("rules:\n") + len("rules:\n"):] + """\
  - name: backup security
    match: {header: {List-Id: security.lists.example.org}}
    actions: [{copy: "other:Backup"}]
"""


@dataclass
class Round:
    """One apply-then-undo on fresh accounts, with how long each command took."""

    name: str
    seconds: dict[str, float] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)
    exact: bool = False
    left_alone: int = 0
    changed: int = 0  # (folder, message, flags) entries the apply changed: what the undo had to restore
    rows: dict[str, int] = field(default_factory=dict)  # journal rows the apply and the undo wrote

    def line(self) -> str:
        times = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        kills = f" (SIGKILL: {', '.join(self.killed)})" if self.killed else ""
        return (f"{self.name}: {times}{kills}: the apply changed {self.changed} (folder, message, flags) entries; "
                f"after the undo ({self.left_alone} left alone): {'exactly as before' if self.exact else 'DIFFERENT'}")


class Lab:
    """Two fresh accounts on `server`, the mailbox delivered, and a harness for the mailrules CLI."""

    def __init__(self, server, messages, workdir: Path) -> None:
        self.user, self.other = server.add_user(), server.add_user()
        server.deliver_files(self.user, "INBOX", [m.data for m in messages])
        self.client, self.other_client = server.client(self.user), server.client(self.other)
        self.client.select_folder("INBOX")
        uids = self.client.search(["ALL"])
        self.client.add_flags(uids[::7], ["\\Flagged", "$Dev", "$CIFailed"])  # what some rules set
        self.client.add_flags(uids[::5], ["\\Seen"])
        self.other_client.create_folder("Backup")
        self.harness = DaemonHarness(server, self.user, workdir, rules="")
        self.harness.write_rules("", raw=(
            "version: 1\naccounts:\n"
            f"  t: {{host: 127.0.0.1, port: {server.port}, tls: none, username: {self.user.name}, "
            "password_env: MAILRULES_TEST_PASSWORD}\n"
            f"  other: {{host: 127.0.0.1, port: {server.port}, tls: none, username: {self.other.name}, "
            "password_env: OTHER_PW}\n"
            "rules:\n" + rules_text()))
        env = self.harness.env()
        env["OTHER_PW"] = self.other.password
        self.harness.env = lambda: env  # type: ignore[method-assign]

    def both(self) -> tuple[collections.Counter, collections.Counter]:
        return account_by_content(self.client), account_by_content(self.other_client)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.harness.run(*args, timeout=1200)
        if result.returncode != 0:
            raise RuntimeError(f"mailrules {' '.join(args)}: exit {result.returncode}: {result.stderr[-2000:]}")
        return result

    def journal_steps(self, kind_like: str) -> int:
        """Step rows of the runs whose kind is LIKE `kind_like` (0 while there is no state file)."""
        try:
            db = sqlite3.connect(f"file:{self.harness.state / 'state.sqlite3'}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute("SELECT count(*) FROM step s JOIN run r ON r.id=s.run_id "
                                 "WHERE r.kind LIKE ? AND s.state!='plan'", (kind_like,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return 0
        return int(row[0])

    def finished(self, kind_like: str) -> bool:
        """True if the newest run whose kind is LIKE `kind_like` (an apply's head, not one of its
        mailbox passes, kind "apply:<head>") is recorded as finished."""
        db = sqlite3.connect(f"file:{self.harness.state / 'state.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT finished FROM run WHERE kind LIKE ? AND kind NOT LIKE 'apply:%' "
                             "ORDER BY id DESC LIMIT 1",
                             (kind_like,)).fetchone()
        finally:
            db.close()
        return row is not None and row[0] is not None

    def killed(self, args: tuple[str, ...], kind_like: str, at: int, round_: Round) -> bool:
        """Start `mailrules ARGS`, SIGKILL it once its journal holds `at` steps (True), unless it
        ended first (False)."""
        started = time.monotonic()
        proc = subprocess.Popen(self.harness.command(*args), env=self.harness.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.journal_steps(kind_like) >= at or proc.poll() is not None, timeout=1200,
                   interval=0.01)
        ended = proc.poll() is not None
        proc.kill()
        proc.wait()
        # Seen at `at` steps, the process may still have finished its run before the signal came
        # (the last steps and the run's end take milliseconds; Python's exit takes longer): then
        # it was not killed midway, and running it again would be a new run, not a resume.
        ended = ended or self.finished(kind_like)
        round_.seconds[f"{args[0]} until killed"] = time.monotonic() - started
        if not ended:
            round_.killed.append(f"{args[0]} at journal step {at}")
        return not ended


def timed(round_: Round, name: str, call: Callable[[], object]) -> None:
    started = time.monotonic()
    call()
    round_.seconds[name] = round_.seconds.get(name, 0.0) + time.monotonic() - started


def roundtrip(server, messages, workdir: Path, name: str, *, kill_apply: int | None = None,
              kill_undo: int | None = None) -> Round:
    """apply then undo --last on fresh accounts, each optionally killed at a journal step and then
    run again (only if the kill came before it ended: a second apply or undo would be a new run)."""
    lab = Lab(server, messages, workdir)
    before = lab.both()
    out = Round(name)
    apply, undo = ("apply", "--yes"), ("undo", "--last", "--yes")
    if kill_apply is None or lab.killed(apply, "apply%", kill_apply, out):
        timed(out, "apply", lambda: lab.run(*apply))
    applied = lab.both()
    out.changed = sum(sum((a - b).values()) for a, b in zip(applied, before, strict=True))
    if not out.changed:
        raise RuntimeError("the apply changed nothing: the round proves nothing")
    result: list[subprocess.CompletedProcess[str]] = []
    if kill_undo is None or lab.killed(undo, "undo:%", kill_undo, out):
        timed(out, "undo", lambda: result.append(lab.run(*undo)))
    out.left_alone = sum(r.stdout.count("left alone") for r in result)
    out.exact = lab.both() == before
    out.rows = {"apply": lab.journal_steps("apply%"), "undo": lab.journal_steps("undo:%")}
    return out


def rounds(server, messages, workdir: Path, kill_at: int | None = None) -> list[Round]:
    """The three rounds; the kills at journal row `kill_at`, by default halfway through (counted
    in the plain round)."""
    plain = roundtrip(server, messages, workdir / "plain", "plain")
    at = {what: kill_at or max(1, n // 2) for what, n in plain.rows.items()}
    return [
        plain,
        roundtrip(server, messages, workdir / "apply-killed", "apply killed", kill_apply=at["apply"]),
        roundtrip(server, messages, workdir / "undo-killed", "undo killed", kill_undo=at["undo"]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--kill-at", type=int, help="journal rows before the SIGKILL (default: half of the "
                        "plain round's)")
    args = parser.parse_args(argv)
    from mailrules.testing.dovecot import temporary_dovecot

    messages = generate.generate(args.messages)
    with temporary_dovecot() as server, tempfile.TemporaryDirectory() as tmp:
        done = rounds(server, messages, Path(tmp), args.kill_at)
    for r in done:
        print(f"{len(messages)} messages, {r.line()}")
    print(f"journal rows of the plain round: apply {done[0].rows['apply']}, undo {done[0].rows['undo']}")
    missed = [r.name for r in done[1:] if not r.killed]
    if missed:
        print(f"not killed (it ended first): {', '.join(missed)}: give a smaller --kill-at")
    return 0 if all(r.exact for r in done) and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
