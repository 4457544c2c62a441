"""`mailrules history`: what mailrules did, read from the journal (no server needed).

One line per message and action: time (the run's start), run, rule, account, mailbox,
action, UID and Message-ID; filtered by Message-ID, rule, run or age. ``--runs`` lists the
runs instead (id, start, kind, counts). ``--format json`` prints a JSON list of the same.
The journal keeps finished runs for ``history_days`` (`mailrules.journal`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from .config import parse_duration
from .journal import Journal, iso
from .model import Config
from .state import StateError, StateStore

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def rows(journal: Journal, args: argparse.Namespace, since: float | None) -> list[dict]:
    """The history's rows, oldest first, filtered as the options say."""
    wanted = _bare(args.message_id) if args.message_id else None
    out = []
    for entry in journal.entries(args.run, since=since):
        if args.rule and entry.rule not in args.rule:
            continue
        for row in entry.rows():
            if wanted is not None and _bare(row["message_id"] or "") != wanted:
                continue
            out.append(row)
    return out


def _bare(message_id: str) -> str:
    """A Message-ID compared without its angle brackets and surrounding space."""
    return message_id.strip().strip("<>").strip()


def history_command(config: Config, state_dir, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            print(f"mailrules: history: --since {args.since!r}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        store = StateStore.open_readonly(state_dir)
    except StateError as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if store is None:
        found: list[dict] = []
    else:
        try:
            journal = Journal(store, config.history_days)
            if args.runs:
                found = [r.to_json() for r in journal.runs(since=since) if args.run in (None, r.id)]
            else:
                found = rows(journal, args, since)
        finally:
            store.close()
    if args.format == "json":
        json.dump(found, out, indent=1)
        out.write("\n")
        return EXIT_OK
    if not found:
        out.write("nothing in the journal matches\n")
        return EXIT_OK
    columns = (["id", "started", "kind", "account", "mailbox", "actions", "messages"] if args.runs else
               ["time", "run", "rule", "account", "mailbox", "action", "uid", "message_id"])
    table = [columns] + [["-" if row[c] is None else str(row[c]) for c in columns] for row in found]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")
    return EXIT_OK


__all__ = ["history_command", "iso", "rows"]
