"""A large, valid rules file for the load-time benchmark (issue 9, item 8).

::

    python bench/big_rules.py --rules 28000 --out /tmp/big.yaml     # about 5 MB
    python bench/big_rules.py --rules 28000 --out /tmp/big.yaml --time   # ... and time `load()`

Deterministic: the same arguments write the same file. The rules cycle through the shapes a
real file has (header, from/subject, any/not, a where: regex, schedules, several actions),
written in block style with comments, as people write them, so that the file is about
180 bytes per rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HEADER = """\
version: 1
timezone: Europe/Paris
accounts:
  personal:
    host: imap.example.com
    username: me@example.com
    password_env: MAILRULES_PERSONAL_PASSWORD
    watch: [INBOX, Lists/dev]
  work:
    host: mail.corp.example
    username: jdoe
    password_command: [pass, show, work]
rules:
"""

SHAPES = (
    """\
  - name: list {n}              # a mailing list
    match:
      header: {{List-Id: list{n}.lists.example.org}}
    actions:
      - add_keyword: $List{k}
      - move: Lists/list{n}
""",
    """\
  - name: sender {n}
    account: personal
    match:
      from: sender{n}@example.com
      subject: "[report {k}]"
    where:
      - regex: {{body: 'build #\\d+ failed ({k})'}}
    actions:
      - flag
      - copy: Archive/{k}
""",
    """\
  - name: either {n}
    match:
      any:
        - {{from: a{n}@example.com}}
        - {{to: b{n}@example.com}}
      not: {{keyword: $Seen{k}}}
      larger: {d}KB
    actions: [seen, {{add_keyword: $Either}}]
""",
    """\
  - name: sweep {n}
    account: work
    mailbox: INBOX
    schedule: "{m} 3 * * *"
    match: {{older_than: {d}d, flagged: false}}
    actions:
      - move: Archive/{n}
""",
)


def rules_text(count: int) -> str:
    parts = [HEADER]
    for n in range(count):
        parts.append(SHAPES[n % len(SHAPES)].format(n=n, k=n % 97, m=n % 60, d=n % 97 + 1))
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=28000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--time", action="store_true", help="also time mailrules.config.load() on it")
    args = parser.parse_args(argv)
    text = rules_text(args.rules)
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {args.rules} rules, {len(text.encode()):,} bytes")
    if args.time:
        import warnings

        from mailrules.config import load
        from mailrules.plugins import Registry

        registry = Registry.load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start, cpu = time.perf_counter(), time.process_time()
            config = load(args.out, registry=registry)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"load(): {elapsed:.2f} s wall, {cpu:.2f} s CPU, {len(config.rules)} rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
