"""`mailrules demo`: the example rules at work on a throwaway local server, in about ten seconds.

One module because the demo is one short story read top to bottom (sample mail, server, the
example's accounts pointed at it, the live printout, the summary); split, a newcomer would
chase it through files.

Why it exists: a newcomer should see what mailrules does before writing a rules file or
pointing it at a real mailbox. The demo therefore needs no server and no configuration:

1. it starts a private Dovecot on 127.0.0.1 (the test kit's `DovecotServer`; as root with
   Dovecot's privilege separation, as any other user entirely as that user);
2. it creates one IMAP user per account of the rules file (`rules.example.yaml` unless
   ``-c`` names another) and fills their mailboxes with a few dozen generated messages:
   mailing lists, notifications, newsletters, people, spam-like mail, large attachments,
   old mail;
3. it runs the file's rules, with the accounts pointed at that server, through the real
   daemon (`mailrules.daemon.process.run_daemon`, what ``mailrules run --sweep`` runs): the
   catch-up and the scheduled sweeps first, then IDLE while the demo delivers a few more
   messages, one every half second;
4. it prints every action as the daemon applies it (from the `mailrules_action_applied`
   hook, the same one plugins get), then each folder's message count before and after, and
   the flags and keywords now on the server (read back over IMAP, not from the events).

``--keep`` leaves the server running afterwards and prints its address, the logins and a
rules file for it, so that a mail client and ``mailrules run -c ...`` can be tried on it;
``--load PATH`` (implies ``--keep``) puts one's own ``.eml`` files, mbox files or Maildirs
into a separate account, ``me``, that the demo's rules do not touch.

Without Dovecot the demo says how to install it and exits 2. Pure-Python IMAP servers on
PyPI were considered and not used (see README, "Try it").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import imaplib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .api import Action
from .model import Account, Auth, Config
from .plugins import ActionEvent, hookimpl

if TYPE_CHECKING:
    import imapclient

    from .testing.dovecot import DovecotServer, User

__all__ = ["Sample", "default_rules_file", "demo_command", "sample_messages"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

INSTALL_HINT = (
    "mailrules demo needs Dovecot, which it starts as a private throwaway server on 127.0.0.1.\n"
    "Install it once, as root (Debian, Ubuntu):  apt-get install -y dovecot-imapd\n"
    "(Fedora: dnf install dovecot; Arch: pacman -S dovecot; macOS: brew install dovecot.)\n"
    "The package's own system service is not used and may stay disabled."
)

LIVE_INTERVAL = 0.5  # seconds between the messages delivered while the daemon watches
READY_TIMEOUT = 15.0  # for the daemon to be watching every mailbox with IDLE
SETTLE_TIMEOUT = 12.0  # for the live messages to be acted on
QUIET_PERIOD = 1.0  # no new action for this long: the daemon is done

_SYSTEM_FLAGS = {"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent"}


# ---------------------------------------------------------------------------- sample mail


@dataclasses.dataclass(frozen=True)
class Sample:
    """One generated message: where it goes, with which flags and arrival time."""

    account: str
    mailbox: str
    raw: bytes
    subject: str
    message_id: str
    flags: tuple[str, ...] = ()
    arrived: datetime | None = None  # INTERNALDATE; None: now
    live: bool = False  # delivered while the daemon watches, not before it starts


def sample_messages(accounts: Iterable[str], now: datetime | None = None) -> list[Sample]:
    """A few dozen messages for the example rules' accounts (the first two names are used).

    The mix is chosen so that most rules of `rules.example.yaml` have something to do and
    some messages match nothing (mail from people stays where it is).
    """
    from .testing.messages import make_message

    names = list(accounts)
    personal = names[0]
    work = names[1] if len(names) > 1 else names[0]
    now = now or datetime.now().astimezone()
    out: list[Sample] = []
    counter = iter(range(1, 10_000))

    def add(account: str, mailbox: str, *, subject: str, live: bool = False, flags: tuple[str, ...] = (),
            age: timedelta | None = None, arrived: datetime | None = None, **kwargs) -> None:
        when = arrived or (now - age if age else None)
        message_id = f"<demo-{next(counter)}@mailrules.demo>"
        raw = make_message(subject=subject, message_id=message_id, date=when or now, **kwargs)
        out.append(Sample(account, mailbox, raw, subject, message_id, flags, when, live))

    _list_mail(add, personal)
    _inbox_mail(add, personal)
    _work_mail(add, work)
    _live_mail(add, personal, work)
    return out


# The List-Id of the example mailing list (rules.example.yaml files and flags its build failures).
_DEV = {"List-Id": "Developers <dev.lists.example.org>",
        "List-Unsubscribe": "<mailto:dev-leave@lists.example.org>"}


def _list_mail(add: Callable[..., None], personal: str) -> None:
    """The mailing list, its CI notifications and the standup bot (the first account)."""
    dev = _DEV
    # Mailing list: build failures are flagged, tagged and filed; the discussion stays.
    for n, days in ((812, 0), (813, 1)):
        add(personal, "INBOX", subject=f"Build #{n} failed on main", from_="Jenkins <jenkins@example.org>",
            headers=dev, body=f"build #{n} failed: 3 tests\n", age=timedelta(hours=days * 5 + 1))
    for topic in ("RFC: drop Python 3.10", "Release notes for 2.4", "Who owns the flaky test?"):
        add(personal, "INBOX", subject=f"[dev] {topic}", from_="Carol <carol@example.org>", headers=dev,
            body="Thoughts welcome.\n", age=timedelta(hours=3))
    # Notifications the server files into Lists/dev itself (as a Sieve filter would).
    for branch, result in (("main", "failed"), ("release/2.4", "failure"), ("feature/x", "failed")):
        add(personal, "Lists/dev", subject=f"[CI] pipeline {result} on {branch}", from_="ci@example.com",
            headers={"X-CI-Branch": branch}, body="See the log.\n", age=timedelta(hours=2))
    add(personal, "Lists/dev", subject="[CI] pipeline passed on main", from_="ci@example.com",
        headers={"X-CI-Branch": "main"}, body="All green.\n", age=timedelta(hours=1), flags=("\\Seen",))
    for n in (1, 2):
        add(personal, "INBOX", subject=f"Standup notes, team {n}", from_="standup-bot@example.com",
            to="team@example.com", body="Yesterday / today / blockers\n", age=timedelta(hours=2))


def _inbox_mail(add: Callable[..., None], personal: str) -> None:
    """Newsletters, team mail, people, receipts, spam, attachments and old trash (the first account)."""
    # Newsletters: the old ones go to the trash in the daily sweep.
    news = {"List-Unsubscribe": "<https://news.example.net/unsubscribe>"}
    for months, title in ((5, "Spring deals"), (4, "Our summer catalogue"), (4, "Webinar recording"),
                          (0, "This week in Python"), (0, "Your monthly digest")):
        add(personal, "INBOX", subject=f"Newsletter: {title}", from_="News <news@news.example.net>",
            headers=news, body="Read online.\n", age=timedelta(days=30 * months + 1))
    # Team mail: urgent subjects are flagged for triage.
    add(personal, "INBOX", subject="URGENT: outage in eu-west", from_="Dan <dan@example.org>",
        to="team@example.com", body="Pager went off.\n", age=timedelta(minutes=30))
    add(personal, "INBOX", subject="Lunch on Friday?", from_="Dan <dan@example.org>", to="team@example.com",
        body="Pizza?\n", age=timedelta(hours=4))
    # People.
    add(personal, "INBOX", subject="Photos from the weekend", from_="Mum <mum@example.net>",
        to="me@example.com", body="Lovely day!\n", age=timedelta(days=1))
    add(personal, "INBOX", subject="Re: the offer", from_="Erin <erin@example.org>", to="frank@example.org",
        cc="me@example.com", body="Looping you in.\n", age=timedelta(hours=6))
    add(personal, "INBOX", subject="Re: review of chapter 3", from_="Grace <grace@example.org>",
        to="me@example.com", body="Done, see my notes.\n", age=timedelta(days=2),
        flags=("\\Seen", "\\Answered", "$Dev", "$Review"))
    # Shop receipts (copied to Receipts and to the work account's archive) and invoices.
    add(personal, "INBOX", subject="Your order 4711 has shipped", from_="Shop <shop@example.com>",
        body="Thank you for your order.\n", age=timedelta(hours=8))
    add(personal, "INBOX", subject="Ihre Rechnung 2024-117", from_="Stadtwerke <rechnung@example.de>",
        to="me@example.com", headers={"Bcc": "invoices@example.com"}, body="Anbei Ihre Rechnung.\n",
        age=timedelta(days=3))
    # Spam-like.
    for subject in ("You have WON a prize", "Cheap meds, no prescription"):
        add(personal, "INBOX", subject=subject, from_="Prize Desk <win@lottery.example>",
            headers={"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=12.1"}, body="Click here.\n",
            age=timedelta(hours=9))
    # Large attachments: the one over 5 MB with "Größe" in its subject is tagged for review.
    big = secrets.token_bytes(4 * 1024 * 1024)  # random, so base64 keeps it over 5 MB
    add(personal, "INBOX", subject="Größe der Pläne (floor plans)", from_="Architekt <plan@example.de>",
        body="Die Pläne im Anhang.\n", attachments=[("plans.pdf", big)], age=timedelta(days=1),
        flags=("\\Flagged",))
    add(personal, "INBOX", subject="Holiday video", from_="Mum <mum@example.net>", body="Enjoy\n",
        attachments=[("video.mp4", secrets.token_bytes(1024 * 1024))], age=timedelta(days=1))
    # Old mail: the trash is emptied of what is older than 30 days.
    for days in (45, 60, 3):
        add(personal, "Trash", subject=f"Deleted {days} days ago", from_="old@example.org",
            body="Old.\n", age=timedelta(days=days), flags=("\\Seen",))


def _work_mail(add: Callable[..., None], work: str) -> None:
    """The second account's mail: old reports to archive, today's mail to flag."""
    # The work account: last year's read mail is archived; one day of mail is flagged.
    for month in (3, 7, 11):
        add(work, "INBOX", subject=f"Quarterly report 2023-{month:02d}", from_="cfo@corp.example",
            to="jdoe@corp.example", body="Numbers.\n", arrived=datetime(2023, month, 10, 9).astimezone(),
            flags=("\\Seen",))
    add(work, "INBOX", subject="Offsite agenda", from_="hr@corp.example", to="jdoe@corp.example",
        body="Agenda.\n", arrived=datetime(2024, 6, 3, 10).astimezone())
    add(work, "INBOX", subject="Welcome aboard", from_="hr@corp.example", to="jdoe@corp.example",
        body="Hello!\n", age=timedelta(days=2))
    add(work, "INBOX", subject="SEV2: disk full on db-3", from_="ops@corp.example", to="team@example.com",
        body="Investigating.\n", age=timedelta(minutes=10))


def _live_mail(add: Callable[..., None], personal: str, work: str) -> None:
    """Delivered while the daemon watches with IDLE, after it started."""
    dev = _DEV
    # Delivered while the daemon watches with IDLE.
    add(personal, "INBOX", live=True, subject="Build #814 failed on main", from_="Jenkins <jenkins@example.org>",
        headers=dev, body="build #814 failed: 1 test\n")
    add(personal, "INBOX", live=True, subject="Your order 4712 confirmation", from_="Shop <shop@example.com>",
        body="We received your order.\n")
    add(personal, "INBOX", live=True, subject="Claim your free cruise", from_="Cruises <win@lottery.example>",
        headers={"X-Spam-Flag": "YES"}, body="Click.\n")
    add(personal, "INBOX", live=True, subject="Sev1: checkout is down", from_="Dan <dan@example.org>",
        to="team@example.com", body="All hands.\n")
    add(personal, "INBOX", live=True, subject="Standup notes, team 3", from_="standup-bot@example.com",
        to="team@example.com", body="Blockers: none\n")
    add(work, "INBOX", live=True, subject="Outage review notes", from_="ops@corp.example",
        to="team@example.com", body="Timeline attached.\n")


# ---------------------------------------------------------------------------- the event printer


class _Printer:
    """A plugin that collects each applied action (rule, account/mailbox, subject, action) and
    prints them as a table in a stable order: the daemon's accounts and mailboxes run in
    parallel, so the order in which actions are applied changes from run to run. Rows are
    sorted by phase (catch-up, sweep, live), then the order in which the demo delivered the
    messages, then the order of the message's own actions; `flush` prints the rows so far."""

    mailrules_plugin_name = "demo"

    def __init__(self, subjects: dict[str, str], live_ids: set[str], out: TextIO) -> None:
        self.subjects = subjects
        self.live_ids = live_ids
        self.out = out
        self.lock = threading.Lock()
        self.kinds: Counter[str] = Counter()
        self.messages: set[str] = set()
        self.seen_live: set[str] = set()
        self.last_event = time.monotonic()
        self.scheduled: set[str] = set()  # names of the rules that run as sweeps (schedule:)
        self.delivery_order: dict[str, int] = {}  # Message-ID -> when the demo delivered it
        self.rows: list[tuple[tuple[int, int, int], str]] = []
        self.sequence = 0
        self.actions: Mapping[str, Action] = {}  # the registry's, by name (set once it is loaded)

    @hookimpl
    def mailrules_action_applied(self, event: ActionEvent) -> None:
        known = self.actions.get(event.action)
        action = _describe_action(known, event.action, event.argument)
        with self.lock:
            self.last_event = time.monotonic()
            self.kinds[known.outcome() if known is not None else event.action] += len(event.uids)
            for uid, mid in zip(event.uids, event.message_ids, strict=False):
                self.messages.add(mid or f"{event.account}/{event.mailbox}/{uid}")
                phase = 2 if mid in self.live_ids else 1 if event.rule in self.scheduled else 0
                if mid in self.live_ids:
                    self.seen_live.add(mid)
                subject = self.subjects.get(mid, mid or f"UID {uid}")
                place = f"{event.account}/{event.mailbox}"
                when = ("catch-up", "sweep", "live")[phase]
                self.sequence += 1
                key = (phase, self.delivery_order.get(mid, len(self.delivery_order) + uid), self.sequence)
                self.rows.append((key, f"  {when:<8}  {place:<18}  {_clip(event.rule, 31):<31}  "
                                       f"{_clip(subject, 34):<34}  {action}"))

    def flush(self) -> None:
        """Print the rows collected so far, in their stable order."""
        with self.lock:
            rows, self.rows = sorted(self.rows), []
        for _key, row in rows:
            print(row, file=self.out, flush=True)


def _describe_action(action: Action | None, name: str, argument: object) -> str:
    """The action as the demo's table shows it: its name, then its argument unless it says none."""
    if argument is None or argument is True or (action is not None and not action.describe(argument)):
        return name
    if isinstance(argument, list | tuple):
        return f"{name} {', '.join(map(str, argument))}"
    return f"{name} {argument}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _ReadyWatch(logging.Handler):
    """Notices the daemon's 'watching with IDLE' and '... with NOTIFY' lines: when every watched mailbox
    has one, the live messages will be announced by IDLE or NOTIFY rather than found by the catch-up."""

    def __init__(self, expected: set[tuple[str, str]]) -> None:
        super().__init__(logging.INFO)
        self.expected = set(expected)
        self.ready = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if message.startswith("account ") and message.endswith(" with NOTIFY"):  # one line, many mailboxes
                account, _, rest = message[len("account "):].partition(": watching ")
                self.expected -= {(account, m) for m in rest.removesuffix(" with NOTIFY").split(", ")}
            elif "watching with IDLE" in message:
                self.expected = {(a, m) for a, m in self.expected
                                 if not message.startswith(f"account {a} mailbox {m}:")}
            else:
                return
            if not self.expected:
                self.ready.set()


# ---------------------------------------------------------------------------- the command


def default_rules_file() -> Path | None:
    """``rules.example.yaml`` in the current directory, else next to the package (a source checkout),
    else the copy inside the package (an installed wheel)."""
    for candidate in (Path.cwd() / "rules.example.yaml",
                      Path(__file__).resolve().parent.parent / "rules.example.yaml",
                      Path(__file__).resolve().parent / "rules.example.yaml"):
        if candidate.is_file():
            return candidate
    return None


def demo_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo (see the module docstring). Returns the exit code."""
    out = out or sys.stdout
    from .config import ConfigError, load
    from .plugins import PluginError, Registry
    from .testing.dovecot import DovecotError, DovecotServer, dovecot_available

    keep = bool(args.keep or args.load)
    if not dovecot_available():
        print(INSTALL_HINT, file=sys.stderr)
        return EXIT_USAGE
    config_arg = getattr(args, "config", None)
    rules_path = Path(config_arg) if config_arg else default_rules_file()
    if rules_path is None:
        print("mailrules demo: no rules.example.yaml here; run it in the mailrules source directory "
              "or name a rules file with -c FILE", file=sys.stderr)
        return EXIT_USAGE
    load_paths = [Path(p).expanduser() for p in args.load]
    missing = [str(p) for p in load_paths if not p.exists()]
    if missing:
        print(f"mailrules demo: --load: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE

    printer = _Printer({}, set(), out)
    try:
        registry = Registry.load(extra=[printer])
        printer.actions = registry.actions
        config = load(rules_path, registry=registry)
    except (ConfigError, PluginError) as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError:
        print(f"mailrules: no rules file at {rules_path}", file=sys.stderr)
        return EXIT_USAGE
    if not config.accounts:
        print(f"mailrules demo: {rules_path} has no accounts", file=sys.stderr)
        return EXIT_USAGE

    # The daemon's log would drown the table: warnings only on stderr unless -v. The watcher
    # logger itself stays at INFO for _ReadyWatch, which waits for its 'watching with IDLE'.
    if not getattr(args, "verbose", 0):
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    logging.getLogger("mailrules.watcher").setLevel(logging.INFO)

    root = Path(tempfile.mkdtemp(prefix="mailrules-demo-"))
    server = DovecotServer(root / "dovecot", port=args.port)
    try:
        try:
            server = _started(server, root, keep and not args.port)
        except DovecotError as exc:
            print(f"mailrules demo: could not start Dovecot: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            code = _run(server, config, registry, printer, root, out)
        except (OSError, imaplib.IMAP4.error) as exc:
            print(f"mailrules demo: failed talking to the demo server: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if keep and code == EXIT_OK:
            from .demo_keep import keep as keep_serving

            return keep_serving(server, load_paths, out)
        return code
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _started(server: DovecotServer, root: Path, reuse_port: bool) -> DovecotServer:
    """Start the server; with --keep (and no --port), on the last --keep's port when it is free,
    so that the rules file --keep kept still points at it."""
    from .demo_keep import saved_port
    from .testing.dovecot import DovecotError, DovecotServer

    port = saved_port() if reuse_port else 0
    if port:
        candidate = DovecotServer(root / "dovecot-kept-port", port=port)
        with contextlib.suppress(DovecotError, OSError):
            candidate.start()
            return candidate
        with contextlib.suppress(Exception):
            candidate.stop()
    server.start()
    return server


def _run(server: DovecotServer, config: Config, registry, printer: _Printer, root: Path, out: TextIO) -> int:
    from .daemon.process import DaemonOptions, run_daemon
    from .state import StateStore

    users = {name: server.add_user(_user_name(name)) for name in config.accounts}
    demo_config = _pointed_at(config, server, users)
    samples = sample_messages(config.accounts)
    printer.subjects.update({s.message_id: s.subject for s in samples})
    printer.live_ids.update(s.message_id for s in samples if s.live)
    printer.delivery_order.update({s.message_id: n for n, s in enumerate(samples)})
    printer.scheduled.update(rule.name for rule in config.rules if rule.schedule is not None)
    early = [s for s in samples if not s.live]
    live = [s for s in samples if s.live]

    print(f"mailrules demo: a throwaway Dovecot on {server.host}:{server.port}; "
          f"accounts {', '.join(config.accounts)}; {len(config.rules)} rules from {config.path}", file=out)
    clients = {name: server.client(user) for name, user in users.items()}
    try:
        _deliver(clients, early)
        before = _folder_counts(clients)
        print(f"Filled the mailboxes with {len(early)} sample messages (mailing lists, notifications, "
              "newsletters, people, spam, large attachments, old mail).", file=out)
        print("Running the rules through the daemon: catch-up and scheduled sweeps, then IDLE.\n", file=out)
        print(f"  {'when':<8}  {'account/mailbox':<18}  {'rule':<31}  {'message':<34}  action", file=out)

        watched = {(a.name, m) for a in demo_config.accounts.values() for m in a.watch}
        ready = _ReadyWatch(watched)
        logging.getLogger("mailrules").addHandler(ready)
        store = StateStore(root / "state")
        done = threading.Event()
        feeder = threading.Thread(target=_feed, name="demo-feeder", daemon=True,
                                  args=(server, users, live, printer, ready, done))
        options = DaemonOptions(sweep=True)
        feeder.start()
        try:
            run_daemon(demo_config, registry, store, options)
        finally:
            done.set()
            feeder.join(timeout=5)
            printer.flush()
            store.close()
            logging.getLogger("mailrules").removeHandler(ready)

        after = _folder_counts(clients)
        marks = _marks(clients)
    finally:
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.logout()

    print("\nFolders (messages before -> after):", file=out)
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key, 0), after.get(key, 0)
        change = "" if a == b else f"  ({a - b:+d})"
        print(f"  {key[0] + '/' + key[1]:<34} {b:>3} -> {a:<3}{change}", file=out)
    print("\nOn the server now:", file=out)
    for (account, folder), counts in sorted(marks.items()):
        shown = ", ".join(f"{flag} x{n}" for flag, n in sorted(counts.items()))
        print(f"  {account + '/' + folder:<34} {shown}", file=out)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(printer.kinds.items()))
    missing_live = len(printer.live_ids - printer.seen_live)
    print(f"\nSummary: {sum(printer.kinds.values())} message actions on {len(printer.messages)} messages "
          f"({kinds}); {len(live) - missing_live} of {len(live)} messages delivered during IDLE acted on.",
          file=out)
    if not printer.kinds:
        print("mailrules demo: no rule acted on anything", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _user_name(account: str) -> str:
    """A Dovecot user name for an account name (account names are free text)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in account)[:40].strip(".-")
    return safe or "account"


def _pointed_at(config: Config, server: DovecotServer, users: dict[str, User]) -> Config:
    """The same rules with every account pointed at the throwaway server (plain IMAP on loopback)."""
    accounts: dict[str, Account] = {}
    for name, account in config.accounts.items():
        user = users[name]
        accounts[name] = dataclasses.replace(
            account, host=server.host, port=server.port, tls="none", ca_file=None, insecure=False,
            username=user.name, auth=Auth("password", user.password), timeout=10.0,
            watching=dataclasses.replace(account.watching, poll_interval=1.0, idle_interval=60.0, reconnect_max=2.0),
        )
    return dataclasses.replace(config, accounts=accounts)


def _deliver(clients: dict[str, imapclient.IMAPClient], samples: Iterable[Sample]) -> None:
    for sample in samples:
        client = clients[sample.account]
        if sample.mailbox.upper() != "INBOX" and not client.folder_exists(sample.mailbox):
            client.create_folder(sample.mailbox)
        client.append(sample.mailbox, sample.raw, flags=sample.flags, msg_time=sample.arrived)


def _feed(server: DovecotServer, users: dict[str, User], live: list[Sample], printer: _Printer,
          ready: _ReadyWatch, done: threading.Event) -> None:
    """Deliver the live messages once the daemon watches, then stop it when all were acted on."""
    try:
        if not ready.ready.wait(READY_TIMEOUT) or done.is_set():
            return  # the daemon did not get to IDLE (its log says why); stop it all the same
        _settle(printer, done, QUIET_PERIOD)
        printer.flush()  # the catch-up and the sweeps, before the live deliveries
        clients = {name: server.client(user) for name, user in users.items()}
        try:
            for sample in live:
                if done.is_set():
                    return
                time.sleep(LIVE_INTERVAL)
                _deliver(clients, [sample])
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    client.logout()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline and not done.is_set():
            with printer.lock:
                all_seen = printer.live_ids <= printer.seen_live
                quiet = time.monotonic() - printer.last_event >= QUIET_PERIOD
            if all_seen and quiet:
                break
            time.sleep(0.1)
    except Exception as exc:  # noqa: BLE001 - report, then stop the daemon rather than hang
        print(f"mailrules demo: delivering the live messages failed: {exc}", file=sys.stderr)
    finally:
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own stop: it finishes its pass and exits


def _settle(printer: _Printer, done: threading.Event, quiet: float) -> None:
    """Wait (a few seconds at most) until no action was applied for `quiet` seconds."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline and not done.is_set():
        with printer.lock:
            if time.monotonic() - printer.last_event >= quiet:
                return
        time.sleep(0.1)


def _folder_counts(clients: dict[str, imapclient.IMAPClient]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for account, client in clients.items():
        for name in _selectable(client):
            status = client.folder_status(name, ["MESSAGES"])
            counts[(account, name)] = int(status[b"MESSAGES"])
    return counts


def _selectable(client: imapclient.IMAPClient) -> list[str]:
    """The account's folders that hold messages (not the bare parents such as ``Lists``)."""
    skip = {b"\\noselect", b"\\nonexistent"}
    return [name for flags, _sep, name in client.list_folders()
            if not {f.lower() if isinstance(f, bytes) else f.encode().lower() for f in flags} & skip]


def _marks(clients: dict[str, imapclient.IMAPClient]) -> dict[tuple[str, str], Counter[str]]:
    """Flagged messages and keywords per folder, read back from the server."""
    out: dict[tuple[str, str], Counter[str]] = {}
    for account, client in clients.items():
        for name in _selectable(client):
            client.select_folder(name, readonly=True)
            uids = client.search(["ALL"])
            counts: Counter[str] = Counter()
            for data in (client.fetch(uids, ["FLAGS"]) if uids else {}).values():
                for flag in data.get(b"FLAGS", ()):
                    text = flag.decode(errors="replace") if isinstance(flag, bytes) else str(flag)
                    if text.lower() == "\\flagged" or text.lower() not in _SYSTEM_FLAGS:
                        counts[text] += 1
            client.unselect_folder()
            if counts:
                out[(account, name)] = counts
    return out
