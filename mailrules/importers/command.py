"""`mailrules import sieve|gmail FILE`: read, convert, write the rules file on stdout.

Exit 0 when everything converted, 1 when something was skipped (listed on stderr with its
line; the rules are written all the same), 2 when the file cannot be read or parsed.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .emit import report_skipped, write_rules

EXIT_OK, EXIT_SKIPPED, EXIT_BAD = 0, 1, 2


def import_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        with open(args.file, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mailrules: {args.file}: cannot read it: {exc}", file=err)
        return EXIT_BAD
    try:
        if args.kind == "sieve":
            from .sieve import SieveSyntaxError, convert

            try:
                rules, skipped = convert(text, separator=args.separator)
            except SieveSyntaxError as exc:
                print(f"mailrules: {args.file}: not a Sieve script this importer can read: {exc}", file=err)
                return EXIT_BAD
        else:
            from .gmail import GmailFormatError, convert_gmail

            try:
                rules, skipped = convert_gmail(text, archive=args.archive)
            except GmailFormatError as exc:
                print(f"mailrules: {args.file}: {exc}", file=err)
                return EXIT_BAD
    except RecursionError:
        print(f"mailrules: {args.file}: nested too deeply to convert", file=err)
        return EXIT_BAD
    write_rules(rules, args.file, args.kind, out, rules_only=args.rules_only)
    report_skipped(skipped, args.file, err)
    return EXIT_SKIPPED if skipped else EXIT_OK
