"""`mailrules init`: a starter rules file at the default path, from a few questions or flags.

Why: a newcomer's first `mailrules check` used to end in "cannot read the rules file: No such
file or directory". `init` asks for what a rules file cannot be written without (the server,
the login, where the password comes from), writes a small valid file there, never over an
existing one, and then checks it against the server (`check --connect`), so that what is wrong
(a host, a password, TLS) shows at once, in words, without a traceback.

Where the password comes from (``--password-from``), never the password itself:
``keyring`` (then `mailrules login ACCOUNT` stores it), ``env:VAR`` (read from the environment
variable VAR) or ``command:CMD ARGS`` (the output of a command, e.g. ``command:pass show mail``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PORTS = {"implicit": 993, "starttls": 143, "none": 143}

EPILOG = """\
examples:
  mailrules init                      (asks for the server, the login and the password's source)
  mailrules init --host imap.example.com --username me@example.com --password-from keyring
  mailrules init --host imap.example.com --username me --password-from 'command:pass show mail/me'
  mailrules init -c ./rules.yaml --host 127.0.0.1 --port 14300 --tls none --username me \\
                 --password-from env:DEMO_PASSWORD --no-check
"""


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `mailrules init` (cli.py calls this)."""
    init = sub.add_parser(
        "init", help="write a starter rules file from a few questions, then check it against the server",
        description="Write a starter rules file at the default path ($MAILRULES_CONFIG, else\n"
                    "~/.config/mailrules/rules.yaml, or -c FILE), never over an existing one, from a few\n"
                    "questions or the flags below; then log in to check it (as `mailrules check --connect`).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(init)
    init.add_argument("--host", help="the IMAP server, e.g. imap.example.com")
    init.add_argument("--port", type=int, help="its port (default: 993 with TLS, 143 with STARTTLS)")
    init.add_argument("--tls", choices=tuple(PORTS), default="implicit",
                      help="implicit TLS (the default), starttls, or none (only to a loopback host)")
    init.add_argument("--username", help="the login name, often the mail address")
    init.add_argument("--password-from", metavar="SOURCE",
                      help="keyring, env:VARIABLE or command:COMMAND ARGS (never the password itself)")
    init.add_argument("--account", default="mail", help="the account's name in the rules file (default: mail)")
    init.add_argument("--no-check", action="store_true", help="write the file, but do not log in to check it")


def no_rules_file_hint(path: Path) -> str:
    """What the "no rules file" error adds: the two ways to get one."""
    return (f"  No rules file at {path} yet. Write one with `mailrules init` (a few questions), or try\n"
            "  rules on a throwaway server first with `mailrules demo --keep`; -c FILE (or MAILRULES_CONFIG)\n"
            "  names a rules file elsewhere.")


def rules_file_absent(path: Path) -> bool:
    """Whether `path` (with ~ expanded) names no file; False when it cannot be told (~nosuchuser)."""
    try:
        return not path.expanduser().exists()
    except (RuntimeError, OSError):
        return False


def password_source(text: str) -> tuple[str, object]:
    """The rules file's key and value for a --password-from SOURCE; ValueError says what is wrong."""
    kind, sep, rest = text.partition(":")
    if text.strip() == "keyring":
        return "keyring", True
    if sep and kind == "env" and rest.strip():
        return "password_env", rest.strip()
    if sep and kind == "command" and rest.strip():
        return "password_command", rest.strip()
    raise ValueError(f"--password-from {text!r}: expected keyring, env:VARIABLE or command:COMMAND ARGS "
                     "(e.g. 'command:pass show mail/me'); the password itself never goes into the rules file")


def render(account: str, host: str, port: int, tls: str, username: str, source: tuple[str, object]) -> str:
    """The starter rules file (YAML; the values JSON-quoted, which YAML reads as written)."""
    key, value = source
    tls_line = "" if tls == "implicit" else f"    tls: {tls}\n"
    return f"""\
# mailrules rules file, written by `mailrules init`. The reference: README.md, "Rules file".
# Check it with `mailrules check --connect`; preview with `mailrules run --once --dry-run`.
version: 1
accounts:
  {json.dumps(account)}:
    host: {json.dumps(host)}
    port: {port}
{tls_line}    username: {json.dumps(username)}
    {key}: {json.dumps(value)}
    watch: [INBOX]
rules:
  # A first rule: mail from a mailing list gets the keyword $List (nothing is moved).
  # Then, e.g.:  actions: [{{move: Lists}}]
  - name: mailing lists
    match:
      header: {{List-Id: ""}}   # the header exists
    actions:
      - add_keyword: $List
"""


def init_command(args: argparse.Namespace, out: TextIO | None = None, ask: Callable[[str], str] | None = None) -> int:
    """Write the starter file (asking for what the flags left out), then check it. Returns the exit code."""
    from .config import default_config_path

    out = out or sys.stdout
    path = Path(args.config).expanduser() if args.config else default_config_path()
    if path.exists():
        print(f"mailrules init: {path} already exists; it is left as it is (edit it, or name another "
              "file with -c FILE)", file=sys.stderr)
        return EXIT_USAGE
    answers = _answers(args, ask)
    if isinstance(answers, str):
        print(f"mailrules init: {answers}", file=sys.stderr)
        return EXIT_USAGE
    host, username, source_text = answers
    try:
        source = password_source(source_text)
    except ValueError as exc:
        print(f"mailrules init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = render(args.account, host, args.port or PORTS[args.tls], args.tls, username, source)
    problem = _problem(text, path.name)
    if problem:
        print(f"mailrules init: nothing written: {problem}", file=sys.stderr)
        return EXIT_USAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as fh:  # "x": never over a file that appeared meanwhile
            fh.write(text)
    except FileExistsError:
        print(f"mailrules init: {path} already exists; it is left as it is", file=sys.stderr)
        return EXIT_USAGE
    print(f"Wrote {path}", file=out)
    if source[0] == "keyring":
        print(f"Store the password in the system keyring: mailrules login {args.account}", file=out)
    if args.no_check:
        print("Not checked (--no-check). Check it with: mailrules check --connect", file=out)
        return EXIT_OK
    return _check(path, out)


def _answers(args: argparse.Namespace, ask: Callable[[str], str] | None) -> tuple[str, str, str] | str:
    """(host, username, password source) from the flags, else asked; a str says what is missing."""
    questions = [("host", "IMAP server (e.g. imap.example.com): "),
                 ("username", "Login name (often your mail address): "),
                 ("password_from", "Where the password comes from: keyring, env:VARIABLE or command:COMMAND: ")]
    interactive = ask is not None or sys.stdin.isatty()
    ask = ask or input
    values = []
    for attribute, question in questions:
        value = getattr(args, attribute)
        if not value and interactive:
            try:
                value = ask(question).strip()
            except EOFError:
                value = ""
        if not value:
            return (f"--{attribute.replace('_', '-')} is needed (no terminal to ask on); "
                    "see mailrules init --help")
        values.append(value)
    return values[0], values[1], values[2]


def _problem(text: str, name: str) -> str | None:
    """What the loader says about `text`, or None: a file init writes always loads."""
    from .config import ConfigError, load

    with tempfile.TemporaryDirectory(prefix="mailrules-init-") as tmp:
        candidate = Path(tmp) / name
        candidate.write_text(text, encoding="utf-8")
        try:
            load(candidate)
        except ConfigError as exc:
            return exc.message if hasattr(exc, "message") else str(exc)
    return None


def _check(path: Path, out: TextIO) -> int:
    """`mailrules check --connect` on the new file; what failed in words, never a traceback."""
    from .checks import check_accounts
    from .config import load
    from .plugins import Registry
    from .secrets import protect_accounts

    print(f"Checking it against the server (mailrules check --connect -c {path}):", file=out, flush=True)
    try:
        registry = Registry.load()
        config = load(path, registry=registry)
        protect_accounts(config.accounts.values())
        code = check_accounts(config, registry, out=out)
    except Exception as exc:  # noqa: BLE001 - the file is written: say what failed and how to go on
        print(f"mailrules init: the check failed: {exc}", file=out)
        code = EXIT_FAILURE
    if code != EXIT_OK:
        print(f"The rules file is written; fix what is named above in {path}, then run "
              "mailrules check --connect", file=out)
        return EXIT_FAILURE
    print("All good. Next: mailrules run --once --dry-run (changes nothing; prints what each rule would do)",
          file=out)
    return EXIT_OK
