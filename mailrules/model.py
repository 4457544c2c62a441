"""The validated configuration, as plain data.

`config.load()` turns a rules file into these objects; everything downstream (the
criteria compiler, the engine, the watcher) reads only these, never YAML. Data flows
one way: config -> plan -> IMAP.

Criteria are a small tree of frozen dataclasses (`Criterion` subclasses) so that both
the IMAP SEARCH compiler (`criteria.compile_search`) and a local, offline evaluator can
walk the same structure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where something was written: file, 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


# --------------------------------------------------------------------------- criteria


@dataclass(frozen=True)
class Text:
    """Case-insensitive substring search of an address/text field.

    field is one of: from, to, cc, bcc, subject, body, text.
    """

    field: str
    value: str


@dataclass(frozen=True)
class Header:
    """HEADER name value; value "" means the header exists."""

    name: str
    value: str


@dataclass(frozen=True)
class Size:
    """op is 'larger' or 'smaller'; size in bytes (RFC822.SIZE)."""

    op: str
    size: int
    written: str = field(default="", compare=False, repr=False)  # as the rules file wrote it ("1MB")


@dataclass(frozen=True)
class Age:
    """op is 'older' or 'younger'; seconds since arrival (INTERNALDATE)."""

    op: str
    seconds: int
    written: str = field(default="", compare=False, repr=False)  # as the rules file wrote it ("2w")


@dataclass(frozen=True)
class ArrivalDate:
    """op is 'before', 'on' or 'since'; compares INTERNALDATE's date."""

    op: str
    date: dt.date


@dataclass(frozen=True)
class SentDate:
    """op is 'before', 'on' or 'since'; compares the Date: header's date."""

    op: str
    date: dt.date


@dataclass(frozen=True)
class Flag:
    r"""A system flag (e.g. '\Seen') that must be present (or absent)."""

    flag: str
    present: bool = True


@dataclass(frozen=True)
class Keyword:
    """A keyword (e.g. '$Dev') that must be present (or absent)."""

    name: str
    present: bool = True


@dataclass(frozen=True)
class All:
    """Every child matches (AND). No children: every message matches."""

    children: tuple[Criterion, ...] = ()


@dataclass(frozen=True)
class AnyOf:
    """At least one child matches (OR). No children: nothing matches."""

    children: tuple[Criterion, ...] = ()


@dataclass(frozen=True)
class Not:
    child: Criterion


@dataclass(frozen=True)
class Raw:
    """IMAP search keys, sent verbatim."""

    text: str


Criterion = Text | Header | Size | Age | ArrivalDate | SentDate | Flag | Keyword | All | AnyOf | Not | Raw

MATCH_EVERYTHING = All(())

# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class FolderRef:
    """A destination folder, written with '/' between levels, in plain Unicode.

    account is set for a cross-account destination ('account:Folder').
    """

    path: str
    account: str | None = None

    def __str__(self) -> str:
        return f"{self.account}:{self.path}" if self.account else self.path


@dataclass(frozen=True)
class PredicateCall:
    """One item of a rule's `where:` list: a predicate name and its validated arguments."""

    name: str
    args: Any
    location: Location


@dataclass(frozen=True)
class ActionCall:
    """One item of a rule's `actions:` list.

    arg is already normalised by the action's validator: for flag actions a tuple of
    flags/keywords, for copy/move a FolderRef, None for bare-word actions.
    """

    name: str
    arg: Any
    location: Location


@dataclass(frozen=True)
class Schedule:
    """When a scheduled rule sweeps: a 5-field cron expression or an interval."""

    cron: str | None = None
    every_seconds: int | None = None

    def key(self) -> str:
        """Rules whose schedules have the same key sweep together."""
        return f"cron:{self.cron}" if self.cron else f"every:{self.every_seconds}"


@dataclass(frozen=True)
class Rule:
    name: str
    match: Criterion = MATCH_EVERYTHING
    actions: tuple[ActionCall, ...] = ()
    where: tuple[PredicateCall, ...] = ()
    account: str | None = None  # None: every account
    mailboxes: tuple[str, ...] | None = None  # None: every watched mailbox
    stop: bool = False  # already True when an action is terminal (move/trash/delete)
    enabled: bool = True
    schedule: Schedule | None = None
    location: Location = Location("<memory>")

    def applies_to(self, account: str, mailbox: str, watched: tuple[str, ...]) -> bool:
        """Whether this rule runs on `mailbox` of `account` (arrival or sweep)."""
        if not self.enabled:
            return False
        if self.account is not None and self.account != account:
            return False
        mailboxes = self.mailboxes if self.mailboxes is not None else watched
        return mailbox in mailboxes


# --------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Auth:
    """How to obtain the secret for an account.

    kind is one of: password_command, password_env, keyring, oauth2, password.
    value: the command (str or list), the variable name, True, {'token_command': ...},
    or the password itself. Never logged: see __repr__.
    """

    kind: str
    value: Any = field(repr=False)

    def __repr__(self) -> str:
        shown = self.value if self.kind in ("password_env",) else "***"
        return f"Auth(kind={self.kind!r}, value={shown!r})"


@dataclass(frozen=True)
class Watching:
    """How the daemon (mailrules.daemon) keeps an account: connections (1 for actions and sweeps,
    the rest IDLE one watched mailbox each; further mailboxes are polled), the polling interval
    (servers without IDLE, mailboxes beyond the IDLE connections), how often IDLE is re-issued
    (which also proves the connection alive), the reconnection backoff cap, and whether its
    mailboxes are shared by several daemons (mailrules.claims), each message acted on once.

    Apart from `Account` because it is the daemon's job, not the connection's: `run --once`,
    `apply` and `undo` never read it.
    """

    max_connections: int = 5
    poll_interval: float = 60.0
    idle_interval: float = 300.0
    reconnect_max: float = 300.0
    shared: bool = False
    claim_timeout: float = 600.0


@dataclass(frozen=True)
class Account:
    """An account of the rules file: where and how to connect, what to watch (`watching`: how the
    daemon keeps it; its settings are also readable here, as `account.poll_interval`)."""

    name: str
    host: str
    username: str
    auth: Auth
    port: int = 993
    tls: str = "implicit"  # implicit | starttls | none
    ca_file: str | None = None
    insecure: bool = False
    watch: tuple[str, ...] = ("INBOX",)
    timeout: float = 60.0  # seconds for connect, login and each command
    watching: Watching = Watching()
    location: Location = Location("<memory>")

    @property
    def max_connections(self) -> int:
        return self.watching.max_connections

    @property
    def poll_interval(self) -> float:
        return self.watching.poll_interval

    @property
    def idle_interval(self) -> float:
        return self.watching.idle_interval

    @property
    def reconnect_max(self) -> float:
        return self.watching.reconnect_max

    @property
    def shared(self) -> bool:
        return self.watching.shared

    @property
    def claim_timeout(self) -> float:
        return self.watching.claim_timeout


# --------------------------------------------------------------------------- rule tests


@dataclass(frozen=True)
class Expectation:
    """What a rule test expects (`tests:` ... `expect:`); None: that part is not checked."""

    rules: tuple[str, ...] | None = None
    mailbox: str | None = None
    copies: tuple[str, ...] | None = None
    flags: frozenset[str] | None = None
    keywords: frozenset[str] | None = None
    deleted: bool | None = None


@dataclass(frozen=True)
class RuleTest:
    """One case of a rules file's `tests:` list (parsed by `mailrules.rule_tests`).

    raw: the message's bytes (inline headers and body rendered, or the .eml file read);
    flags: system flags and keywords it arrives with; arrived: None means "now".
    """

    name: str
    raw: bytes
    expect: Expectation
    mailbox: str = "INBOX"
    account: str | None = None  # None: the first account
    flags: tuple[str, ...] = ()
    size: int | None = None
    arrived: dt.datetime | None = None
    location: Location = Location("<memory>")


@dataclass(frozen=True)
class Config:
    accounts: dict[str, Account]
    rules: tuple[Rule, ...]
    path: str = "<memory>"
    timezone: str | None = None
    files: tuple[str, ...] = ()  # the main file and every included file, in load order
    warnings: tuple[str, ...] = ()  # load-time warnings (inline password, ...), already issued
    tests: tuple[RuleTest, ...] = ()  # the `tests:` cases of the main file and its includes
    history_days: int = 30  # finished runs kept in the journal for undo and history (mailrules.journal)

    def rules_for(self, account: str, mailbox: str, *, scheduled: bool | None = False) -> list[Rule]:
        """Enabled rules for this mailbox, in file order.

        scheduled=False: arrival rules only; True: scheduled rules only; None: both.
        """
        acct = self.accounts[account]
        out = []
        for rule in self.rules:
            if scheduled is not None and (rule.schedule is not None) != scheduled:
                continue
            if rule.applies_to(account, mailbox, acct.watch):
                out.append(rule)
        return out
