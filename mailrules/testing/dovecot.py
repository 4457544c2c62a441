"""A private, throwaway Dovecot IMAP server for tests and benchmarks.

One module because the server's configuration, users, mail and life cycle (start, stop,
leftover processes) are one throwaway object that tests use whole.

``DovecotServer`` writes its own configuration, users and Maildirs into a directory,
listens on a free port of 127.0.0.1 and is stopped (with every child process) at
``stop()``, at interpreter exit, or - if it was started from the main thread - when the
Python process dies.  Typical use::

    with temporary_dovecot() as server:     # or DovecotServer(directory), then start()/stop()
        user = server.add_user()
        client = server.client(user)          # logged-in imapclient.IMAPClient
        server.deliver_files(user, "Lists/dev", [make_message(subject="hi")])

Layout under ``tmpdir``::

    dovecot.conf   dovecot.log   run/ (base_dir)   state/
    users/<name>   one passwd-file per user ("name:{PLAIN}password")
    mail/<name>/   the user's Maildir, LAYOUT=fs (see below)
    tls/           throwaway CA and server certificate when tls=True

Maildir layout: ``maildir:DIR/mail/%u:LAYOUT=fs``.  INBOX is ``mail/<user>/{cur,new,tmp}``
and folder ``Lists/dev`` is the directory ``mail/<user>/Lists/dev/{cur,new,tmp}``.  Unlike
the default Maildir++ layout (``.Lists.dev``), LAYOUT=fs lets folder names contain ``.``
(``python.org``), which Maildir++ with separator ``/`` refuses.  Non-ASCII names are stored
in modified UTF-7 on disk; ``mailbox_path()`` asks Dovecot, so callers never need to care.
Pass ``layout="maildir++"`` to get the stricter Maildir++ behaviour.

Gotchas handled here: Dovecot delays logins from an address after a failed one (2, 4, 8,
15 s through anvil's auth penalty), which would slow every test after a wrong-password test;
the penalty socket is disabled (``mode = 0``).  A failed LOGIN still takes ~0.5 s.
Dovecot's passwd-file is re-read at most once per second, so a user appended to a
shared file can be refused for up to a second.  Each user therefore gets a file of its own
(``users/%u``), which Dovecot sees at once.

As root, Dovecot drops to its packaged ``dovenull``/``dovecot`` users and to the mail user
``vmail`` (created with ``useradd -r -M`` when missing): the privilege separation of a real
installation, which the tests use.  As any other user the instance runs entirely as that user
(``default_login_user``, ``default_internal_user`` and the mail owner are the invoking user,
login processes without chroot): no privilege separation, fine for a throwaway server on
loopback (``mailrules demo`` as a normal user).  Either way it needs the ``dovecot``/``doveadm``
binaries (Debian: ``apt-get install dovecot-imapd``).  TLS needs the ``openssl`` CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import grp
import itertools
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from .server import LocalServer, User

if TYPE_CHECKING:
    import imapclient

__all__ = [
    "CertFiles",
    "DovecotError",
    "DovecotServer",
    "User",
    "dovecot_available",
    "find_binary",
    "make_ca",
    "make_cert",
    "temporary_dovecot",
]

MAIL_USER = "vmail"
"""System user that owns all mail (created with ``useradd -r -M`` if missing)."""

SPECIAL_USE_MAILBOXES = {"Drafts": r"\Drafts", "Junk": r"\Junk", "Sent": r"\Sent", "Trash": r"\Trash"}
"""Folders configured (and auto-created at first login) when ``special_use=True``."""

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_HARMLESS_HELPERS = {"log", "stats"}
_CLIENT_SERVICES = {"imap-login", "imap", "pop3-login", "pop3", "managesieve-login", "managesieve"}
_CHROOTED_SERVICES = ("imap-login", "pop3-login", "submission-login", "imap-urlauth-login", "anvil")
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,63}$")
_counter = itertools.count(1)
_running: set[DovecotServer] = set()
_running_lock = threading.Lock()


class DovecotError(RuntimeError):
    """Dovecot failed to start, stop, or a doveadm command failed."""


@dataclass(frozen=True)
class CertFiles:
    """PEM files of a certificate, its private key and the CA certificate that signed it."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def find_binary(name: str) -> str | None:
    """Path of an executable, also looking in the sbin directories (often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def dovecot_available() -> bool:
    """True when both ``dovecot`` and ``doveadm`` are installed."""
    return find_binary("dovecot") is not None and find_binary("doveadm") is not None


# --------------------------------------------------------------------------------------------
# Certificates (openssl CLI; no Python dependency)


def _openssl(*args: str) -> None:
    exe = find_binary("openssl")
    if exe is None:
        raise DovecotError("the openssl CLI is needed for TLS test certificates (apt-get install openssl)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DovecotError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_ca(dest_dir: Path, *, name: str = "ca", common_name: str = "mailrules test CA") -> CertFiles:
    """Create a throwaway self-signed CA (EC P-256) as ``dest_dir/NAME.pem`` + ``NAME.key``.

    The returned ``cert_file`` and ``ca_file`` are the same CA certificate.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cert, key = dest_dir / f"{name}.pem", dest_dir / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "3650", "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return CertFiles(cert_file=cert, key_file=key, ca_file=cert)


def make_cert(
    dest_dir: Path,
    *,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    ca: CertFiles | None = None,
    name: str = "server",
    days: int = 365,
) -> CertFiles:
    """Create a server certificate for ``hostnames`` (DNS names and IP addresses).

    It is signed by ``ca`` (see ``make_ca``); when ``ca`` is None a fresh CA is made in
    ``dest_dir`` (``NAME-ca.pem``), so the result is signed by a CA nobody else trusts.
    Security tests use it with ``DovecotServer(..., tls=True, cert=...)``:

    * unknown CA: ``make_cert(d)`` and have the client trust ``server_ca.ca_file`` of another CA;
    * wrong host name: ``make_cert(d, hostnames=["wrong.example"], ca=some_ca)``.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if ca is None:
        ca = make_ca(
            dest_dir, name=f"{name}-ca", common_name=f"mailrules untrusted CA {secrets.token_hex(4)}"
        )
    cert, key, csr = dest_dir / f"{name}.pem", dest_dir / f"{name}.key", dest_dir / f"{name}.csr"
    ext = dest_dir / f"{name}.ext"
    sans = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hostnames)
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n" + (f"subjectAltName={sans}\n" if sans else "")
    )
    cn = hostnames[0] if hostnames else "mailrules test server"
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert_file), "-CAkey", str(ca.key_file),
        "-set_serial", str(int.from_bytes(secrets.token_bytes(8), "big")), "-days", str(days),
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    return CertFiles(cert_file=cert, key_file=key, ca_file=ca.cert_file)


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


# --------------------------------------------------------------------------------------------
# Helpers


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free right now (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _ensure_mail_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = find_binary("useradd")
    if useradd is None:
        raise DovecotError(f"system user {name!r} is missing and useradd is not available")
    nologin = find_binary("nologin") or "/bin/false"
    proc = subprocess.run(
        [useradd, "-r", "-M", "-d", "/nonexistent", "-s", nologin, name], capture_output=True, text=True
    )
    try:  # a parallel test process may have created it first
        return pwd.getpwnam(name)
    except KeyError:
        raise DovecotError(f"could not create system user {name!r}: {proc.stderr.strip()}") from None


def _make_traversable(path: Path) -> None:
    """Let Dovecot's unprivileged processes reach ``path``: add o+x to ancestors we own.

    pytest's ``tmp_path`` lives under a 0700 directory; execute-only permission lets the
    ``dovecot`` and ``vmail`` users pass through without being able to list it.
    """
    uid = os.geteuid()
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_mode & stat.S_IXOTH:
            continue
        if st.st_uid != uid:
            raise DovecotError(f"{directory} is not traversable by other users; use another tmpdir")
        os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the thread that spawned it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


OPEN_FILES = 65536  # what the kit's Dovecot may open, if the hard limit allows


@contextlib.contextmanager
def _open_files_raised() -> Iterator[None]:
    """The soft limit on open files raised towards the hard one while Dovecot is spawned (its
    processes inherit it), then put back. Dovecot's auth process keeps each user's passwd file
    open (`users_dir/%u`): a test session adds thousands of users, and the soft limit a user
    without root has (often 1,024) ran out, every later LOGIN failing with "Temporary
    authentication failure"."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        yield
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _instance_procs(instance_name: str) -> dict[int, str]:
    """Dovecot's children of one instance: pid -> service name (titles ``dovecot-NAME/service``)."""
    prefix = f"dovecot-{instance_name}/".encode()
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read(512)
        except OSError:
            continue
        if cmdline.startswith(prefix):
            procs[int(entry)] = cmdline[len(prefix) :].split(b"\0")[0].split(b" ")[0].decode(errors="replace")
    return procs


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll ``predicate()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 1.5, 0.05)


# --------------------------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class DovecotOptions:
    """How a `DovecotServer` is configured (its constructor's arguments of the same names)."""

    capabilities: str | None = None
    special_use: bool = True
    extra_conf: str = ""
    layout: Literal["fs", "maildir++"] = "fs"
    max_userip_connections: int = 100
    separator: str = "/"
    prefix: str = ""


class DovecotServer(LocalServer):
    """A private Dovecot instance listening on 127.0.0.1 (see module docstring).

    Its configuration is `options` (``server.options.layout``; the namespace's ``separator`` and
    ``prefix`` also as attributes, as `CyrusServer` has them), its files are under `root` (the
    path properties), the life cycle and the user book are `LocalServer`'s.
    """

    def __init__(
        self,
        tmpdir: Path,
        *,
        tls: bool = False,
        capabilities: str | None = None,
        special_use: bool = True,
        extra_conf: str = "",
        layout: Literal["fs", "maildir++"] = "fs",
        cert: CertFiles | None = None,
        max_userip_connections: int = 100,
        port: int = 0,
        tls_port: int | None = None,
        separator: str = "/",
        prefix: str = "",
    ) -> None:
        """Prepare (but do not start) a server rooted at ``tmpdir``.

        ``port``: the plain IMAP port on 127.0.0.1; 0 (the default) picks a free one (and
        another if it is taken by the time Dovecot binds it).  A fixed port that is taken is
        an error.  ``tls_port``: the implicit-TLS port with ``tls``; None picks a free one.

        ``tls``: implicit-TLS listener on ``tls_port`` plus STARTTLS on ``port``, with a
        throwaway CA (``ca_file``) unless ``cert`` is given (see ``make_cert``).
        ``capabilities``: value of ``imap_capability`` (what is advertised after login),
        e.g. ``"IMAP4rev1 LITERAL+ IDLE"``.  ``special_use``: configure Trash/Sent/Drafts/Junk
        with their SPECIAL-USE flags, auto-created at a user's first login.
        ``extra_conf``: appended verbatim to dovecot.conf.
        ``separator`` and ``prefix``: the personal namespace's hierarchy separator and prefix,
        e.g. ``separator=".", prefix="INBOX."`` as Cyrus and Courier name folders. Folder names
        given to this class's helpers (``deliver_files``, ``client``) are then the server's.
        """
        super().__init__(Path(tmpdir), port)
        self.tls = tls or cert is not None
        self.options = DovecotOptions(capabilities, special_use, extra_conf, layout, max_userip_connections,
                                      separator, prefix)
        self.instance_name = f"mailrules-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        self.tls_port: int | None = tls_port
        self._cert = cert
        self._path_cache: dict[tuple[str, str], Path] = {}
        self._probe = User(f"mailrules-probe-{secrets.token_hex(3)}", secrets.token_hex(12))
        self._mail_pw: pwd.struct_passwd | None = None

    # -- its files, under ``root`` (derived, so held nowhere else) ---------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def users_dir(self) -> Path:
        return self.root / "users"

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    @property
    def home_dir(self) -> Path:
        return self.root / "home"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def separator(self) -> str:
        return self.options.separator

    @property
    def prefix(self) -> str:
        return self.options.prefix

    @property
    def ca_file(self) -> Path | None:
        """CA certificate that verifies the server (None without TLS)."""
        return self._cert.ca_file if self._cert else None

    @property
    def cert(self) -> CertFiles | None:
        """The server's certificate files (None without TLS)."""
        return self._cert

    @property
    def as_root(self) -> bool:
        """True when started by root (privilege separation), False for a single-user instance."""
        return os.geteuid() == 0

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts exactly this server's CA."""
        if self.ca_file is None:
            raise DovecotError("server was not created with tls=True")
        return ssl.create_default_context(cafile=str(self.ca_file))

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Write the config, start Dovecot and wait until a LOGIN works."""
        if self.running:
            return self
        exe, doveadm = find_binary("dovecot"), find_binary("doveadm")
        if exe is None or doveadm is None:
            raise DovecotError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        if self.as_root:
            self._mail_pw = _ensure_mail_user(MAIL_USER)
            for name in ("dovecot", "dovenull"):  # packaged default_internal_user / default_login_user
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    raise DovecotError(f"system user {name!r} missing: is dovecot-core installed?") from None
        else:
            self._mail_pw = pwd.getpwuid(os.geteuid())
        self._prepare_dirs()
        if self.tls and self._cert is None:
            self._cert = make_cert(self.tls_dir, ca=make_ca(self.tls_dir))
        fixed_ports = self.port != 0
        attempts = 1 if fixed_ports else 3
        for attempt in range(attempts):
            if not fixed_ports:
                ports = _free_ports(2 if self.tls else 1)
                self.port, self.tls_port = ports[0], (ports[1] if self.tls else None)
            elif self.tls and self.tls_port is None:
                self.tls_port = _free_ports(1)[0]
            self._write_config()
            try:
                self._spawn(exe)
                break
            except DovecotError:
                bind_failed = "Address already in use" in self.log_tail()
                self._kill_leftovers()
                if not bind_failed or attempt == attempts - 1:
                    raise
        with _running_lock:
            _running.add(self)
        return self

    def stop(self) -> None:
        """Stop Dovecot and wait until none of its processes is left.

        Clients are kicked first (a connected imap process otherwise lingers ~10 s), then
        ``doveadm stop`` asks the master to shut down.  Once only its ``log``/``stats``
        helpers remain (mail processes are gone, so no data is at risk) they and the master
        are killed instead of waiting out the master's ~1 s shutdown pause.
        """
        with _running_lock:
            _running.discard(self)
        proc = self._proc
        if proc is None:
            return
        doveadm = find_binary("doveadm")
        stopper: subprocess.Popen[bytes] | None = None
        if proc.poll() is None and doveadm is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(
                    [doveadm, "-c", str(self.conf_path), "kick", "*"],
                    capture_output=True,
                    timeout=STOP_TIMEOUT,
                )
            # The master is our child (dovecot -F): doveadm stop polls its pid until it is
            # gone, so it runs concurrently while we reap the master here.
            with contextlib.suppress(OSError):
                stopper = subprocess.Popen(
                    [doveadm, "-c", str(self.conf_path), "stop"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        if stopper is None and proc.poll() is None:
            proc.terminate()

        asked = time.monotonic()
        signalled: dict[int, int] = {}

        def done() -> bool:
            procs = _instance_procs(self.instance_name)
            if proc.poll() is None and procs and set(procs.values()) <= _HARMLESS_HELPERS:
                for pid in procs:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
            # Connections not kicked (e.g. still before LOGIN) keep their process for ~10 s.
            waited = time.monotonic() - asked
            for pid, service in procs.items():
                if service in _HARMLESS_HELPERS or service not in _CLIENT_SERVICES:
                    continue
                sig = signal.SIGKILL if waited > 1.5 else signal.SIGTERM if waited > 0.2 else None
                if sig is not None and signalled.get(pid) != sig:
                    signalled[pid] = sig
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
            return proc.poll() is not None and not procs

        if not _wait(done, STOP_TIMEOUT):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
        if stopper is not None:
            try:
                stopper.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                stopper.kill()
                stopper.wait()
        self._proc = None
        self._kill_leftovers()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the Dovecot log (and of its stderr)."""
        out = []
        for path in (self.log_path, self.root / "dovecot.stderr"):
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out[-lines:])

    # -- users and mail ----------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> User:
        """Create an account (visible to Dovecot at once); its mailbox starts empty.

        ``name`` defaults to a unique ``userN-xxxx``, ``password`` to a random token.
        """
        return self.book.add(name, password, _USER_RE, self._write_user)

    def _write_user(self, user: User) -> None:
        if any(c in user.password for c in ":\n\r"):
            raise ValueError("password must not contain ':' or line breaks")
        path = self.users_dir / user.name
        tmp = path.with_name(f".{user.name}.tmp")
        tmp.write_text(f"{user.name}:{{PLAIN}}{user.password}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def doveadm(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """Run ``doveadm -c CONF ARGS...`` and return its stdout (DovecotError on failure)."""
        doveadm = find_binary("doveadm")
        if doveadm is None:
            raise DovecotError("doveadm is not installed")
        proc = subprocess.run(
            [doveadm, "-c", str(self.conf_path), *args], capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise DovecotError(f"doveadm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def kick(self, user: User | str) -> bool:
        """Drop every IMAP connection of ``user`` (``doveadm kick``); False if it had none.

        The connections get ``* BYE`` and are closed a moment later (poll, do not assume).
        """
        out = self.doveadm("kick", _name(user), check=False)
        if "kicked connections" in out:
            return True
        if "no users kicked" in out:
            return False
        raise DovecotError(f"doveadm kick {_name(user)} failed: {out.strip()}")

    def mailbox_path(self, user: User | str, mailbox: str = "INBOX") -> Path:
        """Directory of ``mailbox`` on disk (asks ``doveadm mailbox path``; cached)."""
        key = (_name(user), mailbox)
        path = self._path_cache.get(key)
        if path is None:
            path = Path(self.doveadm("mailbox", "path", "-u", key[0], mailbox).strip())
            self._path_cache[key] = path
        return path

    def deliver_files(
        self,
        user: User | str,
        mailbox: str,
        messages: Iterable[bytes],
        *,
        mtime: datetime | float | None = None,
        flags: str = "",
    ) -> int:
        """Write ``messages`` straight into the Maildir and have Dovecot index them.

        Fast way to fill a mailbox (no IMAP round trips).  ``mailbox`` is created when
        missing.  ``mtime`` (datetime or epoch seconds; naive means local time) sets the
        files' mtime, which Dovecot reports as INTERNALDATE.  ``flags`` puts the files in
        ``cur/`` with Maildir info flags (e.g. ``"S"`` for \\Seen, ``"FS"``); by default they
        land in ``new/`` (\\Recent, unseen).  Returns the mailbox's message count.
        """
        name = _name(user)
        directory = self.mailbox_path(name, mailbox)
        if not (directory / "cur").is_dir():
            if mailbox.upper() == "INBOX":
                self.doveadm("mailbox", "status", "-u", name, "messages", "INBOX")
            else:
                try:
                    self.doveadm("mailbox", "create", "-u", name, mailbox)
                except DovecotError as exc:
                    if "exists" not in str(exc):
                        raise
        if isinstance(mtime, datetime):
            mtime = mtime.timestamp()
        pw = self._mail_pw or pwd.getpwnam(MAIL_USER)
        subdir = "cur" if flags else "new"
        info = f":2,{''.join(sorted(set(flags)))}" if flags else ""
        tmp_dir, dest_dir = str(directory / "tmp"), str(directory / subdir)
        for data in messages:
            base = _maildir_base()
            filename = f"{base},S={len(data)}"
            tmp = os.path.join(tmp_dir, filename)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, data)
                os.fchown(fd, pw.pw_uid, pw.pw_gid)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(dest_dir, filename + info))
        out = self.doveadm("mailbox", "status", "-u", name, "messages", mailbox)
        match = re.search(r"messages=(\d+)", out)
        return int(match.group(1)) if match else -1

    def client(
        self,
        user: User,
        folder: str | None = None,
        *,
        tls: bool = False,
        starttls: bool = False,
        readonly: bool = False,
        timeout: float = 30.0,
        port: int | None = None,
    ) -> imapclient.IMAPClient:
        """A logged-in IMAPClient for ``user``; ``folder`` is selected when given.

        Plain TCP by default; ``tls=True`` uses the implicit-TLS port and ``starttls=True``
        upgrades the plain connection, both verifying against ``ca_file``.  ``port``
        overrides the port (e.g. a ``TcpProxy`` in front of the server).
        """
        import imapclient

        if tls:
            client = imapclient.IMAPClient(
                self.host, port or self.tls_port, ssl=True, ssl_context=self.ssl_context(), timeout=timeout
            )
        else:
            client = imapclient.IMAPClient(self.host, port or self.port, ssl=False, timeout=timeout)
            if starttls:
                client.starttls(self.ssl_context())
        try:
            client.login(user.name, user.password)
            if folder is not None:
                client.select_folder(folder, readonly=readonly)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    # -- internals ---------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        assert self._mail_pw is not None
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:  # Dovecot's own users must reach it; a single-user instance owns it
            _make_traversable(self.root)
        for directory in (self.base_dir, self.state_dir, self.users_dir, self.tls_dir):
            directory.mkdir(exist_ok=True)
            os.chmod(directory, 0o755)
        for directory in (self.mail_dir, self.home_dir):
            directory.mkdir(exist_ok=True)
            os.chown(directory, self._mail_pw.pw_uid, self._mail_pw.pw_gid)
            os.chmod(directory, 0o700)
        self._write_user(self._probe)

    def _write_config(self) -> None:
        pw = self._mail_pw
        assert pw is not None
        root = self.root
        layout = ":LAYOUT=fs" if self.options.layout == "fs" else ""
        mailboxes = ""
        if self.options.special_use:
            mailboxes = "".join(
                f"  mailbox {box} {{\n    special_use = {flag}\n    auto = create\n  }}\n"
                for box, flag in SPECIAL_USE_MAILBOXES.items()
            )
        if self.tls:
            assert self._cert is not None
            ssl_conf = f"ssl = yes\nssl_cert = <{self._cert.cert_file}\nssl_key = <{self._cert.key_file}\n"
            imaps = f"  inet_listener imaps {{\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"
        else:
            ssl_conf = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        capability = f"  imap_capability = {self.options.capabilities}\n" if self.options.capabilities else ""
        users = ""
        if not self.as_root:  # everything as the invoking user: no privilege separation, no chroot
            group = grp.getgrgid(pw.pw_gid).gr_name
            users = (f"default_login_user = {pw.pw_name}\ndefault_internal_user = {pw.pw_name}\n"
                     f"default_internal_group = {group}\n")
            users += "".join(f"service {name} {{\n  chroot =\n}}\n" for name in _CHROOTED_SERVICES)
        conf = f"""# Generated by mailrules.testing.dovecot - private test instance
instance_name = {self.instance_name}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
protocols = imap
listen = {self.host}
{ssl_conf}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
mail_uid = {pw.pw_uid}
mail_gid = {pw.pw_gid}
mail_location = maildir:{root}/mail/%u{layout}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_dir}/%u
}}
userdb {{
  driver = static
  args = uid={pw.pw_uid} gid={pw.pw_gid} home={self.home_dir}/%u
}}
namespace inbox {{
  inbox = yes
  separator = {self.options.separator}
  prefix = {self.options.prefix}
{mailboxes}}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
{imaps}}}
# No per-IP auth penalty (2-15 s after a failed login, slowing every later test).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = {self.options.max_userip_connections}
{capability}}}
{users}{self.options.extra_conf}
"""
        self.conf_path.write_text(conf)

    def _spawn(self, exe: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        stderr = open(self.root / "dovecot.stderr", "wb")  # noqa: SIM115 - handed to the child
        try:
            with _open_files_raised():
                self._proc = subprocess.Popen(
                    [exe, "-F", "-c", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None,
                    start_new_session=True,
                )
        finally:
            stderr.close()
        proc = self._proc
        if not _wait(lambda: proc.poll() is not None or self._login_works(), START_TIMEOUT) or proc.poll():
            code = proc.poll()
            if code is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
            self._proc = None
            raise DovecotError(
                f"dovecot did not start (exit code {code}) on {self.host}:{self.port}; "
                f"config {self.conf_path}; log tail:\n{self.log_tail()}"
            )

    def _login_works(self) -> bool:
        """True when the probe user can LOGIN on the plain port."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                fh = sock.makefile("rwb")
                if not fh.readline().startswith(b"* OK"):
                    return False
                fh.write(f'a LOGIN "{self._probe.name}" "{self._probe.password}"\r\n'.encode())
                fh.flush()
                while True:
                    line = fh.readline()
                    if not line:
                        return False
                    if line.startswith(b"a "):
                        ok = line.startswith(b"a OK")
                        break
                if ok:
                    fh.write(b"b LOGOUT\r\n")
                    fh.flush()
                return ok
        except OSError:
            return False

    def _kill_leftovers(self) -> None:
        """Wait for (and finally SIGKILL) processes of this instance still running."""
        if _wait(lambda: not _instance_procs(self.instance_name), STOP_TIMEOUT):
            return
        for pid in _instance_procs(self.instance_name):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _instance_procs(self.instance_name), STOP_TIMEOUT)


_last_usec = 0
_usec_lock = threading.Lock()


@contextlib.contextmanager
def temporary_dovecot(dir_prefix: str = "mailrules-dovecot-", /, **kwargs) -> Iterator[DovecotServer]:
    """A started `DovecotServer` (``kwargs``) in a new temporary directory; stopped and removed after.

    Not pytest's ``tmp_path``: Dovecot's unprivileged processes must be able to reach it.
    `dir_prefix` (positional only) names the directory, so that ``prefix=`` is the namespace
    prefix of `DovecotServer` (it named the directory before, and the namespace had none).
    """
    root = Path(tempfile.mkdtemp(prefix=dir_prefix))
    try:
        with DovecotServer(root, **kwargs) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _maildir_base() -> str:
    """A unique Maildir base name ``SEC.MUSECPpid.host``, strictly increasing in time.

    Dovecot assigns UIDs to new files in the order of these names, so messages keep the
    order in which they were delivered.
    """
    global _last_usec
    with _usec_lock:
        _last_usec = max(time.time_ns() // 1000, _last_usec + 1)
        usec = _last_usec
    return f"{usec // 1_000_000}.M{usec % 1_000_000}P{os.getpid()}.mailrules"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _name(user: User | str) -> str:
    return user if isinstance(user, str) else user.name


@atexit.register
def _stop_all() -> None:
    """Stop servers still running when the interpreter exits."""
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
