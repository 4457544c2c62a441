"""`mailrules demo --keep` and `--load`: the throwaway server left running for one's own rules.

Why a module of its own: what --keep leaves behind is the user's, not the demo's. The rules
file the user edits, the password it reads and the progress the printed commands keep live in
a directory that outlives the throwaway server (`keep_dir()`, ``~/.config/mailrules/demo`` by
default), so that Ctrl-C removes the server and its mail but never the rules the user wrote;
the next ``--keep`` reuses that file, its password and (when free) its port. Every printed
command names the same ``--state``, so a dry run after a real run previews what is left, not
everything again. Messages loaded with ``--load`` keep their read, answered, flagged, draft
and deleted marks (mbox ``Status:``/``X-Status:``, Maildir info flags).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import mailbox
import os
import re
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .testing.dovecot import DovecotServer

EXIT_OK = 0
EXIT_FAILURE = 1

# mailbox.mboxMessage flags (from Status: and X-Status:): R read, O old (not \Recent: nothing to
# set), D deleted, F flagged, A answered.
MBOX_FLAGS = {"R": "\\Seen", "D": "\\Deleted", "F": "\\Flagged", "A": "\\Answered"}
# mailbox.MaildirMessage flags (the ":2," info): D draft, F flagged, P passed (forwarded),
# R replied, S seen, T trashed.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen",
                 "T": "\\Deleted"}


def keep_dir() -> Path:
    """Where --keep writes what the user may edit: $MAILRULES_DEMO_DIR, else ~/.config/mailrules/demo."""
    env = os.environ.get("MAILRULES_DEMO_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mailrules" / "demo"


def saved_port() -> int:
    """The port of the last --keep server (0: none), so that the kept rules file still fits."""
    with contextlib.suppress(OSError, ValueError):
        return int((keep_dir() / "port").read_text().strip())
    return 0


def mailrules_command() -> str:
    """How to run mailrules again from another terminal: `mailrules` if that is what runs, else a path."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "mailrules":
        on_path = shutil.which("mailrules")
        if on_path and Path(on_path).resolve() == argv0.resolve():
            return "mailrules"
        return shlex.quote(str(argv0.resolve()))
    return f"{shlex.quote(sys.executable)} -m mailrules"


def keep(server: DovecotServer, load_paths: list[Path], out: TextIO) -> int:
    """Leave the server running for a mail client and one's own rules, until Ctrl-C or SIGTERM."""
    directory = keep_dir()
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / "password"
    password = None
    with contextlib.suppress(OSError):
        password = password_file.read_text().strip() or None
    me = server.add_user("me", password)
    loaded = _load(server, me, load_paths) if load_paths else 0
    password_file.write_text(me.password + "\n")
    os.chmod(password_file, 0o600)
    (directory / "port").write_text(f"{server.port}\n")
    state = directory / "state"
    shutil.rmtree(state, ignore_errors=True)  # progress on the previous server, whose UIDs are gone
    rules_file = directory / "rules.yaml"
    notes = _rules_file_notes(rules_file, server.port, me.name, password_file)
    logins = "\n".join(f"    {u.name:<10} {u.password}" for u in server.users)
    mr = mailrules_command()
    print(KEEP_TEXT.format(host=server.host, port=server.port, logins=logins, loaded=loaded, notes=notes,
                           rules=shlex.quote(str(rules_file)), state=shlex.quote(str(state)), mr=mr),
          file=out, flush=True)
    return wait_until_stopped(server, directory, out)


def _rules_file_notes(rules_file: Path, port: int, user: str, password_file: Path) -> str:
    """Write the starter rules file, or keep the user's and say whether its port still fits."""
    if not rules_file.exists():
        rules_file.write_text(RULES_TEMPLATE.format(port=port, user=user, password_file=password_file))
        return f"Wrote a rules file for it (yours to edit; kept after Ctrl-C): {rules_file}"
    note = f"Your rules file from the last --keep is kept as it was: {rules_file}"
    ports = re.findall(r"^\s*port:\s*(\d+)", rules_file.read_text(errors="replace"), re.M)
    if ports and str(port) not in ports:
        note += (f"\n  Its port is {ports[0]}, this server's {port}: change its 'port:' line to {port} "
                 "(or run the demo with --port " + ports[0] + ")")
    return note


def wait_until_stopped(server: DovecotServer, directory: Path, out: TextIO) -> int:
    """Wait for Ctrl-C (SIGINT) or SIGTERM, then say where the user's rules file stays.

    Why handlers for both, not Python's KeyboardInterrupt: a process started in the background
    by a non-interactive shell (``cmd &``, a CI step, a test runner run that way) inherits
    SIGINT *ignored*, and Python then keeps it ignored, so the promised Ctrl-C did nothing and
    the server ran on until killed. The daemon (`mailrules run`) installs its own handlers too.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            if not server.running:
                print("mailrules demo: Dovecot stopped by itself", file=sys.stderr)
                return EXIT_FAILURE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"\nmailrules demo: stopping the server and removing its mail; your rules file stays in {directory}",
          file=out)
    return EXIT_OK


def _load(server: DovecotServer, me, load_paths: list[Path]) -> int:
    loaded = 0
    client = server.client(me)
    try:
        for raw, flags in messages_from(load_paths):
            client.append("INBOX", raw, flags=flags, msg_time=_date_of(raw))
            loaded += 1
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return loaded


RULES_TEMPLATE = """\
# A rules file for the demo server (written by `mailrules demo --keep`, which keeps it and
# never overwrites it). Edit the rules, then run the commands the demo printed.
version: 1
accounts:
  me:
    host: 127.0.0.1
    port: {port}
    tls: none                   # plain IMAP: allowed because the host is loopback
    username: {user}
    password_command: [cat, {password_file}]
    watch: [INBOX]
rules:
  - name: mailing lists
    match:
      header: {{List-Id: ""}}   # the header exists
    actions:
      - add_keyword: $List
  - name: large mail
    match:
      larger: 1MB
    actions:
      - flag
"""

KEEP_TEXT = """
The server keeps running until you press Ctrl-C (then it and its mail are removed).
  IMAP server: {host} port {port}, plain text (no TLS), loopback only
  Logins (user, password):
{logins}
  The account 'me' holds {loaded} message(s) you loaded with --load; the demo's rules never touch it.
{notes}
Try your own rules on it, in another terminal (all with the same --state, so that a dry run
after a real run shows only what is left to do):
  {mr} check -c {rules}
  {mr} run --once --dry-run -c {rules} --state {state}
  {mr} run --once -c {rules} --state {state}
  {mr} status -c {rules} --state {state}
In a mail client: IMAP, server {host}, port {port}, no encryption, password login, a login above.
"""


def messages_from(paths: Iterable[Path], *, named: bool = True) -> Iterator[tuple[bytes, tuple[str, ...]]]:
    """(message, IMAP flags) of .eml files, mbox files and Maildirs; directories are walked.

    A file named on the command line is a message unless it is an mbox; inside a walked
    directory only ``*.eml`` files and mbox files count (other files are skipped).
    """
    for path in paths:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                for message in mailbox.Maildir(path, create=False):
                    yield message.as_bytes(), _flags(message.get_flags(), MAILDIR_FLAGS)
                continue
            for child in sorted(path.rglob("*")):
                if child.is_file():
                    yield from messages_from([child], named=False)
        elif path.is_file():
            with path.open("rb") as fh:
                head = fh.read(5)
            if head == b"From ":
                for message in mailbox.mbox(path, create=False):
                    yield message.as_bytes(), _flags(message.get_flags(), MBOX_FLAGS)
            elif named or path.suffix.lower() == ".eml":
                yield path.read_bytes(), ()


def _flags(letters: str, table: dict[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(table[c] for c in letters if c in table))


def _date_of(raw: bytes) -> datetime | None:
    """The Date header as the arrival time, so that age rules see the message's real age."""
    with contextlib.suppress(Exception):
        header = email.message_from_bytes(raw[:65536], policy=email.policy.compat32).get("Date")
        if header:
            return email.utils.parsedate_to_datetime(header)
    return None
