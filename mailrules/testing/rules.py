"""Run a rules snippet against a real (test) IMAP server and see what happened.

For plugin authors and mailrules' own tests. With the pytest plugin, the ``run_rules``
fixture is the short way::

    def test_spam_goes_to_junk(run_rules, make_message):
        result = run_rules(
            '''
            - name: junk
              where: [{spam: {min_score: 5}}]
              actions: [{move: Junk}]
            ''',
            [make_message(subject="buy now", body=GTUBE), make_message(subject="hello")],
        )
        assert result.subjects("Junk") == ["buy now"]
        assert result.subjects("INBOX") == ["hello"]

Without pytest::

    with DovecotServer(tmpdir) as server:
        result = run_rules(server, RULES, messages)

`RulesRunner` is the longer form, for several passes over the same account (e.g. to see
a failed message retried): it keeps the account, the rules and the state directory::

    runner = RulesRunner(server, RULES, plugins=[my_plugin])
    runner.deliver([make_message(subject="a")])
    first = runner.run()
    second = runner.run()        # retries what failed in the first pass

What a `RunResult` holds: every folder of the account with its messages (subject,
Message-ID, flags and keywords, raw bytes), the actions applied (`ActionEvent`s, as the
``mailrules_action_applied`` hook saw them), the engine's `Outcome` per mailbox (matched,
failed, given up), the ``--dry-run`` printout, and the log lines of the pass.

Plugins: by default the installed ones (``mailrules`` entry points) are loaded, as
``mailrules run`` would; pass ``plugins=[module_or_object]`` to add plugins that are not
installed, and ``entry_points=False`` to load only the built-ins and those.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mailrules.plugins import ActionEvent, Registry, hookimpl

if TYPE_CHECKING:
    from mailrules.engine import Outcome
    from mailrules.model import Config
    from mailrules.testing.dovecot import DovecotServer, User

__all__ = ["OfflineResult", "RulesRunner", "RunResult", "StoredMessage", "run_rules"]

ACCOUNT = "test"
"""The account name in the generated rules file."""

MessageLike = bytes | str | EmailMessage


@dataclass(frozen=True)
class StoredMessage:
    """A message as it is on the server after the pass."""

    uid: int
    subject: str
    message_id: str
    flags: tuple[str, ...]  # system flags and keywords, e.g. ('\\Seen', '$Dev'); never \\Recent
    raw: bytes = field(repr=False)

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags if not f.startswith("\\"))


@dataclass
class RunResult:
    """What one pass did: the account's folders afterwards, the actions applied, the outcomes."""

    folders: dict[str, list[StoredMessage]]
    actions: list[ActionEvent]
    outcomes: list[Outcome]
    output: str = ""  # what --dry-run printed
    log: list[str] = field(default_factory=list)  # "LEVEL logger: message" lines of the pass

    def messages(self, folder: str = "INBOX") -> list[StoredMessage]:
        """The messages of `folder` (mailrules' name, e.g. 'Lists/dev'), in UID order; [] if missing."""
        return self.folders.get(folder, [])

    def subjects(self, folder: str = "INBOX") -> list[str]:
        return [m.subject for m in self.messages(folder)]

    def find(self, subject: str) -> tuple[str, StoredMessage]:
        """(folder, message) of the only message with this subject; AssertionError otherwise."""
        found = [(name, m) for name, msgs in self.folders.items() for m in msgs if m.subject == subject]
        if len(found) != 1:
            where = ", ".join(name for name, _ in found) or "nowhere"
            raise AssertionError(f"expected exactly one message with subject {subject!r}, found {len(found)}: {where}")
        return found[0]

    def folder_of(self, subject: str) -> str:
        return self.find(subject)[0]

    def flags_of(self, subject: str) -> set[str]:
        return set(self.find(subject)[1].flags)

    def total(self) -> int:
        """How many messages the account holds in all its folders."""
        return sum(len(msgs) for msgs in self.folders.values())

    def applied(self, action: str | None = None) -> list[ActionEvent]:
        """The applied action events, optionally only those of one action name."""
        return [e for e in self.actions if action is None or e.action == action]

    @property
    def failed(self) -> dict[int, str]:
        """UID -> error of the messages whose processing failed in this pass (retried later)."""
        out: dict[int, str] = {}
        for outcome in self.outcomes:
            out.update(outcome.failed)
        return out

    @property
    def given_up(self) -> list[int]:
        return [uid for outcome in self.outcomes for uid in outcome.given_up]

    @property
    def errors(self) -> list[str]:
        return [line for line in self.log if line.startswith(("ERROR", "CRITICAL"))]


@dataclass(frozen=True)
class OfflineResult:
    """What `RulesRunner.test_offline` printed, as ``mailrules test`` would: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """The ``--format json`` output, parsed."""
        import json

        return json.loads(self.out)


class _Recorder:
    """A plugin that records the applied actions."""

    mailrules_plugin_name = "mailrules-testing-recorder"

    def __init__(self) -> None:
        self.events: list[ActionEvent] = []

    @hookimpl
    def mailrules_action_applied(self, event: ActionEvent) -> None:
        self.events.append(event)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            text = str(record.msg)
        self.lines.append(f"{record.levelname} {record.name}: {text}")


def _rules_yaml(rules: str | Sequence[Mapping[str, Any]]) -> str:
    """The text under ``rules:`` (a YAML list), indented by two spaces."""
    if isinstance(rules, str):
        text = textwrap.dedent(rules).strip("\n")
        if re.match(r"rules\s*:", text):
            text = textwrap.dedent(text.split(":", 1)[1].lstrip(" ").lstrip("\n"))
    else:
        text = yaml.safe_dump(list(rules), sort_keys=False, allow_unicode=True)
    return textwrap.indent(text.rstrip("\n") + "\n", "  ")


def _as_bytes(message: MessageLike) -> bytes:
    if isinstance(message, EmailMessage):
        return message.as_bytes()
    if isinstance(message, str):
        return message.encode("utf-8")
    return bytes(message)


class RulesRunner:
    """One fresh account on `server`, one rules file, one state directory; run passes on demand.

    - `rules`: the rules as YAML text (the list that goes under ``rules:``; a leading
      ``rules:`` line is accepted too) or a list of dicts. The file written is
      ``<directory>/rules.yaml``, so load errors read ``.../rules.yaml:LINE:COL: ...``;
      `ConfigError` is raised by the constructor.
    - `plugins`: extra plugin objects (modules or instances with hookimpls).
    - `entry_points`: also load the installed plugins (default True).
    - `watch`: the mailboxes the account watches (default INBOX only).
    - `user`: an existing `User` of `server` (default: a fresh, empty one).
    - `directory`: where the rules file and state go (default: a new temp dir).
    - `config_extra`: more top-level YAML (e.g. ``"timezone: Europe/Paris"``).
    """

    def __init__(
        self,
        server: DovecotServer,
        rules: str | Sequence[Mapping[str, Any]],
        *,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
        watch: Sequence[str] = ("INBOX",),
        user: User | None = None,
        directory: str | os.PathLike[str] | None = None,
        config_extra: str = "",
    ) -> None:
        from mailrules.config import load

        self.server = server
        self.user = user or server.add_user()
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="mailrules-rules-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.watch = tuple(watch)
        self.recorder = _Recorder()
        self.registry = Registry.load(entry_points=entry_points, extra=[*plugins, self.recorder])
        secret = self.directory / "password"
        secret.write_text(self.user.password)
        secret.chmod(0o600)
        self.path = self.directory / "rules.yaml"
        account = {
            "host": server.host,
            "port": server.port,
            "tls": "none",
            "username": self.user.name,
            "password_command": ["cat", str(secret)],
            "watch": list(self.watch),
        }
        text = "version: 1\n" + yaml.safe_dump({"accounts": {ACCOUNT: account}}, sort_keys=False)
        if config_extra:
            text += textwrap.dedent(config_extra).strip("\n") + "\n"
        text += "rules:\n" + _rules_yaml(rules)
        self.path.write_text(text, encoding="utf-8")
        self.path.chmod(0o600)
        self.state_dir = self.directory / "state"
        self.config: Config = load(self.path, registry=self.registry)

    # ------------------------------------------------------------------ mail

    def client(self):
        """A logged-in imapclient.IMAPClient for the account (log it out when done)."""
        return self.server.client(self.user)

    def deliver(
        self, messages: Iterable[MessageLike], mailbox: str = "INBOX", *, flags: Sequence[str] = ()
    ) -> list[int]:
        """APPEND `messages` (bytes, str or EmailMessage) to `mailbox` in order; returns their UIDs."""
        client = self.client()
        uids: list[int] = []
        try:
            if mailbox.upper() != "INBOX" and not client.folder_exists(mailbox):
                client.create_folder(mailbox)
            for message in messages:
                reply = client.append(mailbox, _as_bytes(message), flags=tuple(flags))
                match = re.search(rb"APPENDUID \d+ (\d+)", reply if isinstance(reply, bytes) else b"")
                if match:
                    uids.append(int(match.group(1)))
        finally:
            _logout(client)
        return uids

    def snapshot(self) -> dict[str, list[StoredMessage]]:
        """Every folder of the account (INBOX first, then by name) with its messages, in UID order."""
        from mailrules.message import MessageView

        client = self.client()
        out: dict[str, list[StoredMessage]] = {}
        try:
            names = sorted(
                (name for flags, _sep, name in client.list_folders()
                 if not {f.lower() for f in flags} & {b"\\noselect", b"\\nonexistent"}),
                key=lambda n: (n != "INBOX", n),
            )
            for name in names:
                info = client.select_folder(name, readonly=True)
                stored: list[StoredMessage] = []
                uids = client.search("ALL") if info.get(b"EXISTS", 0) else []
                if uids:
                    data = client.fetch(uids, ["FLAGS", "BODY.PEEK[]"])
                    for uid, item in sorted(data.items()):
                        raw = item.get(b"BODY[]") or b""
                        view = MessageView(uid, raw=raw)
                        flags = tuple(
                            f.decode() if isinstance(f, bytes) else str(f)
                            for f in item.get(b"FLAGS", ())
                        )
                        flags = tuple(f for f in flags if f.lower() != "\\recent")
                        stored.append(StoredMessage(uid, view.subject, view.message_id, flags, raw))
                out[name] = stored
        finally:
            _logout(client)
        return out

    # ------------------------------------------------------------------ offline, crashes

    def test_offline(self, messages: Iterable[MessageLike] = (), *, as_json: bool = False) -> OfflineResult:
        """``mailrules test`` with this rules file and these plugins, offline (no server involved).

        With `messages`, what the rules do to each (written to .eml files first); without, the
        rules file's ``tests:`` cases (give them with ``config_extra="tests: ..."``). Actions
        with an outside effect are reported as "would run", never called.
        """
        from types import SimpleNamespace

        from mailrules.testcmd import test_command

        paths = []
        for n, message in enumerate(messages, 1):
            path = self.directory / f"offline-{n}.eml"
            path.write_bytes(_as_bytes(message))
            paths.append(str(path))
        out, err = io.StringIO(), io.StringIO()
        args = SimpleNamespace(messages=paths, rule=None, format="json" if as_json else "text", against=None,
                               account=None, mailbox=None)
        code = test_command(self.config, self.registry, args, out=out, err=err)
        return OfflineResult(code, out.getvalue(), err.getvalue())

    def crash_during(self, action: str, *, before: bool = False, batch: int = 1) -> None:
        """One pass that dies (``os._exit``) in the `batch`-th call of the plugin action `action`:
        right after its ``run`` returned, or right before with ``before=True``. The next `run()`
        is the restart. See `mailrules.testing.crash`."""
        from .crash import crash_during

        crash_during(self, action, before=before, batch=batch)

    # ------------------------------------------------------------------ running

    def run(
        self,
        *,
        dry_run: bool = False,
        rule_names: Iterable[str] | None = None,
        since_now: bool = False,
        predicate_timeout: float | None = None,
    ) -> RunResult:
        """One pass, as ``mailrules run --once`` does: every watched mailbox, then a snapshot."""
        from mailrules.engine import Engine
        from mailrules.imap.pool import SessionPool
        from mailrules.state import StateStore

        out = io.StringIO()
        handler = _ListHandler()
        logger = logging.getLogger("mailrules")
        old_level = logger.level
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        first_event = len(self.recorder.events)
        store = StateStore(self.state_dir)
        pool = SessionPool(self.config)
        engine = Engine(self.config, self.registry, store, pool, dry_run=dry_run, rule_names=rule_names,
                        out=out, predicate_timeout=predicate_timeout)
        outcomes = []
        self.registry.notify("mailrules_started", config=self.config)
        try:
            for mailbox in self.watch:
                outcomes.append(engine.process(ACCOUNT, mailbox, since_now=since_now))
        finally:
            self.registry.notify("mailrules_stopping")
            engine.close()
            pool.close()
            store.close()
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        return RunResult(
            folders=self.snapshot(),
            actions=self.recorder.events[first_event:],
            outcomes=outcomes,
            output=out.getvalue(),
            log=handler.lines,
        )


def run_rules(
    server: DovecotServer,
    rules: str | Sequence[Mapping[str, Any]],
    messages: Iterable[MessageLike] | Mapping[str, Iterable[MessageLike]] = (),
    *,
    dry_run: bool = False,
    **runner_options: Any,
) -> RunResult:
    """Deliver `messages` to a fresh account of `server`, run `rules` once, return what happened.

    `messages` is a list (delivered to INBOX, in order) or ``{mailbox: [messages]}``; a
    message is bytes, str or an EmailMessage (`mailrules.testing.messages.make_message`
    makes them). `runner_options` go to `RulesRunner` (plugins, entry_points, watch, ...).
    """
    runner = RulesRunner(server, rules, **runner_options)
    by_mailbox = messages if isinstance(messages, Mapping) else {"INBOX": messages}
    for mailbox, items in by_mailbox.items():
        runner.deliver(items, mailbox)
    return runner.run(dry_run=dry_run)


def _logout(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001
        with contextlib.suppress(Exception):
            client.shutdown()
