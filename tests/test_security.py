"""Connection security and secrets: `mailrules.connect` and `mailrules.secrets`.

Integration tests run against private Dovecot instances with TLS (a throwaway CA and
server certificate made by the test kit) and Dovecot's own OAuth2 passdb
(``introspection_mode = post`` against a token-introspection endpoint served here on
127.0.0.1). Misbehaving servers (silent, STARTTLS stripped) are small local sockets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backend import KeyringBackend

from mailrules.connect import (
    AuthenticationError,
    CertificateUnknownError,
    ConnectError,
    ConnectionFailedError,
    ConnectTimeoutError,
    HostnameMismatchError,
    InsecureConnectionError,
    SecretUnavailableError,
    StartTLSMissingError,
    connect,
    tls_info,
)
from mailrules.model import Account, Auth
from mailrules.secrets import (
    KEYRING_SERVICE,
    Secret,
    SecretError,
    get_secret,
    login_command,
    run_secret_command,
    store_password_in_keyring,
)
from mailrules.testing.dovecot import DovecotServer, User, dovecot_available, make_ca, make_cert
from mailrules.testing.proxy import TcpProxy
from mailrules.testing.pytest_plugin import REQUIRE_ENV

CANARY = "Canary-PW-9f2c1e7a-" + os.urandom(6).hex()
TOKEN_CANARY = "Canary-TOKEN-4b7d0e-" + os.urandom(6).hex()
OAUTH_USER = "oauth-alice"  # no passwd-file entry: only the oauth2 passdb knows her



# --------------------------------------------------------------------------- helpers


def make_account(
    auth: Auth, *, host: str = "127.0.0.1", port: int = 993, username: str = "someone",
    tls: str = "implicit", ca_file: str | Path | None = None, timeout: float = 15.0,
    name: str = "work", insecure: bool = False,
) -> Account:
    return Account(
        name=name, host=host, username=username, auth=auth, port=port, tls=tls,
        ca_file=str(ca_file) if ca_file else None, insecure=insecure, timeout=timeout,
    )


def server_account(server: DovecotServer, user: User | str, auth: Auth | None = None, **kw: Any) -> Account:
    """An account for `user` on `server`'s implicit-TLS port, trusting the server's CA."""
    name = user if isinstance(user, str) else user.name
    if auth is None:
        assert isinstance(user, User)
        auth = Auth("password", user.password)
    kw.setdefault("port", server.tls_port)
    kw.setdefault("ca_file", server.ca_file)
    return make_account(auth, username=name, **kw)


def logged_in_as(client: Any) -> bool:
    """The connection is usable and authenticated."""
    return client.noop() is not None and client.list_folders() is not None


def all_text(exc: BaseException) -> str:
    """Everything a user or a log could see of an exception: str, repr, full traceback."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring backend for tests."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


class Introspection:
    """An RFC 7662 token-introspection endpoint on 127.0.0.1 for Dovecot's oauth2 passdb."""

    def __init__(self) -> None:
        self.active: dict[str, str] = {}  # token -> user name
        self.seen: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                token = urllib.parse.parse_qs(body).get("token", [""])[0]
                with owner._lock:
                    owner.seen.append(token)
                    user = owner.active.get(token)
                answer = {"active": True, "username": user} if user else {"active": False}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/introspect"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def allow(self, token: str, user: str = OAUTH_USER) -> None:
        with self._lock:
            self.active[token] = user

    def revoke(self, token: str) -> None:
        with self._lock:
            self.active.pop(token, None)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def oauth2_conf(tmpdir: Path, introspection: Introspection, mechanisms: str) -> str:
    """Dovecot config appended to the kit's: the oauth2 passdb, and no auth penalty.

    Dovecot delays every authentication from an IP after a failure there (2, 4, 8, 15 s,
    through anvil); removing the anvil-auth-penalty socket turns that off, so failures
    in one test cannot slow down the next.
    """
    ext = tmpdir / "dovecot-oauth2.conf.ext"
    ext.write_text(
        "introspection_mode = post\n"
        f"introspection_url = {introspection.url}\n"
        "username_attribute = username\n"
        "active_attribute = active\n"
        "active_value = true\n"
        "timeout_msecs = 10000\n"
    )
    os.chmod(ext, 0o644)
    return (
        f"auth_mechanisms = plain login {mechanisms}\n"
        "passdb {\n  driver = oauth2\n"
        f"  mechanisms = {mechanisms}\n  args = {ext}\n}}\n"
        "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
    )


@pytest.fixture(scope="module")
def introspection() -> Iterator[Introspection]:
    endpoint = Introspection()
    yield endpoint
    endpoint.close()


@contextlib.contextmanager
def oauth2_dovecot(introspection: Introspection, mechanisms: str) -> Iterator[DovecotServer]:
    """A Dovecot with TLS (implicit port + STARTTLS), passwords and the given OAuth2 mechanisms."""
    if not dovecot_available():
        if os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0"):
            pytest.fail(f"dovecot needed, and {REQUIRE_ENV} is set", pytrace=False)
        pytest.skip("needs dovecot (apt-get install dovecot-imapd)")
    if os.geteuid() != 0:
        # not a missing dependency, so a skip even where MAILRULES_REQUIRE_DOVECOT is set
        pytest.skip("needs root (these OAuth2 tests run Dovecot as root, with its packaged users)")
    # Not tmp_path_factory: Dovecot's unprivileged processes must reach the directory.
    root = Path(tempfile.mkdtemp(prefix="mailrules-security-"))
    try:
        with DovecotServer(root, tls=True, extra_conf=oauth2_conf(root, introspection, mechanisms)) as srv:
            yield srv
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(introspection: Introspection) -> Iterator[DovecotServer]:
    """Offers OAUTHBEARER and XOAUTH2 (like Gmail)."""
    with oauth2_dovecot(introspection, "oauthbearer xoauth2") as srv:
        yield srv


@pytest.fixture(scope="module")
def xoauth2_server(introspection: Introspection) -> Iterator[DovecotServer]:
    """Offers XOAUTH2 but not OAUTHBEARER (like Microsoft 365)."""
    with oauth2_dovecot(introspection, "xoauth2") as srv:
        yield srv


@pytest.fixture
def user(server: DovecotServer) -> User:
    return server.add_user()


def login_lines(server: DovecotServer, name: str) -> list[str]:
    text = server.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "Login: " in line and f"user=<{name}>" in line]


def token_command(path: Path) -> list[str]:
    """A token helper that prints the token currently stored in `path`."""
    return [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read().strip())", str(path)]


class RecordingRelay:
    """A plain TCP relay on 127.0.0.1 that keeps every byte the client sent."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.from_client = bytearray()
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if record:
                    self.from_client += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def recording_relay() -> Iterator[type[RecordingRelay]]:
    made: list[RecordingRelay] = []

    class Tracked(RecordingRelay):
        def __init__(self, port: int) -> None:
            super().__init__(port)
            made.append(self)

    yield Tracked
    for relay in made:
        relay.close()


# --------------------------------------------------------------------------- Secret


def test_secret_hides_its_value_in_repr_str_and_format() -> None:
    secret = Secret(CANARY)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s %r" % (secret, secret), repr([secret])]  # noqa: UP031
    assert all(CANARY not in text for text in shown)
    assert repr(secret) == "Secret('***')"
    assert secret.reveal() == CANARY


def test_secret_refuses_pickling() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret(CANARY))


def test_account_repr_hides_inline_password_and_command() -> None:
    for auth in (Auth("password", CANARY), Auth("password_command", ["echo", CANARY]),
                 Auth("oauth2", {"token_command": f"echo {CANARY}"})):
        assert CANARY not in repr(make_account(auth))


# --------------------------------------------------------------------------- secret sources (offline)


def test_password_command_string_is_split_without_a_shell() -> None:
    account = make_account(Auth("password_command", "printf '%s\\n' 'pa ss;$HOME|x'"))
    assert get_secret(account).reveal() == "pa ss;$HOME|x"


def test_password_command_list_is_run_as_given() -> None:
    account = make_account(Auth("password_command", ["printf", "%s\\n", "it's a list"]))
    assert get_secret(account).reveal() == "it's a list"


def test_password_command_strips_one_trailing_newline_only() -> None:
    account = make_account(Auth("password_command", ["printf", "  spaced pw \\n"]))
    assert get_secret(account).reveal() == "  spaced pw "


def test_password_command_printing_several_lines_is_an_error() -> None:
    account = make_account(Auth("password_command", ["printf", f"{CANARY}\\nuser: me\\n"]))
    with pytest.raises(SecretError, match="more than one line") as info:
        get_secret(account)
    assert CANARY not in all_text(info.value)


def test_password_command_failure_reports_exit_status_but_not_its_output() -> None:
    script = f"import sys; print('{CANARY}'); print('oops {CANARY}', file=sys.stderr); sys.exit(3)"
    account = make_account(Auth("password_command", [sys.executable, "-c", script]))
    with pytest.raises(SecretError, match="exit status 3") as info:
        get_secret(account)
    assert CANARY not in all_text(info.value)
    assert "'work'" in str(info.value)


def test_password_command_missing_program_is_named() -> None:
    account = make_account(Auth("password_command", "no-such-program-xyz --get"))
    with pytest.raises(SecretError, match="no-such-program-xyz.*not found"):
        get_secret(account)


def test_password_command_missing_program_is_named_when_a_path_directory_is_unreadable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    # as a non-root user, exec reports EACCES (not ENOENT) for a program found nowhere when one
    # PATH directory cannot be searched; root never sees it, so the kernel's answer is simulated
    monkeypatch.setenv("PATH", str(tmp_path))

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(subprocess, "Popen", refused)
    with pytest.raises(SecretError, match="no-such-program-xyz.*not found"):
        get_secret(make_account(Auth("password_command", "no-such-program-xyz --get")))


def test_password_command_that_hangs_is_stopped_at_its_timeout() -> None:
    account = make_account(Auth("password_command", "x"))
    started = time.monotonic()
    with pytest.raises(SecretError, match="did not finish within 0.5 s"):
        # a child that keeps the pipe open too: the whole process group is stopped
        run_secret_command(["sh", "-c", "sleep 30 & sleep 30"], account, timeout=0.5)
    assert time.monotonic() - started < 30 / 3  # not the children's sleep (not a fixed limit: no busy-machine flake)


def test_password_env_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILRULES_TEST_PW", CANARY)
    assert get_secret(make_account(Auth("password_env", "MAILRULES_TEST_PW"))).reveal() == CANARY


def test_password_env_unset_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILRULES_TEST_PW", raising=False)
    with pytest.raises(SecretError, match="MAILRULES_TEST_PW is not set"):
        get_secret(make_account(Auth("password_env", "MAILRULES_TEST_PW")))


def test_keyring_without_entry_says_to_run_mailrules_login(memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(SecretError, match="mailrules login work"):
        get_secret(make_account(Auth("keyring", True)))


def test_login_command_prompts_and_stores_the_password(memory_keyring: MemoryKeyring) -> None:
    account = make_account(Auth("keyring", True))
    answers = iter([CANARY, CANARY])
    out = _Output()
    assert login_command(account, prompt=lambda _: next(answers), out=out) == 0
    assert memory_keyring.entries[(KEYRING_SERVICE, "work")] == CANARY
    assert get_secret(account).reveal() == CANARY
    assert CANARY not in out.text


def test_login_command_refuses_when_the_two_entries_differ(memory_keyring: MemoryKeyring) -> None:
    answers = iter([CANARY, CANARY + "x"])
    out = _Output()
    assert login_command(make_account(Auth("keyring", True)), prompt=lambda _: next(answers), out=out) == 2
    assert memory_keyring.entries == {}
    assert CANARY not in out.text


def test_login_command_refuses_an_account_that_does_not_use_the_keyring(memory_keyring: MemoryKeyring) -> None:
    out = _Output()
    assert login_command(make_account(Auth("password_env", "X")), prompt=lambda _: "pw", out=out) == 2
    assert "keyring: true" in out.text


class _Output:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


# --------------------------------------------------------------------------- refusals before TLS


def test_tls_none_to_a_remote_host_is_refused_before_connecting() -> None:
    account = make_account(Auth("password", CANARY), host="imap.example.invalid", port=143, tls="none")
    with pytest.raises(InsecureConnectionError, match="insecure: true") as info:
        connect(account)
    assert CANARY not in all_text(info.value)


def test_connection_refused_says_so() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionFailedError, match="refused"):
        connect(make_account(Auth("password", "x"), port=port, timeout=5))


DEFAULT_TIMEOUT = Account.__dataclass_fields__["timeout"].default  # what a timeout not passed on would wait


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_silent_server_times_out(tls: str, server: DovecotServer) -> None:
    """The server accepts the TCP connection and then says nothing (no TLS, no greeting)."""
    user = server.add_user()
    with TcpProxy(server.host, server.tls_port if tls == "implicit" else server.port) as proxy:
        proxy.silence()
        account = server_account(server, user, port=proxy.port, tls=tls, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(ConnectTimeoutError, match="did not answer within 1 s"):
            connect(account)
        assert time.monotonic() - started < DEFAULT_TIMEOUT / 4  # the account's 1 s, not the 60 s default
        assert proxy.connections_accepted == 1


def test_server_silent_after_login_command_times_out() -> None:
    """Greets and answers CAPABILITY, then never answers LOGIN."""
    listener = socket.create_server(("127.0.0.1", 0))
    got_login = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as fh:
            fh.write(b"* OK IMAP4rev1 ready\r\n")
            fh.flush()
            while line := fh.readline():
                tag, _, rest = line.partition(b" ")
                if rest.upper().startswith(b"CAPABILITY"):
                    fh.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                    fh.flush()
                elif rest.upper().startswith(b"LOGIN"):
                    got_login.set()  # and say nothing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    account = make_account(Auth("password", CANARY), port=listener.getsockname()[1], tls="none", timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectTimeoutError, match=r"within 1 s \(login\)") as info:
            connect(account)
    finally:
        listener.close()
    assert got_login.is_set()
    assert time.monotonic() - started < DEFAULT_TIMEOUT / 4  # the account's 1 s, not the 60 s default
    assert CANARY not in all_text(info.value)


# --------------------------------------------------------------------------- TLS against Dovecot


def test_implicit_tls_with_ca_file_logs_in(server: DovecotServer, user: User) -> None:
    client = connect(server_account(server, user, host="localhost"))
    try:
        assert logged_in_as(client)
        assert tls_info(client) and tls_info(client).startswith("TLSv1.")  # type: ignore[union-attr]
    finally:
        client.logout()


def test_unknown_ca_is_refused_with_a_ca_file_hint(server: DovecotServer, user: User) -> None:
    with pytest.raises(CertificateUnknownError, match="ca_file") as info:
        connect(server_account(server, user, ca_file=None))
    assert "not signed by a known certificate authority" in str(info.value)


def test_ca_file_of_another_ca_is_refused(server: DovecotServer, user: User, tmp_path: Path) -> None:
    other = make_ca(tmp_path, name="other-ca")
    with pytest.raises(CertificateUnknownError):
        connect(server_account(server, user, ca_file=other.ca_file))


def test_wrong_host_name_is_refused(tmp_path: Path, dovecot_factory: Any) -> None:
    """A certificate from a trusted CA, but issued for another host name."""
    ca = make_ca(tmp_path / "pki")
    other = dovecot_factory(cert=make_cert(tmp_path / "pki", hostnames=["imap.other.example"], ca=ca))
    account = server_account(other, other.add_user(), host="localhost", ca_file=ca.ca_file)
    with pytest.raises(HostnameMismatchError, match="not valid for the host name 'localhost'"):
        connect(account)


def test_starttls_encrypts_the_session_before_login(
    server: DovecotServer, recording_relay: type[RecordingRelay]
) -> None:
    user = server.add_user(password=CANARY)
    relay = recording_relay(server.port)
    client = connect(server_account(server, user, port=relay.port, tls="starttls"))
    try:
        assert logged_in_as(client)
        assert isinstance(client.socket(), ssl.SSLSocket)
    finally:
        client.logout()
    sent = bytes(relay.from_client)
    assert b"STARTTLS" in sent
    assert b"LOGIN" not in sent and CANARY.encode() not in sent  # only TLS records after STARTTLS
    lines = login_lines(server, user.name)
    assert lines and all(", TLS" in line for line in lines)  # Dovecot saw the login over TLS


def test_server_without_starttls_is_refused_and_gets_no_password(
    server: DovecotServer, recording_relay: type[RecordingRelay]
) -> None:
    """An active attacker strips STARTTLS from the capabilities: no downgrade to plain text."""
    user = server.add_user(password=CANARY)
    with TcpProxy(server.host, server.port, rewrite_server=lambda line: line.replace(b" STARTTLS", b"")) as mitm:
        relay = recording_relay(mitm.port)
        with pytest.raises(StartTLSMissingError, match="does not offer STARTTLS") as info:
            connect(server_account(server, user, port=relay.port, tls="starttls"))
    sent = bytes(relay.from_client)  # nothing at all: the greeting's capabilities lack STARTTLS too
    assert b"LOGIN" not in sent and b"AUTHENTICATE" not in sent and CANARY.encode() not in sent
    assert CANARY not in all_text(info.value)


# --------------------------------------------------------------------------- secret sources against Dovecot


def test_password_command_secret_logs_in(server: DovecotServer, user: User) -> None:
    auth = Auth("password_command", [sys.executable, "-c", f"print({user.password!r})"])
    client = connect(server_account(server, user, auth))
    assert logged_in_as(client)
    client.logout()


def test_password_env_secret_logs_in(server: DovecotServer, user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILRULES_TEST_PW", user.password)
    client = connect(server_account(server, user, Auth("password_env", "MAILRULES_TEST_PW")))
    assert logged_in_as(client)
    client.logout()


def test_keyring_secret_logs_in(server: DovecotServer, user: User, memory_keyring: MemoryKeyring) -> None:
    account = server_account(server, user, Auth("keyring", True))
    store_password_in_keyring(account, user.password)
    client = connect(account)
    assert logged_in_as(client)
    client.logout()


def test_inline_password_logs_in(server: DovecotServer, user: User) -> None:
    client = connect(server_account(server, user, Auth("password", user.password)))
    assert logged_in_as(client)
    client.logout()


def test_unavailable_secret_is_a_connect_error(server: DovecotServer, user: User,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILRULES_TEST_PW", raising=False)
    with pytest.raises(SecretUnavailableError, match="MAILRULES_TEST_PW is not set"):
        connect(server_account(server, user, Auth("password_env", "MAILRULES_TEST_PW")))


def test_wrong_password_names_account_and_user_but_not_the_password(server: DovecotServer, user: User) -> None:
    with pytest.raises(AuthenticationError) as info:
        connect(server_account(server, user, Auth("password", CANARY)))
    message = str(info.value)
    assert "'work'" in message and repr(user.name) in message and "Authentication failed" in message
    assert CANARY not in all_text(info.value)


# --------------------------------------------------------------------------- OAuth2 against Dovecot


def test_oauth2_login_with_oauthbearer(server: DovecotServer, introspection: Introspection,
                                       tmp_path: Path) -> None:
    token = "tok-" + os.urandom(8).hex()
    introspection.allow(token)
    (tmp_path / "token").write_text(token + "\n")
    client = connect(server_account(server, OAUTH_USER, Auth("oauth2", {"token_command": token_command(tmp_path / "token")})))
    try:
        assert logged_in_as(client)
    finally:
        client.logout()
    assert token in introspection.seen
    assert "method=OAUTHBEARER" in login_lines(server, OAUTH_USER)[-1]


def test_oauth2_uses_xoauth2_when_only_xoauth2_is_offered(xoauth2_server: DovecotServer,
                                                         introspection: Introspection, tmp_path: Path) -> None:
    token = "tok-" + os.urandom(8).hex()
    introspection.allow(token)
    (tmp_path / "token").write_text(token)
    auth = Auth("oauth2", {"token_command": token_command(tmp_path / "token")})
    client = connect(server_account(xoauth2_server, OAUTH_USER, auth))
    try:
        assert logged_in_as(client)
    finally:
        client.logout()
    assert "method=XOAUTH2" in login_lines(xoauth2_server, OAUTH_USER)[-1]


def test_oauth2_token_expiring_mid_run_is_replaced_at_the_next_connect(
    server: DovecotServer, introspection: Introspection, tmp_path: Path
) -> None:
    first, second = "tok-1-" + os.urandom(8).hex(), "tok-2-" + os.urandom(8).hex()
    token_file = tmp_path / "token"
    introspection.allow(first)
    token_file.write_text(first)
    account = server_account(server, OAUTH_USER, Auth("oauth2", {"token_command": token_command(token_file)}))
    client = connect(account)
    assert logged_in_as(client)
    client.logout()
    # The token expires; the helper (e.g. oama) now hands out a refreshed one.
    introspection.revoke(first)
    introspection.allow(second)
    token_file.write_text(second)
    client = connect(account)
    try:
        assert logged_in_as(client)
    finally:
        client.logout()
    assert introspection.seen.count(second) == 1
    assert introspection.seen.count(first) == 1  # the expired token was not tried again


def test_oauth2_rejected_token_is_fetched_afresh_and_retried_once(
    server: DovecotServer, introspection: Introspection, tmp_path: Path
) -> None:
    stale, fresh = "tok-stale-" + os.urandom(8).hex(), "tok-fresh-" + os.urandom(8).hex()
    introspection.allow(fresh)
    calls = tmp_path / "calls"
    # A helper whose first answer is a cached token the server no longer accepts.
    script = ("import sys, pathlib; p = pathlib.Path(sys.argv[1]); n = int(p.read_text() or 0) if p.exists() else 0;"
              f" p.write_text(str(n + 1)); print({stale!r} if n == 0 else {fresh!r})")
    auth = Auth("oauth2", {"token_command": [sys.executable, "-c", script, str(calls)]})
    client = connect(server_account(server, OAUTH_USER, auth))
    try:
        assert logged_in_as(client)
    finally:
        client.logout()
    assert calls.read_text() == "2"
    assert stale in introspection.seen and fresh in introspection.seen


def test_oauth2_bad_token_fails_fast_with_a_clear_message(
    server: DovecotServer, introspection: Introspection, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN_CANARY)
    auth = Auth("oauth2", {"token_command": token_command(tmp_path / "token")})
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="rejected the OAuth2 access token") as info:
        connect(server_account(server, OAUTH_USER, auth, timeout=30))
    assert time.monotonic() - started < 10  # the SASL error challenge was answered: no hang until timeout
    message = str(info.value)
    assert repr(OAUTH_USER) in message and "'work'" in message and "invalid_token" in message
    assert introspection.seen.count(TOKEN_CANARY) == 2  # fetched and tried twice
    assert TOKEN_CANARY not in all_text(info.value)


# --------------------------------------------------------------------------- canaries in logs


def _assert_no_canary(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], canary: str) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        text = formatter.format(record)
        assert canary not in text, f"secret leaked in log record from {record.name}: {text[:200]}"
    assert canary not in caplog.text
    out, err = capfd.readouterr()
    assert canary not in out and canary not in err


VERBOSITIES = [1, logging.DEBUG, logging.INFO, logging.WARNING]
LOGGERS = ("imapclient", "imapclient.imapclient", "imapclient.imaplib", "imapclient.util", "mailrules")


@pytest.mark.parametrize("level", VERBOSITIES, ids=["all", "debug", "info", "warning"])
def test_canary_password_never_logged(level: int, server: DovecotServer, caplog: pytest.LogCaptureFixture,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(level)
    for name in LOGGERS:
        caplog.set_level(level, logger=name)
    user = server.add_user(password=CANARY)
    for tls, port in (("implicit", server.tls_port), ("starttls", server.port)):
        client = connect(server_account(server, user, port=port, tls=tls))
        client.select_folder("INBOX")
        client.search(["ALL"])
        client.logout()
    with pytest.raises(AuthenticationError) as info:  # the canary as a wrong password, for another user
        connect(server_account(server, server.add_user(), Auth("password", CANARY)))
    logging.getLogger("mailrules.test").error("login failed: %s", info.value, exc_info=info.value)
    assert CANARY not in all_text(info.value)
    if level <= logging.DEBUG:
        assert any("LOGIN" in r.getMessage() for r in caplog.records)  # the protocol log was on
    _assert_no_canary(caplog, capfd, CANARY)


@pytest.mark.parametrize("level", VERBOSITIES, ids=["all", "debug", "info", "warning"])
def test_canary_token_never_logged(level: int, server: DovecotServer, introspection: Introspection,
                                   tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(level)
    for name in LOGGERS:
        caplog.set_level(level, logger=name)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN_CANARY)
    account = server_account(server, OAUTH_USER, Auth("oauth2", {"token_command": token_command(token_file)}))
    introspection.allow(TOKEN_CANARY)
    try:
        client = connect(account)
        client.noop()
        client.logout()
    finally:
        introspection.revoke(TOKEN_CANARY)
    with pytest.raises(AuthenticationError) as info:
        connect(account)
    logging.getLogger("mailrules.test").error("login failed: %s", info.value, exc_info=info.value)
    assert TOKEN_CANARY not in all_text(info.value)
    _assert_no_canary(caplog, capfd, TOKEN_CANARY)


def test_secret_accidentally_logged_by_other_code_is_scrubbed(caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: once handed out, a secret is replaced by *** in any log record."""
    from mailrules.connect import install_log_redaction

    install_log_redaction()
    monkeypatch.setenv("MAILRULES_TEST_PW", CANARY)
    secret = get_secret(make_account(Auth("password_env", "MAILRULES_TEST_PW")))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("some.plugin").debug("oops, the password is %s", secret.reveal())
    try:
        raise ValueError(f"bad value {secret.reveal()}")
    except ValueError:
        logging.getLogger("some.plugin").exception("failed")
    assert CANARY not in caplog.text
    assert "oops, the password is ***" in caplog.text


def test_imapclient_protocol_lines_with_credentials_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """Our filter on IMAPClient's loggers, independent of IMAPClient's own redaction."""
    from mailrules.connect import install_log_redaction

    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="imapclient")  # the CLI may have raised it earlier
    caplog.set_level(logging.DEBUG, logger="imapclient.imapclient")
    log = logging.getLogger("imapclient.imapclient")
    log.debug("> b'ABCD1 LOGIN someone %s'", "unregistered-pw-123")
    log.debug("> ABCD2 AUTHENTICATE PLAIN %s", "AGZvbwBiYXI=")
    log.debug("< b'* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS AUTH=PLAIN'")
    text = caplog.text
    assert "unregistered-pw-123" not in text and "AGZvbwBiYXI=" not in text
    assert "AUTHENTICATE PLAIN **REDACTED**" in text
    assert "LOGIN-REFERRALS AUTH=PLAIN" in text  # ordinary lines untouched


def test_connect_error_is_a_single_catchable_base() -> None:
    for cls in (AuthenticationError, CertificateUnknownError, HostnameMismatchError, StartTLSMissingError,
                ConnectTimeoutError, ConnectionFailedError, InsecureConnectionError, SecretUnavailableError):
        assert issubclass(cls, ConnectError)


# --------------------------------------------------------------------------- a secret in any form


class EchoingServer:
    """A plain IMAP server on loopback that refuses every login and echoes what it was sent.

    LOGIN: the NO repeats the raw arguments. AUTHENTICATE: the NO repeats the client's base64
    response and the bytes it decodes to. This is what some servers do, and it puts the
    secret in the error text in whatever form the client library then decodes it to.
    """

    def __init__(self, mechanisms: str = "AUTH=PLAIN") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.caps = f"IMAP4rev1 {mechanisms}".encode()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        import base64

        with conn, conn.makefile("rb") as rfile:
            conn.sendall(b"* OK echo ready\r\n")
            for line in rfile:
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                command, _, args = rest.partition(b" ")
                command = command.upper()
                if command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY " + self.caps + b"\r\n" + tag + b" OK done\r\n")
                elif command == b"LOGIN":
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] wrong: " + args + b"\r\n")
                elif command == b"AUTHENTICATE":
                    conn.sendall(b"+ \r\n")
                    response = rfile.readline().rstrip(b"\r\n")
                    decoded = base64.b64decode(response + b"==="[: -len(response) % 4 or 0])
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] wrong: " + response + b" = "
                                 + decoded.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" BAD what\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echoing() -> Iterator[Any]:
    servers: list[EchoingServer] = []

    def factory(mechanisms: str = "AUTH=PLAIN") -> EchoingServer:
        servers.append(EchoingServer(mechanisms))
        return servers[-1]

    yield factory
    for server in servers:
        server.close()


def leaked_forms(secret: str) -> dict[str, str]:
    """The forms a secret takes once a server echoes it and Python decodes or escapes it (an oracle)."""
    raw = secret.encode("utf-8")
    forms = {
        "as is": secret,
        "repr": repr(secret)[1:-1],
        "ascii": ascii(secret)[1:-1],
        "bytes repr": repr(raw)[2:-1],
        "utf-8 read as latin-1": raw.decode("latin-1"),
        "utf-8 read as latin-1, repr": repr(raw.decode("latin-1"))[1:-1],
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "json": json.dumps(secret)[1:-1],
    }
    return {name: form for name, form in forms.items() if len(form) >= 4}


PASSWORDS = {
    "ascii": "Echo-PW-" + os.urandom(4).hex(),
    "non-ascii": "Pässwörd-Ünï-" + os.urandom(4).hex(),
    "control bytes": "tok\x01en\x1b[0m\x7f-" + os.urandom(4).hex(),
    "quotes and backslashes": 'pa"ss\\wo\'rd-' + os.urandom(4).hex(),
}


def _assert_no_form(text: str, secret: str, where: str) -> None:
    for name, form in leaked_forms(secret).items():
        assert form not in text, f"secret ({name} form {form!r}) in {where}: {text[:400]!r}"


@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_a_password_the_server_echoes_in_its_refusal_is_redacted_in_every_form(
        password: str, echoing: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = echoing()
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.setenv("MAILRULES_TEST_ECHO_PW", password)
    account = make_account(Auth("password_env", "MAILRULES_TEST_ECHO_PW"), port=server.port, tls="none")
    with pytest.raises(AuthenticationError) as info:
        connect(account)
    assert "wrong:" in str(info.value)  # the server's echo did reach the message
    logging.getLogger("mailrules.test").error("login failed: %s %r", info.value, str(info.value),
                                              exc_info=info.value)
    _assert_no_form(all_text(info.value), password, "the error")
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        _assert_no_form(formatter.format(record), password, f"a log record of {record.name}")
    out, err = capfd.readouterr()
    _assert_no_form(out + err, password, "the output")


def test_an_oauth2_token_echoed_in_base64_is_redacted(echoing: Any, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import base64

    server = echoing("AUTH=XOAUTH2")
    token = "ya29.Echo-TOKEN-" + os.urandom(6).hex()
    token_file = tmp_path / "token"
    token_file.write_text(token)
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    account = make_account(Auth("oauth2", {"token_command": token_command(token_file)}), port=server.port,
                           tls="none", username="someone")
    with pytest.raises(AuthenticationError) as info:
        connect(account)
    sasl = base64.b64encode(f"user=someone\x01auth=Bearer {token}\x01\x01".encode()).decode()
    for text, where in ((all_text(info.value), "the error"), (caplog.text, "the log")):
        assert sasl not in text and token not in text, where
        _assert_no_form(text, token, where)


def test_redaction_covers_the_forms_a_secret_takes() -> None:
    """The forms, one by one (the SASL PLAIN initial response is registered whole by connect)."""
    import base64

    from mailrules.connect import redact
    from mailrules.secrets import register_secret

    password = "Grüße-" + os.urandom(4).hex()
    register_secret(password)
    plain = f"\0someone\0{password}"
    register_secret(plain)
    raw = password.encode()
    samples = [password, repr(password), ascii(password), repr(raw), raw.decode("latin-1"),
               raw.decode("cp1252", "replace"), base64.b64encode(raw).decode(),
               base64.b64encode(plain.encode()).decode(), urllib.parse.quote(password),
               urllib.parse.quote_plus(password), json.dumps(password), repr([raw])]
    for sample in samples:
        cleaned = redact(f"before {sample} after")
        assert cleaned.startswith("before ") and cleaned.endswith(" after"), cleaned
        assert "***" in cleaned and password not in cleaned, (sample, cleaned)


def test_an_uncaught_traceback_is_redacted(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from mailrules.connect import install_log_redaction\n"
        "from mailrules.model import Account, Auth\n"
        "from mailrules.secrets import get_secret\n"
        "install_log_redaction()\n"
        "s = get_secret(Account(name='a', host='h', username='u', auth=Auth('password_env', 'PW')))\n"
        "raise ValueError('oops ' + repr(s.reveal().encode()))\n"
    )
    secret = "Trace-Pässwörd-" + os.urandom(4).hex()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PW": secret})
    assert "ValueError: oops" in result.stderr and "***" in result.stderr
    _assert_no_form(result.stderr, secret, "the traceback")


# --------------------------------------------------------------------------- child processes


def test_a_child_environment_leaves_out_every_account_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailrules.secrets import child_environment, protect_accounts, register_secret

    value = "Child-PW-" + os.urandom(4).hex()
    monkeypatch.setenv("MAILRULES_TEST_CHILD_PW", "never-fetched-" + os.urandom(4).hex())
    monkeypatch.setenv("MAILRULES_TEST_COPY_OF_A_SECRET", f"prefix {value}")
    monkeypatch.setenv("MAILRULES_TEST_ORDINARY", "kept")
    protect_accounts([make_account(Auth("password_env", "MAILRULES_TEST_CHILD_PW")),
                      make_account(Auth("password", "inline-pw"))])
    register_secret(value)
    env = child_environment()
    assert "MAILRULES_TEST_CHILD_PW" not in env and "MAILRULES_TEST_COPY_OF_A_SECRET" not in env
    assert env["MAILRULES_TEST_ORDINARY"] == "kept" and env["PATH"] == os.environ["PATH"]
    assert child_environment({"A": "1", "MAILRULES_TEST_CHILD_PW": "x"}) == {"A": "1"}


def test_a_password_command_does_not_see_another_accounts_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailrules.secrets import protect_accounts

    monkeypatch.setenv("MAILRULES_TEST_OTHER_ACCOUNT_PW", "other-" + os.urandom(4).hex())
    protect_accounts([make_account(Auth("password_env", "MAILRULES_TEST_OTHER_ACCOUNT_PW"), name="other")])
    show = [sys.executable, "-c", "import os; print(os.environ.get('MAILRULES_TEST_OTHER_ACCOUNT_PW', 'absent'))"]
    secret = get_secret(make_account(Auth("password_command", show), name="mine"))
    assert secret.reveal() == "absent"
