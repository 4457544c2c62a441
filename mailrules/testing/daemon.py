"""Run `mailrules run` as a subprocess against a test Dovecot: for tests and benchmarks.

::

    daemon = DaemonHarness(server, user, tmpdir, rules=RULES, idle_interval=2)
    daemon.start()
    daemon.wait_for_log("watching with IDLE")
    ...
    assert daemon.stop() == 0

The rules file holds one account, ``t``, for ``user`` on ``server`` (plain IMAP on
loopback, the password passed in an environment variable), with short daemon timings
by default so that tests see reconnections and polls quickly. Its log (stderr) goes to
``tmpdir/daemon-N.log``; `wait_for_log` polls it with a deadline.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import imapclient

    from .dovecot import DovecotServer, User

__all__ = [
    "DaemonHarness", "content_digest", "flags_by_content", "keywords", "message_contents", "message_ids",
    "wait_until",
]

DEFAULT_TIMINGS = {"timeout": 5, "idle_interval": 2, "poll_interval": 0.5, "reconnect_max": 1}


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll `predicate` until it returns something true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


def message_ids(client: imapclient.IMAPClient, folder: str) -> collections.Counter[str]:
    """Message-IDs in `folder` (a Counter: duplicates show), or empty if it does not exist."""
    if not client.folder_exists(folder):
        return collections.Counter()
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    out: collections.Counter[str] = collections.Counter()
    if not uids:
        return out
    for data in client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values():
        raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
        m = re.search(rb"(?im)^message-id:\s*(\S+)", raw)
        out[m.group(1).decode() if m else ""] += 1
    return out


def content_digest(raw: bytes) -> str:
    """The key `message_contents` counts a message under: a SHA-256 digest of its bytes."""
    return hashlib.sha256(raw).hexdigest()


def message_contents(client: imapclient.IMAPClient, folder: str) -> collections.Counter[str]:
    """SHA-256 digests of the whole messages in `folder` (a Counter), or empty if it does not exist.

    "Nothing lost, nothing doubled" must be checked by content, not by Message-ID: real mail
    repeats Message-IDs (resent newsletters, list copies) and some messages have none, and a
    count by Message-ID hides exactly the losses and duplicates that such messages suffer.
    """
    if not client.folder_exists(folder):
        return collections.Counter()
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    out: collections.Counter[str] = collections.Counter()
    for start in range(0, len(uids), 500):
        for data in client.fetch(uids[start:start + 500], ["BODY.PEEK[]"]).values():
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[")), b"") or b""
            out[content_digest(raw)] += 1
    return out


def flags_by_content(client: imapclient.IMAPClient, folder: str) -> collections.Counter[tuple[str, frozenset[str]]]:
    """The multiset of (content digest, flags and keywords) of the messages in `folder`.

    Keyed like `message_contents` (a SHA-256 digest of the whole message), so that messages
    sharing a Message-ID, or having none, each keep their own flags: a dict keyed by
    Message-ID would let one such message stand for all. \\Recent is left out (it belongs to
    a session, not to the message). Empty if `folder` does not exist.
    """
    out: collections.Counter[tuple[str, frozenset[str]]] = collections.Counter()
    if not client.folder_exists(folder):
        return out
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    for start in range(0, len(uids), 500):
        for data in client.fetch(uids[start:start + 500], ["FLAGS", "BODY.PEEK[]"]).values():
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[")), b"") or b""
            flags = frozenset(f.decode() if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ()))
            out[(content_digest(raw), flags - {"\\Recent"})] += 1
    return out


def account_by_content(client: imapclient.IMAPClient) -> collections.Counter[tuple[str, str, frozenset[str]]]:
    """The multiset of (folder, content digest, flags and keywords) over every selectable folder
    of the account: "exactly as before" counted by content (`undo`, crash tests)."""
    out: collections.Counter[tuple[str, str, frozenset[str]]] = collections.Counter()
    for flags, _sep, folder in client.list_folders():
        if b"\\Noselect" not in flags:
            for (digest, kept), n in flags_by_content(client, folder).items():
                out[(folder, digest, kept)] += n
    return out


def keywords(client: imapclient.IMAPClient, folder: str) -> dict[str, set[str]]:
    """Message-ID -> flags and keywords of every message in `folder`.

    Only for folders whose messages have distinct Message-IDs: a repeated or missing
    Message-ID raises AssertionError instead of silently letting one message's flags
    stand for another's. Use `flags_by_content` for mail that may share Message-IDs.
    """
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    out: dict[str, set[str]] = {}
    if not uids:
        return out
    for uid, data in client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).items():
        raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
        m = re.search(rb"(?im)^message-id:\s*(\S+)", raw)
        if m is None:
            raise AssertionError(f"keywords(): UID {uid} in {folder} has no Message-ID; use flags_by_content()")
        mid = m.group(1).decode()
        if mid in out:
            raise AssertionError(f"keywords(): Message-ID {mid} repeats in {folder}; use flags_by_content()")
        out[mid] = {f.decode() if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())}
    return out


class DaemonHarness:
    """A rules file for one test account, a state directory, and `mailrules run` processes."""

    def __init__(
        self,
        server: DovecotServer,
        user: User,
        tmpdir: str | os.PathLike[str],
        *,
        rules: str,
        watch: Iterable[str] = ("INBOX",),
        port: int | None = None,
        top: str = "",
        **account: Any,
    ) -> None:
        self.server = server
        self.user = user
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "rules.yaml"
        self.state = self.dir / "state"
        self.port = port
        self.watch = list(watch)
        self.top = top
        self.account = {**DEFAULT_TIMINGS, **account}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._runs = 0
        self.write_rules(rules)

    # -------------------------------------------------------------- the rules file

    def rules_text(self, rules: str) -> str:
        extra = "".join(f"    {k}: {v}\n" for k, v in self.account.items())
        watch = ", ".join(f'"{w}"' for w in self.watch)
        return (
            f"version: 1\n{self.top}"
            "accounts:\n"
            "  t:\n"
            f"    host: {self.server.host}\n"
            f"    port: {self.port or self.server.port}\n"
            "    tls: none\n"
            f"    username: {self.user.name}\n"
            "    password_env: MAILRULES_TEST_PASSWORD\n"
            f"    watch: [{watch}]\n"
            f"{extra}"
            f"rules:\n{rules}"
        )

    def write_rules(self, rules: str, *, raw: str | None = None) -> None:
        """Replace the rules (or, with `raw`, the whole file) atomically."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(raw if raw is not None else self.rules_text(rules))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.config)

    # -------------------------------------------------------------- processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAILRULES_TEST_PASSWORD"] = self.user.password
        env.pop("NOTIFY_SOCKET", None)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mailrules.cli", "-c", str(self.config), "--state", str(self.state), *args]

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `mailrules run ARGS` (the daemon unless --once); its log goes to a new file."""
        self._runs += 1
        self.log_path = self.dir / f"daemon-{self._runs}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                self.command("run", *args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env(), **(env or {})},
            )
        finally:
            log.close()
        return self.proc

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`mailrules ARGS` to completion (e.g. ``run("run", "--once")``, ``run("status")``)."""
        return subprocess.run(
            [sys.executable, "-m", "mailrules.cli", "-c", str(self.config), "--state", str(self.state), *args],
            capture_output=True, text=True, env=self.env(), timeout=timeout,
        )

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until `pattern` (a regex) occurs `count` times in the current run's log."""
        def seen() -> bool:
            if self.count(pattern) >= count:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.proc.returncode}) before logging {pattern!r}:\n{self.log()[-3000:]}"
                )
            return False

        try:
            wait_until(seen, timeout, message=f"{pattern!r} x{count} in the daemon's log")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log (tail) ---\n{self.log()[-3000:]}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the daemon did not stop within {timeout:g}s:\n{self.log()[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
