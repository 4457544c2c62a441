"""The floor: the benchmark's rules as a bare IMAPClient script, no framework.

It sends the smallest sensible command sequence for the rules of bench/rules.yaml (the
`rules` scenario) or bench/rules_body.yaml (`body`): LOGIN, SELECT INBOX, then per rule one
UID SEARCH over the whole mailbox and one UID STORE / UID COPY / UID MOVE per action (on
[TRYCREATE] a CREATE and one retry). For the body regex: UID SEARCH ALL, then
UID FETCH BODY.PEEK[TEXT] in chunks of 200 UIDs, matched on the client.

    python bench/bare_imapclient.py --host 127.0.0.1 --port 10143 --user u --scenario rules
    (password from $BENCH_IMAP_PASSWORD)

Prints one JSON line: per rule, how many messages matched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

# The same 12 rules as bench/rules.yaml and bench/rules.lua, in the same order.
# (name, UID SEARCH criteria, actions); an action is (verb, argument).
RULES: list[tuple[str, list[str], list[tuple[str, str | None]]]] = [
    ("spam", ["HEADER", "X-Spam-Flag", "YES"], [("move", "Junk")]),
    ("announce copy", ["HEADER", "List-Id", "announce.example.com"], [("copy", "Archive/Announcements")]),
    (
        "announce list",
        ["HEADER", "List-Id", "announce.example.com"],
        [("add_flags", "\\Seen"), ("move", "Lists/announce")],
    ),
    ("dev list", ["HEADER", "List-Id", "dev.lists.example.org"], [("add_flags", "$Dev"), ("move", "Lists/dev")]),
    ("users list", ["HEADER", "List-Id", "users.lists.example.net"], [("move", "Lists/users")]),
    (
        "security list",
        ["HEADER", "List-Id", "security.lists.example.org"],
        [("add_flags", "\\Flagged"), ("move", "Lists/security")],
    ),
    (
        "ci failures",
        ["HEADER", "List-Id", "ci.example.org", "SUBJECT", "failed"],
        [("add_flags", "\\Flagged"), ("add_flags", "$CIFailed")],
    ),
    ("ci list", ["HEADER", "List-Id", "ci.example.org"], [("move", "Lists/ci")]),
    ("github notifications", ["FROM", "notifications@github.com"], [("add_flags", "\\Seen")]),
    ("vendor", ["FROM", "vendor.example.com"], [("add_flags", "$Vendor")]),
    ("big mail", ["LARGER", "102400"], [("add_flags", "\\Flagged")]),
    ("archive old read mail", ["OLDER", str(60 * 86400), "SEEN"], [("move", "Archive")]),
]

BODY_RULE = ("failed builds", re.compile(rb"build #\d+ failed"), [("add_flags", "$BuildFailed"), ("move", "CI/failed")])
FETCH_CHUNK = 200


def uid_ranges(uids: list[int]) -> str:
    """1,2,3,5 -> '1:3,5' (short commands for big sets)."""
    out: list[str] = []
    s = sorted(uids)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}:{s[j]}")
        i = j + 1
    return ",".join(out)


def _with_trycreate(client: IMAPClient, folder: str, fn) -> None:
    try:
        fn()
    except IMAPClientError as exc:
        if "TRYCREATE" not in str(exc):
            raise
        client.create_folder(folder)
        fn()


def apply(client: IMAPClient, uids: list[int], actions, sep: str) -> None:
    if not uids:
        return
    uidset = uid_ranges(uids)
    for verb, arg in actions:
        if verb == "add_flags":
            client.add_flags(uidset, [arg], silent=True)
        elif verb in ("copy", "move"):
            folder = arg.replace("/", sep)
            fn = client.copy if verb == "copy" else client.move
            _with_trycreate(client, folder, lambda fn=fn, folder=folder: fn(uidset, folder))
        else:  # pragma: no cover - table above is fixed
            raise ValueError(verb)


def run_rules(client: IMAPClient, sep: str) -> dict[str, int]:
    counts = {}
    for name, criteria, actions in RULES:
        uids = client.search(criteria)
        counts[name] = len(uids)
        apply(client, uids, actions, sep)
    return counts


def run_body(client: IMAPClient, sep: str) -> dict[str, int]:
    name, pattern, actions = BODY_RULE
    uids = client.search(["ALL"])
    matched: list[int] = []
    for i in range(0, len(uids), FETCH_CHUNK):
        chunk = uids[i : i + FETCH_CHUNK]
        data = client.fetch(chunk, ["BODY.PEEK[TEXT]"])
        for uid, item in data.items():
            if pattern.search(item.get(b"BODY[TEXT]") or b""):
                matched.append(uid)
    apply(client, matched, actions, sep)
    return {name: len(matched)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--scenario", choices=("rules", "body"), default="rules")
    args = ap.parse_args(argv)
    password = os.environ["BENCH_IMAP_PASSWORD"]
    client = IMAPClient(args.host, port=args.port, ssl=False, timeout=120)
    try:
        client.login(args.user, password)
        client.select_folder("INBOX")
        # The folder separator: Dovecot's is '/' here; ask only if unsure (no needless LIST).
        sep = os.environ.get("BENCH_IMAP_SEPARATOR", "/")
        counts = run_rules(client, sep) if args.scenario == "rules" else run_body(client, sep)
    finally:
        with contextlib.suppress(Exception):  # best effort at the end
            client.logout()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
