"""Tests of the test kit itself: DovecotServer, TcpProxy, make_message, the pytest fixtures."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import imapclient
import pytest

from mailrules.testing.dovecot import DovecotServer, User, _instance_procs, make_ca, make_cert
from mailrules.testing.messages import make_message as build_message
from mailrules.testing.proxy import TcpProxy

Factory = Callable[..., DovecotServer]


def raises_soon(action: Callable[[], object], timeout: float = 5.0) -> BaseException | None:
    """Call ``action`` until it raises (return the exception) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            action()
        except Exception as exc:
            return exc
        time.sleep(0.02)
    return None


# -------------------------------------------------------------------------- the server


def test_server_advertises_imap4rev1_and_special_use(
    dovecot: DovecotServer, imap: imapclient.IMAPClient
) -> None:
    assert dovecot.host == "127.0.0.1" and dovecot.port > 0
    caps = imap.capabilities()
    assert b"IMAP4REV1" in caps and b"MOVE" in caps and b"SPECIAL-USE" in caps
    assert imap.namespace().personal[0][1] == "/"


def test_fresh_user_is_empty(imap: imapclient.IMAPClient) -> None:
    folders = {name: flags for flags, _, name in imap.list_folders()}
    assert set(folders) == {"INBOX", "Drafts", "Junk", "Sent", "Trash"}
    assert b"\\Trash" in folders["Trash"]
    for name in folders:
        assert imap.folder_status(name, ["MESSAGES"])[b"MESSAGES"] == 0


def test_add_user_names_are_unique_and_explicit_names_work(dovecot: DovecotServer) -> None:
    users = [dovecot.add_user() for _ in range(20)]
    assert len({u.name for u in users}) == 20
    bob = dovecot.add_user(f"bob-{users[0].name}", "s3cret")
    assert bob == User(f"bob-{users[0].name}", "s3cret")
    with pytest.raises(ValueError):
        dovecot.add_user(bob.name)
    client = dovecot.client(bob)
    client.logout()


def test_wrong_password_is_refused_without_slowing_later_logins(
    dovecot: DovecotServer, imap_user: User
) -> None:
    def login_time() -> float:
        started = time.monotonic()
        dovecot.client(imap_user).logout()
        return time.monotonic() - started

    baseline = max(login_time() for _ in range(3))  # logins with no failure before them
    client = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    with pytest.raises(imapclient.exceptions.LoginError):
        client.login(imap_user.name, "wrong")
    client.shutdown()
    # no anvil auth penalty (Dovecot's starts at 2 s): as fast as a login that followed no failure
    assert login_time() < 20 * baseline


def test_append_and_search(imap: imapclient.IMAPClient, make_message: Callable[..., bytes]) -> None:
    imap.append("INBOX", make_message(subject="first", body="alpha"))
    imap.append("INBOX", make_message(subject="second", body="beta"), flags=[imapclient.SEEN])
    imap.select_folder("INBOX")
    assert len(imap.search(["SUBJECT", "second"])) == 1
    assert len(imap.search(["UNSEEN"])) == 1
    assert len(imap.search(["BODY", "alpha"])) == 1


def test_folder_names_may_contain_dots(imap: imapclient.IMAPClient) -> None:
    imap.create_folder("Lists/dev.python.org")
    assert imap.folder_exists("Lists/dev.python.org")


def test_deliver_files_are_visible_with_their_internaldate(
    dovecot: DovecotServer, imap_user: User, make_message: Callable[..., bytes]
) -> None:
    when = datetime(2023, 5, 17, 8, 30, 0, tzinfo=UTC)
    messages = [make_message(subject=f"m{i}") for i in range(3)]
    assert dovecot.deliver_files(imap_user, "Lists/dev.example.org", messages, mtime=when) == 3
    assert dovecot.deliver_files(imap_user, "INBOX", [make_message()], flags="S") == 1
    path = dovecot.mailbox_path(imap_user, "Lists/dev.example.org")
    assert path.is_relative_to(dovecot.mail_dir) and (path / "cur").is_dir()

    client = dovecot.client(imap_user, "Lists/dev.example.org", readonly=True)
    client.normalise_times = False
    fetched = client.fetch(client.search(), ["INTERNALDATE", "FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    subjects = [fetched[uid][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for uid in sorted(fetched)]
    assert subjects == [b"Subject: m0", b"Subject: m1", b"Subject: m2"]  # UIDs in delivery order
    for data in fetched.values():
        assert data[b"INTERNALDATE"] == when
        assert b"\\Seen" not in data[b"FLAGS"]
    client.select_folder("INBOX", readonly=True)
    assert client.search(["SEEN"]) == [1]
    client.logout()


def test_deliver_files_reach_a_selected_client(
    dovecot: DovecotServer, imap: imapclient.IMAPClient, imap_user: User, make_message: Callable[..., bytes]
) -> None:
    imap.select_folder("INBOX")
    dovecot.deliver_files(imap_user, "INBOX", [make_message(subject="late")])
    imap.noop()
    assert imap.search(["SUBJECT", "late"]) == [1]


def test_kick_drops_the_connection(dovecot: DovecotServer, imap_user: User) -> None:
    assert dovecot.kick(imap_user) is False  # nothing to kick yet
    client = dovecot.client(imap_user, "INBOX")
    assert dovecot.kick(imap_user) is True
    assert raises_soon(client.noop) is not None
    dovecot.client(imap_user).logout()  # the account still works


def test_restart_keeps_port_and_mail(dovecot_factory: Factory, make_message: Callable[..., bytes]) -> None:
    server = dovecot_factory()
    user = server.add_user()
    client = server.client(user)
    client.append("INBOX", make_message(subject="survivor"))
    port = server.port
    server.restart()
    assert server.port == port and server.running
    assert raises_soon(client.noop) is not None  # old connection is gone
    client = server.client(user, "INBOX")
    assert client.search(["SUBJECT", "survivor"]) == [1]
    client.logout()


def test_stop_leaves_no_dovecot_process(dovecot_factory: Factory) -> None:
    server = dovecot_factory()
    user = server.add_user()
    client = server.client(user, "INBOX")
    client.idle()
    before_login = socket.create_connection((server.host, server.port), timeout=5)
    assert before_login.recv(100).startswith(b"* OK")
    started = time.monotonic()
    server.stop()
    before_login.close()
    took = time.monotonic() - started
    # a connection left before LOGIN keeps its process ~10 s unless stop() kills it; measured
    # against the same stop() of an idle server
    idle = dovecot_factory()
    started = time.monotonic()
    idle.stop()
    assert took < 5 * (time.monotonic() - started) + 1.0
    assert not server.running
    assert _instance_procs(server.instance_name) == {}
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2).close()


def test_capabilities_override_removes_move_and_uidplus(dovecot_factory: Factory) -> None:
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ IDLE", special_use=False)
    client = server.client(server.add_user())
    caps = set(client.capabilities())
    assert {b"IMAP4REV1", b"IDLE"} <= caps
    assert not caps & {b"MOVE", b"UIDPLUS", b"SPECIAL-USE"}
    assert [name for _, _, name in client.list_folders()] == ["INBOX"]
    client.logout()


def test_two_servers_run_side_by_side(dovecot: DovecotServer, dovecot_factory: Factory) -> None:
    other = dovecot_factory()
    assert other.port != dovecot.port and other.instance_name != dovecot.instance_name
    other.client(other.add_user()).logout()


def test_a_server_listens_on_the_port_it_was_given(dovecot_factory: Factory) -> None:
    port = _free_port()
    server = dovecot_factory(port=port)
    assert server.port == port
    client = imapclient.IMAPClient("127.0.0.1", port, ssl=False, timeout=10)
    user = server.add_user()
    client.login(user.name, user.password)
    client.logout()


def test_a_port_already_taken_is_an_error_naming_the_port(tmp_path: Path) -> None:
    from mailrules.testing.dovecot import DovecotError, dovecot_available

    if not dovecot_available():
        pytest.skip("dovecot is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = DovecotServer(tmp_path / "srv", port=port)
        with pytest.raises(DovecotError, match=f"127.0.0.1:{port}"):
            server.start()
    assert not server.running


def test_more_users_log_in_than_the_callers_soft_limit_on_open_files_allows(tmp_path: Path) -> None:
    """Dovecot's auth process keeps each user's passwd file open: under a low soft limit (a user
    without root often has 1,024, and a test session adds thousands of users) the kit's Dovecot
    is started with the hard limit, and the caller's limit is left as it was."""
    import resource

    from mailrules.testing.dovecot import dovecot_available

    if not dovecot_available():
        pytest.skip("dovecot is not installed")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard limit on open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
    try:
        server = DovecotServer(tmp_path / "srv").start()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (300, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        for user in [server.add_user() for _ in range(400)]:
            with imapclient.IMAPClient(server.host, server.port, ssl=False, timeout=10) as client:
                client.login(user.name, user.password)
    finally:
        server.stop()


NOBODY_SCRIPT = """
import os, pwd
from mailrules.testing.dovecot import temporary_dovecot
from mailrules.testing.messages import make_message
with temporary_dovecot() as server:
    user = server.add_user()
    server.deliver_files(user, "INBOX", [make_message(subject="mine")])
    client = server.client(user, "INBOX")
    assert client.search(["SUBJECT", "mine"]) == [1]
    client.create_folder("Lists/dev")
    client.move([1], "Lists/dev")
    client.logout()
    owners = {os.stat(path).st_uid for path in server.mail_dir.rglob("*")}
    print("owners", sorted(pwd.getpwuid(uid).pw_name for uid in owners))
"""


def test_a_normal_user_runs_a_private_server_as_itself(tmp_path: Path) -> None:
    """Not root: Dovecot runs entirely as the invoking user (no vmail, no chroot)."""
    import os
    import shutil
    import subprocess
    import sys

    from mailrules.testing.dovecot import dovecot_available

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root (to become 'nobody')")
    if not dovecot_available() or setpriv is None:
        pytest.skip("needs dovecot (apt-get install dovecot-imapd) and setpriv (util-linux)")
    as_nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo, "HOME": str(tmp_path)}
    probe = subprocess.run([*as_nobody, sys.executable, "-c", "import imapclient, mailrules"],
                           env=env, capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"'nobody' cannot run this Python and the repository: {probe.stderr.strip()[-200:]}")
    result = subprocess.run([*as_nobody, sys.executable, "-c", NOBODY_SCRIPT], env=env,
                            capture_output=True, text=True, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "owners ['nobody']" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -------------------------------------------------------------------------- TLS


def test_tls_server_verifies_with_ca_file(dovecot_factory: Factory, tmp_path: Path) -> None:
    server = dovecot_factory(tls=True)
    assert server.ca_file is not None and server.ca_file.exists() and server.tls_port
    user = server.add_user()
    for kwargs in ({"tls": True}, {"starttls": True}):
        client = server.client(user, "INBOX", **kwargs)
        assert client.search() == []
        client.logout()
    plain = imapclient.IMAPClient(server.host, server.port, ssl=False, timeout=10)
    assert b"STARTTLS" in plain.capabilities()
    plain.shutdown()
    # another CA, or no CA at all, must not verify
    other = make_ca(tmp_path / "other")
    for context in (ssl.create_default_context(cafile=str(other.ca_file)), ssl.create_default_context()):
        with pytest.raises(ssl.SSLCertVerificationError):
            imapclient.IMAPClient(server.host, server.tls_port, ssl=True, ssl_context=context, timeout=10)


def test_certificate_for_another_host_fails_hostname_check(dovecot_factory: Factory, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    cert = make_cert(tmp_path / "pki", hostnames=["imap.other.example"], ca=ca)
    server = dovecot_factory(cert=cert)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)hostname|match"):
        imapclient.IMAPClient(server.host, server.tls_port, ssl=True, ssl_context=context, timeout=10)
    # the same CA accepts it when the name matches
    with (
        socket.create_connection((server.host, server.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="imap.other.example") as tls,
    ):
        assert tls.recv(100).startswith(b"* OK")


# -------------------------------------------------------------------------- the proxy


def noop_rtts(client: imapclient.IMAPClient, count: int = 5) -> list[float]:
    rtts = []
    for _ in range(count):
        started = time.perf_counter()
        client.noop()
        rtts.append(time.perf_counter() - started)
    return sorted(rtts)


def test_proxy_delay_adds_latency_not_throughput_limits(
    dovecot: DovecotServer, imap_user: User, make_message: Callable[..., bytes]
) -> None:
    dovecot.deliver_files(imap_user, "INBOX", [make_message(size_padding=3_000_000)])
    direct = dovecot.client(imap_user, "INBOX")
    direct_rtt = noop_rtts(direct)[0]
    direct.logout()
    with TcpProxy(dovecot.host, dovecot.port, delay=0.025) as proxy:
        client = dovecot.client(imap_user, "INBOX", port=proxy.port)
        rtts = noop_rtts(client)
        assert rtts[0] >= 0.045 > direct_rtt
        assert rtts[len(rtts) // 2] < 0.5
        # 3 MB is ~50 chunks: serial per-chunk sleeps would add ~50 x 25 ms each way
        started = time.perf_counter()
        body = client.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"]
        proxied = time.perf_counter() - started
        assert len(body) > 3_000_000
        client.logout()
    direct = dovecot.client(imap_user, "INBOX")
    started = time.perf_counter()
    direct.fetch([1], ["BODY.PEEK[]"])
    plain = time.perf_counter() - started
    direct.logout()
    chunks = len(body) // 65536
    assert proxied < 3 * plain + 2 * 0.050 + chunks * 0.025 / 2  # one round trip, not one sleep per chunk


def test_proxy_drop_all_breaks_open_connections(dovecot: DovecotServer, imap_user: User) -> None:
    with TcpProxy(dovecot.host, dovecot.port) as proxy:
        client = dovecot.client(imap_user, "INBOX", port=proxy.port, timeout=5)
        assert proxy.wait_connections(1)
        assert proxy.drop_all() == 1
        assert raises_soon(client.noop) is not None
        assert proxy.wait_connections(0)
        dovecot.client(imap_user, port=proxy.port).logout()  # new connections still work
        assert proxy.connections_accepted == 2


def test_proxy_silence_holds_traffic_until_resume(dovecot: DovecotServer, imap_user: User) -> None:
    with TcpProxy(dovecot.host, dovecot.port) as proxy:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
        fh = sock.makefile("rb")
        assert fh.readline().startswith(b"* OK")
        proxy.silence()
        sock.sendall(b"a NOOP\r\n")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)
        proxy.resume()
        assert fh.readline().startswith(b"a OK")
        sock.close()


def test_proxy_rewrites_server_lines_but_not_literals(
    dovecot: DovecotServer, imap_user: User, make_message: Callable[..., bytes]
) -> None:
    dovecot.deliver_files(imap_user, "INBOX", [make_message(body="PERMANENTFLAGS (\\*) in a body")])

    def strip_keywords(line: bytes) -> bytes:
        return line.replace(b" \\*)", b")") if b"PERMANENTFLAGS" in line else line

    with TcpProxy(dovecot.host, dovecot.port, rewrite_server=strip_keywords) as proxy:
        client = dovecot.client(imap_user, port=proxy.port)
        info = client.select_folder("INBOX")
        assert b"\\*" not in info[b"PERMANENTFLAGS"] and b"\\Seen" in info[b"PERMANENTFLAGS"]
        body = client.fetch([1], ["BODY.PEEK[TEXT]"])[1][b"BODY[TEXT]"]
        assert b"PERMANENTFLAGS (\\*) in a body" in body
        client.logout()


# -------------------------------------------------------------------------- messages


def test_make_message_builds_a_parseable_rfc5322_message() -> None:
    raw = build_message(
        subject="Grüße aus Köln",
        from_="Zoë <zoe@example.org>",
        to=["a@example.org", "B <b@example.org>"],
        cc="c@example.org",
        body="Hällo",
        html="<p>Hällo</p>",
        headers=[("List-Id", "<dev.example.org>"), ("Received", "from a"), ("Received", "from b")],
        date=datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1))),
        attachments=[("report.pdf", b"%PDF-1.4 fake"), ("notes.txt", "ü", "text/plain")],
    )
    assert raw.isascii() is False or b"\r\n" in raw
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in head and b"\n" not in head.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["From"].addresses[0].display_name == "Zoë"
    assert len(msg["To"].addresses) == 2 and msg["Cc"] == "c@example.org"
    assert msg["Date"].datetime == datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert msg.get_all("Received") == ["from a", "from b"]
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("plain",)).get_content().strip() == "Hällo"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hällo</p>"
    names = [part.get_filename() for part in msg.iter_attachments()]
    assert names == ["report.pdf", "notes.txt"]


def test_make_message_ids_headers_and_padding() -> None:
    first, second = build_message(), build_message()
    ids = [re.search(rb"Message-ID: (<[^>]+>)", m).group(1) for m in (first, second)]  # type: ignore[union-attr]
    assert ids[0] != ids[1]
    assert b"Message-ID: <abc@example.org>" in build_message(message_id="abc@example.org")
    no_date = build_message(headers={"Date": None, "Subject": "replaced"})
    assert b"\r\nDate:" not in no_date and b"Subject: replaced" in no_date and b"Subject: Test" not in no_date
    assert len(build_message(size_padding=10_000)) >= len(first) + 10_000
