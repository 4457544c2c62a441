"""Helpers for the Dovecot integration tests (engine, actions, CLI, search).

- `write_config`: a rules file for one or more test users (``tls: none`` to 127.0.0.1,
  passwords in environment variables set through ``monkeypatch``).
- `run_cli`: ``mailrules.cli.main([...])`` in-process, with its exit code, stdout and stderr.
- `run_engine`: one ``run --once`` pass through the Engine API (for plugin objects that the
  CLI cannot load), returning the outcomes.
- `append` / `messages` / `snapshot`: put mail on the server and read back its state.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import re
import subprocess
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import imapclient

from mailrules.testing.dovecot import DovecotServer, User

PASSWORD_ENV = "MAILRULES_TEST_PW_{}"


# ----------------------------------------------------------------------------- rules files


@dataclass(frozen=True)
class Acct:
    """One account of a test rules file."""

    user: User
    port: int
    watch: Sequence[str] = ("INBOX",)
    timeout: float | None = None


def write_config(
    tmp_path: Path,
    monkeypatch,
    server: DovecotServer,
    user: User,
    rules: str,
    *,
    watch: Sequence[str] = ("INBOX",),
    name: str = "me",
    others: dict[str, Acct] | None = None,
    port: int | None = None,
    filename: str = "rules.yaml",
    top: str = "",
) -> Path:
    """Write a rules file with account `name` (and `others`) and the YAML list `rules`.

    `rules` is the text of the `rules:` list (dedented here); `top` is extra top-level YAML.
    """
    accounts = {name: Acct(user, port or server.port, watch)}
    accounts.update(others or {})
    lines = ["version: 1", "accounts:"]
    for acct_name, acct in accounts.items():
        env = PASSWORD_ENV.format(re.sub(r"\W", "_", acct_name).upper())
        monkeypatch.setenv(env, acct.user.password)
        lines += [
            f"  {acct_name}:",
            "    host: 127.0.0.1",
            f"    port: {acct.port}",
            "    tls: none",
            f"    username: {acct.user.name}",
            f"    password_env: {env}",
            f"    watch: [{', '.join(_yaml_str(w) for w in acct.watch)}]",
        ]
        if acct.timeout is not None:
            lines.append(f"    timeout: {acct.timeout}")
    if top:
        lines.append(textwrap.dedent(top).strip("\n"))
    lines.append("rules:")
    lines.append(textwrap.indent(textwrap.dedent(rules).strip("\n"), "  "))
    path = tmp_path / filename
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ----------------------------------------------------------------------------- running mailrules


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@contextlib.contextmanager
def _keep_logging() -> Iterator[None]:
    """cli.main replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_cli(*args: str | Path) -> CliResult:
    """`mailrules ARGS...` in-process: exit code, stdout and stderr (logs included)."""
    from mailrules.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _keep_logging(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(code, out.getvalue(), err.getvalue())


def run_once(config: Path, state: Path, *extra: str) -> CliResult:
    """`mailrules -c CONFIG --state STATE run --once EXTRA...`."""
    return run_cli("-c", config, "--state", state, "run", "--once", *extra)


def run_engine(config: Path, state: Path | None, *, plugins: Iterable[object] = (), dry_run: bool = False,
               since_now: bool = False):
    """One arrival pass over every watched mailbox through the Engine API (like `run --once`).

    `plugins`: extra plugin objects (``Registry.load(extra=...)``). Returns the Outcomes;
    an exception of a mailbox's pass is returned in its place.
    """
    from mailrules.config import load
    from mailrules.engine import Engine
    from mailrules.imap.pool import SessionPool
    from mailrules.lock import StateLock
    from mailrules.plugins import Registry
    from mailrules.state import StateStore

    registry = Registry.load(extra=list(plugins))
    cfg = load(config, registry=registry)
    store = StateStore(state) if state is not None and not dry_run else None
    lock = StateLock(state) if store is not None else None
    if lock is not None:
        lock.acquire()
    pool = SessionPool(cfg)
    engine = Engine(cfg, registry, store, pool, dry_run=dry_run, out=io.StringIO())
    outcomes: list = []
    try:
        for account in cfg.accounts.values():
            for mailbox in account.watch:
                try:
                    outcomes.append(engine.process(account.name, mailbox, since_now=since_now))
                except Exception as exc:  # noqa: BLE001 - returned to the test
                    outcomes.append(exc)
                    pool.discard(account.name)
    finally:
        engine.close()
        pool.close()
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()
    return outcomes


# ----------------------------------------------------------------------------- mail on the server


@contextlib.contextmanager
def connected(server: DovecotServer, user: User, port: int | None = None) -> Iterator[imapclient.IMAPClient]:
    client = server.client(user, port=port)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def append(
    server: DovecotServer,
    user: User,
    folder: str,
    *messages: bytes,
    flags: Sequence[str] = (),
    date: datetime | None = None,
) -> list[int]:
    """APPEND `messages` to `folder` (created if missing); returns their UIDs."""
    uids = []
    with connected(server, user) as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for raw in messages:
            resp = client.append(folder, raw, flags=list(flags), msg_time=date)
            m = re.search(rb"APPENDUID \d+ (\d+)", resp)
            assert m, resp
            uids.append(int(m.group(1)))
    return uids


@dataclass(frozen=True)
class Msg:
    uid: int
    message_id: str
    subject: str
    flags: frozenset[str]
    internaldate: datetime | None = None


def _flag_text(flag: bytes | str) -> str:
    return flag.decode() if isinstance(flag, bytes) else flag


def _mid(raw: bytes) -> str:
    m = re.search(rb"^message-id:\s*(\S+)", raw or b"", re.I | re.M)
    return m.group(1).decode() if m else ""


def _subject(raw: bytes) -> str:
    from mailrules.message import decode_rfc2047

    m = re.search(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", raw or b"", re.I | re.M)
    return decode_rfc2047(" ".join(m.group(1).decode().split())) if m else ""


def read_messages(client: imapclient.IMAPClient, folder: str) -> list[Msg]:
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    if not uids:
        return []
    data = client.fetch(uids, ["FLAGS", "INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]"])
    out = []
    for uid in sorted(data):
        item = data[uid]
        raw = next((v for k, v in item.items() if k.startswith(b"BODY[HEADER")), b"")
        flags = frozenset(_flag_text(f) for f in item[b"FLAGS"]) - {"\\Recent"}
        out.append(Msg(uid, _mid(raw), _subject(raw), flags, item.get(b"INTERNALDATE")))
    return out


def messages(server: DovecotServer, user: User, folder: str = "INBOX") -> list[Msg]:
    """The messages of `folder` (read-only: flags are not touched), by UID."""
    with connected(server, user) as client:
        if not client.folder_exists(folder):
            return []
        return read_messages(client, folder)


def subjects(server: DovecotServer, user: User, folder: str = "INBOX") -> list[str]:
    return sorted(m.subject for m in messages(server, user, folder))


def folders(server: DovecotServer, user: User) -> list[str]:
    """Every selectable folder of `user`."""
    with connected(server, user) as client:
        return sorted(name for flags, _sep, name in client.list_folders() if b"\\Noselect" not in flags)


Snapshot = dict[str, list[tuple[str, tuple[str, ...]]]]


def snapshot(server: DovecotServer, user: User, *, uids: bool = False) -> Snapshot:
    """A user's whole mail state: per selectable folder, sorted (content digest, Message-ID, flags).

    The digest of the whole message tells apart messages that share a Message-ID or have none.
    \\Recent is left out (it belongs to sessions, not to messages). With `uids=True` the
    tuples start with the UID and each folder also lists its ("UIDNEXT", UIDVALIDITY).
    """
    from mailrules.testing.daemon import content_digest

    out: Snapshot = {}
    with connected(server, user) as client:
        for flags, _sep, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            found = read_messages(client, name)
            bodies = client.fetch([m.uid for m in found], ["BODY.PEEK[]"]) if found else {}
            digests = {uid: content_digest(data[b"BODY[]"]) for uid, data in bodies.items()}
            rows: list = sorted(
                ((m.uid,) if uids else ()) + (digests[m.uid], m.message_id, tuple(sorted(m.flags)))
                for m in found
            )
            if uids:
                status = client.folder_status(name, ["UIDNEXT", "UIDVALIDITY"])
                rows.append(("UIDNEXT", status[b"UIDNEXT"], status[b"UIDVALIDITY"]))
            out[name] = rows
    return out


def by_subject(server: DovecotServer, user: User, folder: str = "INBOX") -> dict[str, Msg]:
    return {m.subject: m for m in messages(server, user, folder)}


def where_is(server: DovecotServer, user: User) -> dict[str, list[str]]:
    """Subject -> the folders holding a message with that subject (sorted; duplicates kept)."""
    out: dict[str, list[str]] = {}
    with connected(server, user) as client:
        for flags, _sep, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            for m in read_messages(client, name):
                out.setdefault(m.subject, []).append(name)
    return {k: sorted(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- one test's setup


class Lab:
    """One test user on a Dovecot, a rules file for it and a state directory.

    ``lab.write(rules)`` writes the rules file; ``lab.run()`` is ``mailrules run --once``;
    ``lab.deliver("subject", {...make_message kwargs...}, raw_bytes)`` APPENDs mail.
    """

    def __init__(self, server: DovecotServer, user: User, tmp_path: Path, monkeypatch, *, port: int | None = None):
        self.server = server
        self.user = user
        self.tmp = tmp_path
        self.monkeypatch = monkeypatch
        self.port = port
        self.state = tmp_path / "state"
        self.config: Path | None = None

    def write(self, rules: str, **kwargs) -> Path:
        kwargs.setdefault("port", self.port)
        self.config = write_config(self.tmp, self.monkeypatch, self.server, self.user, rules, **kwargs)
        return self.config

    def run(self, *extra: str) -> CliResult:
        assert self.config is not None, "lab.write(rules) first"
        return run_once(self.config, self.state, *extra)

    def cli(self, *args: str) -> CliResult:
        """`mailrules -c CONFIG --state STATE ARGS...`."""
        assert self.config is not None, "lab.write(rules) first"
        return run_cli("-c", self.config, "--state", self.state, *args)

    def engine(self, **kwargs):
        assert self.config is not None, "lab.write(rules) first"
        return run_engine(self.config, self.state, **kwargs)

    def deliver(self, *items, folder: str = "INBOX", flags: Sequence[str] = (), date: datetime | None = None,
                user: User | None = None) -> list[int]:
        """APPEND messages: a str is a subject, a dict make_message's arguments, bytes a raw message."""
        from mailrules.testing.messages import make_message

        raws = []
        for item in items:
            if isinstance(item, bytes):
                raws.append(item)
            elif isinstance(item, str):
                raws.append(make_message(subject=item))
            else:
                raws.append(make_message(**item))
        return append(self.server, user or self.user, folder, *raws, flags=flags, date=date)

    def messages(self, folder: str = "INBOX", user: User | None = None) -> list[Msg]:
        return messages(self.server, user or self.user, folder)

    def subjects(self, folder: str = "INBOX", user: User | None = None) -> list[str]:
        return subjects(self.server, user or self.user, folder)

    def by_subject(self, folder: str = "INBOX", user: User | None = None) -> dict[str, Msg]:
        return by_subject(self.server, user or self.user, folder)

    def flags(self, folder: str = "INBOX", user: User | None = None) -> dict[str, set[str]]:
        """Subject -> flags of the messages in `folder`."""
        return {m.subject: set(m.flags) for m in self.messages(folder, user)}

    def where(self, user: User | None = None) -> dict[str, list[str]]:
        return where_is(self.server, user or self.user)

    def snapshot(self, **kwargs) -> Snapshot:
        return snapshot(self.server, self.user, **kwargs)

    def folders(self, user: User | None = None) -> list[str]:
        return folders(self.server, user or self.user)

    def client(self, user: User | None = None):
        """A context manager: a logged-in IMAPClient of the user (another client)."""
        return connected(self.server, user or self.user)


@contextlib.contextmanager
def read_only_directory(directory: Path):
    """`directory` read-only for the duration, even for root.

    As root, permissions do not stop writes, so this uses a read-only bind mount of the
    directory onto itself (undone afterwards). Without `mount` rights, a non-root user gets
    mode 0555 instead; root without them skips the test.
    """
    import pytest

    directory = Path(directory)
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True).returncode == 0
    if mounted:
        try:
            ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], capture_output=True)
            if ro.returncode != 0:
                pytest.skip(f"cannot remount read-only: {ro.stderr.decode(errors='replace').strip()}")
            yield directory
        finally:
            done = subprocess.run(["umount", str(directory)], capture_output=True, text=True)
            if done.returncode != 0:  # a file left open under it: detach it all the same, then fail
                subprocess.run(["umount", "-l", str(directory)], capture_output=True)
                raise AssertionError(f"umount {directory}: {done.stderr.strip()} (a file left open?)")
        return
    if os.geteuid() == 0:
        pytest.skip("cannot make a directory read-only for root here (no bind mount)")
    mode = directory.stat().st_mode
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(mode)


def account_contents(lab: Lab, user: User | None = None) -> collections.Counter:
    """The multiset of (folder, SHA-256 of the whole message, flags and keywords) of every message
    of the account: "exactly as before" counted by content (`undo`, `apply`)."""
    from mailrules.testing.daemon import flags_by_content

    out: collections.Counter = collections.Counter()
    with lab.client(user) as client:
        for folder in lab.folders(user):
            for (digest, flags), n in flags_by_content(client, folder).items():
                out[(folder, digest, flags)] += n
    return out


AWAY_RULES = """
    - name: away
      account: me
      match: {subject: away}
      actions: [seen, {move: other:Away}]
"""


def lab_moving_away(server: DovecotServer, tmp_path: Path, monkeypatch) -> tuple[Lab, User]:
    """A lab whose rule marks `away` mail seen and moves it to another account's Away; and that
    other account's user (undo tests across accounts)."""
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    other = server.add_user()
    lab.config = write_config(tmp_path, monkeypatch, server, lab.user, AWAY_RULES,
                              others={"other": Acct(other, server.port)})
    return lab, other


def check_transfer_reads_flags(lab: Lab, verb: str) -> None:
    """`ImapSession.copy` or `.move` (`verb`) to a missing folder: refused with TRYCREATE, then
    done with CREATE, reporting each message's flags and its new UID (undo journals both)."""
    import pytest

    from mailrules.imap.session import ImapSession, ServerRefused
    from mailrules.uidset import UidSet

    lab.deliver("plain")
    lab.deliver("marked", flags=["\\Flagged", "$Later"])
    session = ImapSession(lab.server.client(lab.user))
    transfer = getattr(session, verb)
    try:
        session.select("INBOX")
        with pytest.raises(ServerRefused) as refused:
            transfer(UidSet([1, 2]), "Nowhere")
        assert refused.value.trycreate
        done = transfer(UidSet([1, 2]), "Nowhere", create=True)
        assert done.flags == {1: frozenset(), 2: frozenset({"\\Flagged", "$Later"})}
        assert sorted(done.mapping) == [1, 2]
    finally:
        session.client.logout()
    assert lab.flags("Nowhere") == {"plain": set(), "marked": {"\\Flagged", "$Later"}}
