"""A private, throwaway Cyrus IMAP server for tests that check where servers differ.

One module because the server's configuration, users and life cycle are one throwaway object
that tests use whole, like ``mailrules.testing.dovecot`` (whose API this mirrors)::

    with temporary_cyrus() as server:            # or CyrusServer(directory), then start()/stop()
        user = server.add_user()
        client = server.client(user)               # logged-in imapclient.IMAPClient
        server.deliver_files(user, server.folder("Lists/dev"), [make_message(subject="hi")])

Why Cyrus: it is the other server people run at scale, and it differs from Dovecot where
mailrules must not care: the personal namespace (``INBOX.`` and ``.`` with Debian's settings),
``BODY`` search that also sees MIME part headers, at most 100 keywords per mailbox, CRLF
line ends required in APPEND. See /work/shared/notes/cyrus-facts.md for what was verified.

Layout under ``tmpdir`` (owned by the ``cyrus`` user; nothing is read from /etc)::

    imapd.conf  cyrus.conf  sasldb2 (users and passwords)  master.pid  master.log (stderr)
    config/  spool/  proc/  lock/  socket/  sieve/

Folders are stored by name (``spool/user/NAME/...``, ``mailbox_legacy_dirs``), not by unique
id as Cyrus 3 does by default: Debian's build draws the ids from rand(), and two imapd processes
seeded alike give two folders one id, the second CREATE then wiping the first folder's mail.

Namespaces: ``altnamespace`` and ``unixhierarchysep`` are Cyrus's two settings. Debian's
defaults (both False, the default here) give NAMESPACE prefix ``INBOX.`` and separator ``.``:
folder ``Lists/dev`` of a rules file is ``INBOX.Lists.dev`` on the wire. Cyrus 3's own
defaults (both True) give prefix ``""`` and separator ``/``. ``folder("Lists/dev")`` converts
a rules-file name to the server's. Helpers of this class (``client``, ``deliver_files``) take
the server's names.

Users live in a private sasldb (``saslpasswd2``); an account's mailbox is not created at
login, so ``add_user`` creates ``user.NAME`` (``user/NAME``) as the admin ``cyrus``. There is
no way to delete state quickly (deleted folders leave tombstones): use a fresh user per test.

Needs root (Cyrus's ``master`` drops to the ``cyrus`` user) and the binaries
``/usr/lib/cyrus/bin/{master,imapd}`` and ``saslpasswd2`` (Debian: cyrus-common, sasl2-bin and
the unpacked cyrus-imapd package; NEVER ``apt-get install cyrus-imapd``, which removes
dovecot-imapd: see .ci/run). Cyrus logs only through syslog; ``log_tail()`` shows the master's
stderr, which is all there is without ``/dev/log``. Plain IMAP on 127.0.0.1 only (no TLS).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

from mailrules.testing.dovecot import User, find_binary
from mailrules.testing.server import LocalServer

if TYPE_CHECKING:
    import imapclient

__all__ = [
    "CYRUS_BIN", "CyrusError", "CyrusServer", "User", "cyrus_available", "cyrus_unusable_reason", "temporary_cyrus",
]

CYRUS_BIN = Path("/usr/lib/cyrus/bin")
"""Where Debian puts Cyrus's daemons (``master``, ``imapd``, ``ctl_cyrusdb``)."""

CYRUS_USER = "cyrus"
"""The system user Cyrus runs as; also the IMAP admin of every instance."""

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_FLAG_LETTERS = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "D": "\\Draft", "T": "\\Deleted"}
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_counter = itertools.count(1)
_running: set[CyrusServer] = set()
_running_lock = threading.Lock()


class CyrusError(RuntimeError):
    """Cyrus is missing, failed to start or stop, or a setup step (user, mailbox) failed."""


def cyrus_available() -> bool:
    """True when Cyrus's ``master`` and ``imapd`` and the ``saslpasswd2`` tool are installed."""
    return all(os.access(CYRUS_BIN / name, os.X_OK) for name in ("master", "imapd")) and (
        find_binary("saslpasswd2") is not None
    )


def cyrus_unusable_reason() -> str | None:
    """Why no private Cyrus can start here (not installed, not root), or None when one can."""
    if not cyrus_available():
        return ("Cyrus IMAP is not installed (Debian: apt-get install cyrus-common sasl2-bin, then "
                "apt-get download cyrus-imapd && dpkg -x cyrus-imapd_*.deb /; see .ci/run)")
    if os.geteuid() != 0:
        return "a private Cyrus IMAP needs root (its master drops to the cyrus user)"
    try:
        pwd.getpwnam(CYRUS_USER)
    except KeyError:
        return f"system user {CYRUS_USER!r} is missing: is cyrus-common installed?"
    return None


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _crlf(data: bytes) -> bytes:
    """Bare LF (and bare CR) line ends as CRLF: what an MTA hands to Cyrus."""
    return re.sub(rb"\r?\n|\r(?!\n)", b"\r\n", data)


def _logout(client: imapclient.IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - a broken connection is closed either way
        with contextlib.suppress(Exception):
            client.shutdown()


class CyrusServer(LocalServer):
    """A private Cyrus IMAP instance listening on 127.0.0.1 (see module docstring); the life
    cycle and the user book are `LocalServer`'s."""

    def __init__(
        self,
        tmpdir: Path,
        *,
        altnamespace: bool = False,
        unixhierarchysep: bool = False,
        port: int = 0,
        idle_poll: int = 1,
        extra_conf: str = "",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        """Prepare (but do not start) a server rooted at ``tmpdir``.

        ``altnamespace``/``unixhierarchysep``: Cyrus's namespace settings (both False:
        Debian's ``INBOX.`` prefix and ``.`` separator; both True: Cyrus 3's ``""`` and ``/``).
        ``port``: 0 picks a free one (another if it is taken by the time Cyrus binds it).
        ``idle_poll``: seconds between imapd's checks for changes during IDLE (Cyrus's
        ``imapidlepoll``, 60 by default). Debian's build polls (its ID says ``idle = poll``):
        Cyrus's ``idled`` would push nothing, so it is not run. ``extra_conf``: appended verbatim to imapd.conf.
        ``start_timeout``: how long ``start()`` waits for a working admin LOGIN.
        """
        super().__init__(Path(tmpdir), port)
        self.altnamespace = altnamespace
        self.unixhierarchysep = unixhierarchysep
        self.idle_poll = idle_poll
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self.admin = User(CYRUS_USER, secrets.token_hex(12))
        self._instance = f"{os.getpid()}-{next(_counter)}"

    # -- its files, under ``root`` (derived, so held nowhere else) ---------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "imapd.conf"

    @property
    def master_conf_path(self) -> Path:
        return self.root / "cyrus.conf"

    @property
    def sasldb_path(self) -> Path:
        return self.root / "sasldb2"

    @property
    def log_path(self) -> Path:
        return self.root / "master.log"

    # -- namespace ---------------------------------------------------------------------

    @property
    def separator(self) -> str:
        """The hierarchy separator users see: ``/`` with unixhierarchysep, else ``.``."""
        return "/" if self.unixhierarchysep else "."

    @property
    def prefix(self) -> str:
        """The personal namespace's prefix: ``""`` with altnamespace, else ``INBOX.`` (``INBOX/``)."""
        return "" if self.altnamespace else f"INBOX{self.separator}"

    def folder(self, name: str) -> str:
        """The server's name of a rules-file folder name (levels separated by ``/``)."""
        if name.upper() == "INBOX":
            return "INBOX"
        return self.prefix + name.replace("/", self.separator)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Write the configuration, start Cyrus's master and wait until the admin can log in."""
        if self.running:
            return self
        reason = cyrus_unusable_reason()
        if reason is not None:
            raise CyrusError(reason)
        self._prepare_dirs()
        fixed_port = self.port != 0
        attempts = 1 if fixed_port else 3
        for attempt in range(attempts):
            if not fixed_port:
                self.port = _free_port()
            self._write_config()
            try:
                self._spawn()
                break
            except CyrusError:
                self._terminate()
                if attempt == attempts - 1:
                    raise
        with _running_lock:
            _running.add(self)
        return self

    def stop(self) -> None:
        """Stop the master and every process it started (their whole process group)."""
        with _running_lock:
            _running.discard(self)
        self._terminate()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the master's stderr (Cyrus's own log goes to syslog)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- users and mail ----------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> User:
        """Create an account and its INBOX (``user.NAME``, made by the admin); it starts empty.

        ``name`` defaults to a unique ``userN-xxxx``, ``password`` to a random token.
        """
        user = self.book.add(name, password, _USER_RE, self._set_password, " (lower case, digits, '-', '_')")
        admin = self.client(self.admin)
        try:
            admin.create_folder(f"user{self.separator}{user.name}")
        finally:
            _logout(admin)
        return user

    def deliver_files(
        self,
        user: User,
        mailbox: str,
        messages: Iterable[bytes],
        *,
        mtime: datetime | float | None = None,
        flags: str = "",
    ) -> int:
        """APPEND ``messages`` to ``mailbox`` (the server's name; created when missing), in order.

        The name and arguments are those of ``DovecotServer.deliver_files`` so that tests run
        on either: line ends become CRLF (Cyrus wants them; an MTA does the same), ``mtime``
        is the INTERNALDATE, ``flags`` are Maildir letters (``"S"`` for \\Seen, ``"FS"``).
        Returns the mailbox's message count.
        """
        if isinstance(mtime, (int, float)):
            mtime = datetime.fromtimestamp(mtime)
        imap_flags = [_FLAG_LETTERS[letter] for letter in sorted(set(flags))]
        client = self.client(user)
        try:
            if mailbox.upper() != "INBOX" and not client.folder_exists(mailbox):
                client.create_folder(mailbox)
            for data in messages:
                client.append(mailbox, _crlf(bytes(data)), flags=imap_flags, msg_time=mtime)
            return int(client.folder_status(mailbox, ["MESSAGES"])[b"MESSAGES"])
        finally:
            _logout(client)

    def client(
        self,
        user: User,
        folder: str | None = None,
        *,
        readonly: bool = False,
        timeout: float = 30.0,
        port: int | None = None,
    ) -> imapclient.IMAPClient:
        """A logged-in IMAPClient for ``user``; ``folder`` (the server's name) is selected when given.

        ``port`` overrides the port (e.g. a ``TcpProxy`` in front of the server).
        """
        import imapclient

        client = imapclient.IMAPClient(self.host, port or self.port, ssl=False, timeout=timeout)
        try:  # without it every APPEND waits ~40 ms for Cyrus's delayed ACK (see mailrules.connect)
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.login(user.name, user.password)
            if folder is not None:
                client.select_folder(folder, readonly=readonly)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    # -- internals ---------------------------------------------------------------------

    def _set_password(self, user: User) -> None:
        if any(c in user.password for c in "\n\r"):
            raise ValueError("password must not contain line breaks")
        tool = find_binary("saslpasswd2")
        if tool is None:
            raise CyrusError("saslpasswd2 is not installed (Debian: apt-get install sasl2-bin)")
        proc = subprocess.run(
            [tool, "-f", str(self.sasldb_path), "-u", "localhost", "-p", "-c", user.name],
            input=user.password.encode(), capture_output=True, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            raise CyrusError(f"saslpasswd2 for {user.name!r} failed: {proc.stderr.decode(errors='replace').strip()}")
        cyrus = pwd.getpwnam(CYRUS_USER)
        os.chown(self.sasldb_path, cyrus.pw_uid, cyrus.pw_gid)
        os.chmod(self.sasldb_path, 0o600)

    def _prepare_dirs(self) -> None:
        cyrus = pwd.getpwnam(CYRUS_USER)
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in [self.root, *self.root.parents]:  # the cyrus user must reach the root
            mode = directory.stat().st_mode
            if not mode & 0o001:
                os.chmod(directory, (mode & 0o7777) | 0o001)
        for name in ("config", "spool", "proc", "lock", "socket", "sieve"):
            (self.root / name).mkdir(exist_ok=True)
        if not self.sasldb_path.exists():
            self._set_password(self.admin)
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, cyrus.pw_uid, cyrus.pw_gid)

    def _write_config(self) -> None:
        d = self.root
        yes_no = {True: "yes", False: "no"}
        self.conf_path.write_text(
            f"configdirectory: {d}/config\npartition-default: {d}/spool\nproc_path: {d}/proc\n"
            f"mboxname_lockpath: {d}/lock\nlmtpsocket: {d}/socket/lmtp\nidlesocket: {d}/socket/idle\n"
            f"notifysocket: {d}/socket/notify\nsievedir: {d}/sieve\n"
            "servername: localhost\nadmins: cyrus\nallowplaintext: yes\n"
            f"sasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\nsasl_sasldb_path: {self.sasldb_path}\n"
            "sasl_mech_list: PLAIN LOGIN\nfailedloginpause: 0\n"
            f"altnamespace: {yes_no[self.altnamespace]}\nunixhierarchysep: {yes_no[self.unixhierarchysep]}\n"
            f"imapidlepoll: {self.idle_poll}\nsyslog_prefix: mailrules-cyrus-{self._instance}\n"
            # Folders stored by name, not by their unique id: Debian's build makes the ids with
            # rand() (no libuuid), and imapd processes seeded alike give two folders one id;
            # stored by id, the second CREATE wipes the first folder's mail (seen under load).
            "mailbox_legacy_dirs: yes\n"
            + self.extra_conf + "\n"
        )
        self.master_conf_path.write_text(
            f'START {{\n  recover cmd="ctl_cyrusdb -C {self.conf_path} -r"\n}}\n'
            f'SERVICES {{\n  imap cmd="imapd -C {self.conf_path} -U 30" listen="{self.host}:{self.port}" '
            "prefork=0\n}\n"
        )

    def _spawn(self) -> None:
        """Start the master in the foreground, in its own process group; wait for a working LOGIN."""
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(CYRUS_BIN / "master"), "-C", str(self.conf_path), "-M", str(self.master_conf_path),
                 "-p", str(self.root / "master.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while (left := deadline - time.monotonic()) > 0:
            if self._proc.poll() is not None:
                raise CyrusError(f"Cyrus master exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                _logout(self.client(self.admin, timeout=max(0.1, min(5.0, left))))
                return
            except Exception as exc:  # noqa: BLE001 - not listening yet, or not ready to log in
                last_error = exc
                time.sleep(0.02)
        raise CyrusError(
            f"Cyrus did not accept a login on {self.host}:{self.port} within {self.start_timeout:g} s "
            f"(last error: {last_error!r}; is the port taken? Cyrus logs only to syslog); "
            f"master stderr:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        """SIGTERM the master's process group (it stops its children), SIGKILL what is left."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + (STOP_TIMEOUT if sig == signal.SIGKILL else 2.0)
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(proc.pid):
                    return
                time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """True while some process of process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def temporary_cyrus(prefix: str = "mailrules-cyrus-", **kwargs: object) -> Iterator[CyrusServer]:
    """A started `CyrusServer` (``kwargs``) in a new temporary directory; stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with CyrusServer(root, **kwargs) as server:  # type: ignore[arg-type]
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    """Stop servers still running when the interpreter exits."""
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
