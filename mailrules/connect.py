"""Opening a verified, logged-in IMAP connection for an account.

One module because TLS, authentication and the translation of their failures into errors
that say what to fix share one connection's short life and its secrets (which must never leak
from any of them).

`connect(account)` returns a logged-in `imapclient.IMAPClient`:

- TLS: ``implicit`` (TLS from the first byte, port 993), ``starttls`` (plain connection,
  then STARTTLS; refused if the server does not offer it: never a silent downgrade) or
  ``none`` (plain; only to loopback or with ``insecure: true``). Certificates and host
  names are checked against the system's CAs; ``ca_file`` adds a CA.
- Authentication: a password with LOGIN (AUTHENTICATE PLAIN if the server says
  LOGINDISABLED or the password is not ASCII); an OAuth2 token with OAUTHBEARER or XOAUTH2,
  whichever the server offers (OAUTHBEARER first). The token is fetched afresh for every
  connection, and once more if the server rejects it. A rejected token's SASL error
  challenge is answered at once, so a bad token fails fast instead of hanging.
- Timeouts: the account's ``timeout`` (or `connect`'s ``timeout=``) bounds the TCP
  connect, the TLS handshake, the greeting, login and every later command read.
- Every failure is a `ConnectError` subclass whose message says what failed and how to
  fix it, and never contains the secret.
- `install_log_redaction()` (called by `connect`) keeps LOGIN/AUTHENTICATE arguments and
  every secret handed out by `mailrules.secrets` out of all log records, IMAPClient's and
  imaplib's protocol debug logs included.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import imapclient
from imapclient import SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from .imap.internals import GreetingCapabilitiesClient, quiet_unless_logged
from .model import Account
from .netutil import is_loopback
from .secrets import Secret, SecretError, get_secret, known_secrets, redact_secrets, register_secret

__all__ = [
    "AuthenticationError",
    "CertificateUnknownError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectionFailedError",
    "HostnameMismatchError",
    "InsecureConnectionError",
    "SecretUnavailableError",
    "StartTLSMissingError",
    "TLSError",
    "connect",
    "install_log_redaction",
    "is_loopback",
    "make_ssl_context",
    "redact",
    "tls_info",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- errors


class ConnectError(Exception):
    """Connecting to or logging in to an account's server failed.

    ``account`` is the account's name; the message is a complete sentence for the user.
    """

    def __init__(self, message: str, *, account: str = "") -> None:
        super().__init__(redact(message))
        self.account = account


class ConnectionFailedError(ConnectError):
    """No IMAP connection: host not found, connection refused or reset, bad greeting."""


class ConnectTimeoutError(ConnectionFailedError):
    """The server did not answer within the timeout (connect, TLS, greeting, login)."""


class TLSError(ConnectError):
    """The TLS handshake failed or the certificate could not be verified."""


class CertificateUnknownError(TLSError):
    """The server's certificate is not signed by a known CA (add it with ``ca_file:``)."""


class HostnameMismatchError(TLSError):
    """The certificate is valid but issued for another host name."""


class StartTLSMissingError(TLSError):
    """``tls: starttls`` but the server does not offer STARTTLS (refused: no downgrade)."""


class InsecureConnectionError(ConnectError):
    """``tls: none`` to a host that is not loopback without ``insecure: true``."""


class AuthenticationError(ConnectError):
    """The server rejected the credentials, or no usable login method was offered."""


class SecretUnavailableError(ConnectError):
    """The password or token could not be obtained (see `mailrules.secrets`)."""


# --------------------------------------------------------------------------- log redaction

_REDACTED = "**REDACTED**"
# A protocol line carrying credentials: "<tag> LOGIN user pass", "<tag> AUTHENTICATE MECH [ir]".
_AUTH_COMMAND = re.compile(
    r"^(?P<head>\s*(?:[<>]\s*)?(?:b?['\"])?[A-Za-z0-9.]+ (?:LOGIN|AUTHENTICATE))(?![A-Za-z0-9_-])"
    r"(?P<mech> [A-Za-z0-9_-]+)?(?P<rest>.*)$",
    re.DOTALL,
)


def redact(text: str) -> str:
    """`text` with every known secret, in every form it can take, replaced by ``***``.

    Forms: see `mailrules.secrets.secret_forms` (escaped, mis-decoded, base64, URL-encoded).
    """
    return redact_secrets(text)


def _redact_protocol(text: str) -> str:
    m = _AUTH_COMMAND.search(text)
    if m is None:
        return text
    head, mech, rest = m.group("head"), m.group("mech") or "", m.group("rest")
    if head.endswith("LOGIN"):
        return f"{head} {_REDACTED}"
    # AUTHENTICATE: the mechanism name is harmless; anything after it (SASL-IR) is not.
    return f"{head}{mech} {_REDACTED}" if rest.strip(" '\"") else f"{head}{mech}{rest}"


class _ProtocolRedactor(logging.Filter):
    """On IMAPClient's loggers: drop LOGIN/AUTHENTICATE arguments from protocol lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(_redact_protocol(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_install_lock = threading.Lock()
_installed = False
_PROTOCOL_LOGGERS = ("imapclient", "imapclient.imapclient", "imapclient.imaplib", "imapclient.util")


def _scrub_record(record: logging.LogRecord) -> None:
    secrets = known_secrets()
    if not secrets:
        return
    try:
        message = record.getMessage()
    except Exception:
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(text)
        if cleaned != text:
            record.exc_text = cleaned


def install_log_redaction() -> None:
    """Keep secrets out of every log record (idempotent; `connect` calls it).

    Adds a filter to IMAPClient's loggers that removes LOGIN/AUTHENTICATE arguments from
    protocol debug lines (whatever IMAPClient itself does), and wraps the log record
    factory so that any record, from any logger, has every secret handed out by
    `mailrules.secrets.get_secret` replaced by ``***`` (message and traceback text).
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        protocol_filter = _ProtocolRedactor()
        for name in _PROTOCOL_LOGGERS:
            logging.getLogger(name).addFilter(protocol_filter)
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _scrub_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _install_excepthooks()
        _installed = True


def _install_excepthooks() -> None:
    """Tracebacks printed for uncaught exceptions (main thread and others) are redacted too."""
    import sys
    import traceback

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(redact(text))

    previous_thread_hook = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = hook
    if previous_thread_hook is threading.__excepthook__:
        threading.excepthook = thread_hook


# --------------------------------------------------------------------------- TLS


def make_ssl_context(account: Account) -> ssl.SSLContext:
    """A verifying client context: the system CAs, plus ``ca_file`` if set; host names checked."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if account.ca_file:
        try:
            context.load_verify_locations(cafile=account.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(
                f"account {account.name!r}: ca_file {account.ca_file} could not be loaded "
                f"({getattr(exc, 'strerror', None) or exc}); it must be a readable PEM file "
                "holding the CA certificate(s)",
                account=account.name,
            ) from None
    return context


def tls_info(client: imapclient.IMAPClient) -> str | None:
    """The TLS version and cipher of a connection, e.g. ``"TLSv1.3 TLS_AES_256_GCM_SHA384"``; None if plain."""
    sock = client.socket()
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cipher = sock.cipher()
    return f"{sock.version()} {cipher[0]}" if cipher else sock.version()


# X509_V_ERR_* codes (OpenSSL) that mean "signed by no CA we know".
_UNKNOWN_CA_CODES = {2, 18, 19, 20, 21}
_HOSTNAME_CODES = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_EXPIRED_CODES = {9, 10}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED


def _where(account: Account) -> str:
    return f"{account.host}:{account.port}"


def _tls_error(account: Account, exc: ssl.SSLError, stage: str) -> TLSError:
    where, name = _where(account), account.name
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message or str(exc)
        if code in _HOSTNAME_CODES:
            return HostnameMismatchError(
                f"account {name!r}: the TLS certificate of {where} is not valid for the host name "
                f"{account.host!r} ({detail}). Set 'host:' to a name the certificate was issued "
                "for (the server's canonical name, not an alias or an IP address)",
                account=name,
            )
        if code in _UNKNOWN_CA_CODES:
            hint = (f"the CA in ca_file {account.ca_file} did not sign it either" if account.ca_file
                    else "if the server uses a private or self-signed CA, add it with "
                         "'ca_file: /path/to/ca.pem'")
            return CertificateUnknownError(
                f"account {name!r}: the TLS certificate of {where} is not signed by a known "
                f"certificate authority ({detail}); {hint}. Never disable verification",
                account=name,
            )
        if code in _EXPIRED_CODES:
            return TLSError(
                f"account {name!r}: the TLS certificate of {where} is outside its validity "
                f"period ({detail}); the server's administrator must renew it (or check this "
                "machine's clock)",
                account=name,
            )
        return TLSError(f"account {name!r}: the TLS certificate of {where} was refused ({detail})",
                        account=name)
    reason = getattr(exc, "reason", None) or str(exc)
    hint = ""
    if stage == "implicit" and reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING",
                                          "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        hint = (f"; port {account.port} may not be an implicit-TLS port: for a server that "
                "expects STARTTLS (usually port 143) set 'tls: starttls'")
    return TLSError(f"account {name!r}: the TLS handshake with {where} failed ({reason}){hint}",
                    account=name)


def _network_error(account: Account, exc: BaseException, stage: str, timeout: float) -> ConnectError:
    where, name = _where(account), account.name
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        hint = "check the host and port, or raise the account's 'timeout:'"
        if account.tls != "implicit" and "greeting" in stage:
            hint = ("check the host and port (a port that expects TLS from the first byte needs "
                    "'tls: implicit'), or raise the account's 'timeout:'")
        if account.tls != "implicit" and account.port in (993, 995) and "greeting" in stage:
            hint = (f"port {account.port} usually expects TLS from the first byte: set "
                    "'tls: implicit' (or use the STARTTLS port, usually 143)")
        return ConnectTimeoutError(
            f"account {name!r}: {where} did not answer within {timeout:g} s ({stage}); {hint}",
            account=name,
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailedError(
            f"account {name!r}: connection to {where} refused; check the host and port, and "
            "that the server is running",
            account=name,
        )
    if isinstance(exc, socket.gaierror):
        return ConnectionFailedError(
            f"account {name!r}: the host name {account.host!r} could not be resolved "
            f"({exc.strerror or exc}); check 'host:' and the network",
            account=name,
        )
    if isinstance(exc, imaplib.IMAP4.error):
        text = str(exc)
        if "EOF" in text or "socket error" in text:
            text = "the server closed the connection"
        return ConnectionFailedError(f"account {name!r}: {where}: {text} ({stage})", account=name)
    if isinstance(exc, OSError):
        return ConnectionFailedError(
            f"account {name!r}: network error talking to {where} ({stage}): "
            f"{exc.strerror or exc or 'no details'}",
            account=name,
        )
    return ConnectionFailedError(f"account {name!r}: {where}: {exc} ({stage})", account=name)


# --------------------------------------------------------------------------- connecting


GREETING_HINT_WAIT = 4.0  # seconds of silence before a plain connection asks whether the port speaks TLS
TLS_PROBE_WAIT = 3.0  # seconds for that question (a separate connection, a ClientHello only)
# Handshake failures that mean "the other side did not answer in TLS at all".
_NOT_TLS_REASONS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE",
                    "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL")


def _speaks_tls(account: Account) -> bool:
    """Whether host:port answers a TLS ClientHello, on a short-lived connection of its own.

    Nothing but the ClientHello is sent and nothing received is trusted or used, so the
    certificate is not verified here (it would be, on the real connection).
    """
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # a yes/no question about the protocol, see above
    try:
        with socket.create_connection((account.host, account.port), timeout=TLS_PROBE_WAIT) as raw, \
                probe.wrap_socket(raw, server_hostname=account.host):
            return True
    except ssl.SSLError as exc:  # an alert is a TLS answer too; garbage is not
        return (getattr(exc, "reason", None) or "") not in _NOT_TLS_REASONS
    except OSError:
        return False


def _tls_port_error(account: Account) -> ConnectionFailedError:
    return ConnectionFailedError(
        f"account {account.name!r}: {_where(account)} sent no IMAP greeting but speaks TLS: it is an "
        f"implicit-TLS port (usually 993), and 'tls: {account.tls}' starts in plain text. Set "
        "'tls: implicit' (or use the server's STARTTLS port, usually 143)",
        account=account.name,
    )


def _plain_client(account: Account, timeout: float) -> imapclient.IMAPClient:
    """A plain connection with its greeting; silence is checked for a TLS port early.

    The greeting is first awaited for GREETING_HINT_WAIT seconds only: an implicit-TLS port
    stays silent (its server waits for a ClientHello), which would otherwise cost the whole
    `timeout` and end with a misleading hint. If the port speaks TLS, that is the error;
    otherwise the connection is opened again with the full timeout (a slow server).
    """
    def attempt(wait: float) -> imapclient.IMAPClient:
        return GreetingCapabilitiesClient(account.host, port=account.port, ssl=False,
                                     timeout=SocketTimeout(connect=wait, read=timeout))

    if timeout <= GREETING_HINT_WAIT + TLS_PROBE_WAIT:  # short enough: the timeout's hint names TLS
        return attempt(timeout)
    try:
        return attempt(GREETING_HINT_WAIT)
    except TimeoutError:
        if _speaks_tls(account):
            raise _tls_port_error(account) from None
    return attempt(timeout)


def _open(account: Account, timeout: float, context: ssl.SSLContext | None) -> imapclient.IMAPClient:
    """TCP (+ TLS) connection and greeting; STARTTLS done if asked. Not logged in."""
    implicit = account.tls == "implicit"
    stage = "TLS handshake and greeting" if implicit else "connecting and reading the greeting"
    try:
        if implicit:
            client = GreetingCapabilitiesClient(
                account.host,
                port=account.port,
                ssl=True,
                ssl_context=context,
                timeout=SocketTimeout(connect=timeout, read=timeout),
            )
        else:
            client = _plain_client(account, timeout)
    except ssl.SSLError as exc:
        raise _tls_error(account, exc, "implicit") from exc
    except (OSError, imaplib.IMAP4.error) as exc:
        raise _network_error(account, exc, stage, timeout) from exc
    _no_delay(client)
    try:
        if account.tls == "starttls":
            _starttls(client, account, context, timeout)
    except BaseException:
        _close_quietly(client)
        raise
    return client


def _no_delay(client: imapclient.IMAPClient) -> None:
    """Send small writes at once (TCP_NODELAY).

    imaplib sends an APPEND's literal and its closing CRLF in two writes; with Nagle's algorithm
    the CRLF waits for the ACK of the literal, which a server that answers nothing until the
    line is complete (Cyrus) delays by ~40 ms: every APPEND cost that much.
    """
    with contextlib.suppress(OSError, AttributeError):
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _starttls(client: imapclient.IMAPClient, account: Account, context: ssl.SSLContext | None,
              timeout: float) -> None:
    try:
        caps = client.capabilities()
    except (OSError, imaplib.IMAP4.error) as exc:
        raise _network_error(account, exc, "reading capabilities", timeout) from exc
    if b"STARTTLS" not in caps:
        raise StartTLSMissingError(
            f"account {account.name!r}: {_where(account)} does not offer STARTTLS, so the "
            "connection would not be encrypted; refusing to continue in plain text. Use "
            "'tls: implicit' (usually port 993) if the server offers it; if something between "
            "you and the server strips STARTTLS, that is an attack",
            account=account.name,
        )
    try:
        client.starttls(context)
    except ssl.SSLError as exc:
        raise _tls_error(account, exc, "starttls") from exc
    except IMAPClientError as exc:
        if isinstance(exc, imaplib.IMAP4.abort):
            raise _network_error(account, exc, "STARTTLS", timeout) from exc
        raise TLSError(f"account {account.name!r}: {_where(account)} refused STARTTLS ({exc})",
                       account=account.name) from exc
    except OSError as exc:
        raise _network_error(account, exc, "STARTTLS", timeout) from exc
    log.debug("account %s: STARTTLS done (%s)", account.name, tls_info(client))


def _close_quietly(client: imapclient.IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


class _Sasl:
    """A SASL client-first exchange for imaplib's authenticate() callback.

    The first challenge (empty) gets the initial response; any further challenge is the
    server's error report (RFC 7628 3.2.2: a base64 JSON status after a rejected token),
    which is kept and answered with the dummy response so that the server finishes with a
    tagged NO at once instead of waiting for us.
    """

    def __init__(self, initial: str, dummy: bytes | None) -> None:
        register_secret(initial)  # so that its base64, as a protocol log shows it, is redacted too
        self._initial: str | None = initial
        self._dummy = dummy
        self.error: bytes | None = None

    def __call__(self, challenge: bytes) -> bytes | str | None:
        if self._initial is not None:
            initial, self._initial = self._initial, None
            return initial
        self.error = challenge
        return self._dummy  # None: imaplib sends "*" (cancel)

    def error_summary(self) -> str:
        """A short, safe description of the server's error challenge, or ''."""
        if not self.error:
            return ""
        try:
            data = json.loads(self.error.decode("utf-8"))
        except ValueError:  # not UTF-8, not JSON
            return ""
        if not isinstance(data, dict):
            return ""
        parts = [f"{k} {str(data[k])[:100]!r}" for k in ("status", "scope", "schemes") if k in data]
        return ", ".join(parts)


def _server_text(exc: BaseException) -> str:
    text = str(exc)
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        text = text[2:-1]
    for prefix in ("authenticate failed: ", "login failed: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.strip().rstrip(".")[:300] or "no reason given"


def _mechanisms(caps: tuple[bytes, ...]) -> set[str]:
    return {c[5:].decode("ascii", "replace").upper() for c in caps if c.upper().startswith(b"AUTH=")}


def _login_password(client: imapclient.IMAPClient, account: Account, secret: Secret,
                    caps: tuple[bytes, ...]) -> None:
    password = secret.reveal()
    mechs = _mechanisms(caps)
    use_plain = b"LOGINDISABLED" in caps or not password.isascii() or not account.username.isascii()
    if use_plain and "PLAIN" not in mechs:
        why = ("refuses LOGIN (LOGINDISABLED)" if b"LOGINDISABLED" in caps
               else "cannot take a non-ASCII user name or password with LOGIN")
        raise AuthenticationError(
            f"account {account.name!r}: {_where(account)} {why} and does not offer AUTHENTICATE "
            "PLAIN; if the connection is not encrypted, use 'tls: starttls' or 'tls: implicit'",
            account=account.name,
        )
    if use_plain:
        client.sasl_login("PLAIN", _Sasl(f"\0{account.username}\0{password}", None))
    else:
        client.login(account.username, password)


_OAUTH2_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")  # in order of preference (RFC 7628 first)


def _login_oauth2(client: imapclient.IMAPClient, account: Account, token: Secret,
                  caps: tuple[bytes, ...]) -> _Sasl:
    mechs = _mechanisms(caps)
    mech = next((m for m in _OAUTH2_MECHANISMS if m in mechs), None)
    if mech is None:
        offered = ", ".join(sorted(mechs)) or "none"
        raise AuthenticationError(
            f"account {account.name!r}: {_where(account)} offers no OAuth2 login "
            f"(AUTH=OAUTHBEARER or AUTH=XOAUTH2); it offers: {offered}",
            account=account.name,
        )
    user = account.username
    if mech == "OAUTHBEARER":
        gs2 = "n,a=" + user.replace("=", "=3D").replace(",", "=2C") + ","
        sasl = _Sasl(f"{gs2}\x01auth=Bearer {token.reveal()}\x01\x01", b"\x01")
    else:
        sasl = _Sasl(f"user={user}\x01auth=Bearer {token.reveal()}\x01\x01", b"")
    log.debug("account %s: authenticating with %s", account.name, mech)
    try:
        client.sasl_login(mech, sasl)
    except LoginError as exc:
        exc.sasl = sasl  # type: ignore[attr-defined]
        raise
    return sasl


def _fetch_secret(account: Account) -> Secret:
    try:
        return get_secret(account)
    except SecretError as exc:
        raise SecretUnavailableError(str(exc), account=account.name) from None


def connect(account: Account, *, timeout: float | None = None, announce: bool = True) -> imapclient.IMAPClient:
    """A logged-in IMAPClient for `account` (see the module docstring).

    `timeout` (seconds) overrides ``account.timeout`` for the connect, the TLS handshake,
    the greeting, login and every later command read. Raises a `ConnectError` subclass.
    announce=False: the login is logged at debug level (a helper connection, `mailrules.imap.beside`).
    """
    install_log_redaction()
    t = float(timeout if timeout is not None else account.timeout)
    if account.tls not in ("implicit", "starttls", "none"):
        raise ConnectError(f"account {account.name!r}: unknown tls mode {account.tls!r}",
                           account=account.name)
    if account.tls == "none" and not (account.insecure or is_loopback(account.host)):
        raise InsecureConnectionError(
            f"account {account.name!r}: 'tls: none' to {account.host}, which is not loopback, "
            "would send the password in plain text; use 'tls: implicit' or 'tls: starttls' "
            "(or, knowingly, 'insecure: true')",
            account=account.name,
        )
    context = make_ssl_context(account) if account.tls != "none" else None
    oauth2 = account.auth.kind == "oauth2"
    attempts = 2 if oauth2 else 1
    for attempt in range(1, attempts + 1):
        client = _open(account, t, context)
        quiet_unless_logged(client)
        try:
            _authenticate(client, account, t, final=attempt == attempts)
        except _Rejected:
            _close_quietly(client)
            log.info("account %s: the server rejected the OAuth2 token; fetching a new one "
                     "and trying once more", account.name)
            continue
        except BaseException:
            _close_quietly(client)
            raise
        log.log(logging.INFO if announce else logging.DEBUG, "account %s: logged in to %s as %s (%s)",
                account.name, _where(account), account.username, tls_info(client) or "no TLS")
        return client
    raise AssertionError("unreachable")  # pragma: no cover


class _Rejected(Exception):
    """Internal: an OAuth2 token was rejected and a retry with a fresh token is allowed."""


def _authenticate(client: imapclient.IMAPClient, account: Account, timeout: float, *,
                  final: bool) -> None:
    try:
        caps = client.capabilities()
    except (OSError, imaplib.IMAP4.error) as exc:
        raise _network_error(account, exc, "reading capabilities", timeout) from None
    secret = _fetch_secret(account)
    login: Callable[..., Any] = _login_oauth2 if account.auth.kind == "oauth2" else _login_password
    try:
        login(client, account, secret, caps)
    except LoginError as exc:
        if account.auth.kind == "oauth2" and not final:
            raise _Rejected() from None
        raise _auth_failed(account, exc) from None
    except (OSError, imaplib.IMAP4.error) as exc:
        raise _network_error(account, exc, "login", timeout) from None
    except ValueError:  # e.g. a SASL challenge that is not base64: the server is broken
        raise ConnectionFailedError(
            f"account {account.name!r}: {_where(account)} sent a malformed response during login",
            account=account.name,
        ) from None


def _auth_failed(account: Account, exc: LoginError) -> AuthenticationError:
    said = _server_text(exc)
    if account.auth.kind == "oauth2":
        sasl: _Sasl | None = getattr(exc, "sasl", None)
        detail = sasl.error_summary() if sasl else ""
        detail = f"; the server reported {detail}" if detail else ""
        return AuthenticationError(
            f"account {account.name!r}: {_where(account)} rejected the OAuth2 access token for "
            f"user {account.username!r}, twice (a fresh token was fetched for the second try): "
            f"{said}{detail}. Check that the token helper's account matches, that its refresh "
            "token is still valid (re-authorise it), and that the token has the mail scope "
            "(https://mail.google.com/ for Gmail, IMAP.AccessAsUser.All for Microsoft 365)",
            account=account.name,
        )
    return AuthenticationError(
        f"account {account.name!r}: {_where(account)} rejected the login of user "
        f"{account.username!r} ({account.auth.kind}): {said}. Check the user name and the "
        "password; many providers require an app password when two-factor authentication is on",
        account=account.name,
    )
