"""Obtaining an account's secret (password or OAuth2 access token).

`get_secret(account)` reads the secret from the one source the account names:

========================  ===============================================================
``password_command``      a program (a string split with `shlex`, or a list), run without
                          a shell, stdin from /dev/null, for at most 30 s; its standard
                          output, less one trailing newline, is the password. Its error
                          output is captured and never shown (it might hold the secret).
``password_env``          the named environment variable.
``keyring: true``         the system keyring through the `keyring` library: service
                          ``"mailrules"``, entry (user name) = the account's name in the
                          rules file. ``mailrules login ACCOUNT`` stores it
                          (`login_command`); ``keyring set mailrules ACCOUNT`` works too.
``oauth2``                ``{token_command: ...}``: a program run like ``password_command``
                          that prints a current access token (e.g. oama, mutt_oauth2.py).
                          It is run afresh on every connect.
``password``              inline in the rules file (allowed; the loader warns about it).
========================  ===============================================================

The result is a `Secret`, which never shows its value in ``repr``, ``str``, f-strings,
exception messages or pickles; only `Secret.reveal()` returns it. Errors are `SecretError`
and never contain the secret or a command's output.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn

from .model import Account

__all__ = [
    "COMMAND_TIMEOUT",
    "KEYRING_SERVICE",
    "SECRET_SOURCES",
    "Secret",
    "SecretError",
    "SecretSource",
    "get_secret",
    "keyring_entry",
    "child_environment",
    "known_secrets",
    "login_command",
    "protect_accounts",
    "redact_secrets",
    "register_secret",
    "register_secret_variable",
    "run_secret_command",
    "secret_forms",
    "store_password_in_keyring",
]

KEYRING_SERVICE = "mailrules"
"""The keyring service name under which passwords are stored (entry = account name)."""

COMMAND_TIMEOUT = 30.0
"""Seconds a password_command or token_command may run."""

_MIN_SCRUB_LENGTH = 4  # shorter values would blank out ordinary words in log lines


class SecretError(Exception):
    """The secret for an account could not be obtained. The message says why and what to do."""


class Secret:
    """A secret string that does not reveal itself by accident.

    ``repr(s)``, ``str(s)`` and ``f"{s}"`` give ``Secret('***')``; pickling is refused.
    Call `reveal()` at the one place the value is needed.
    """

    __slots__ = ("__value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret() takes a str")
        self.__value = value

    def reveal(self) -> str:
        """The secret itself. Use it once, for the protocol exchange; never log it."""
        return self.__value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self.__value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.__value.encode(), other.reveal().encode())

    def __hash__(self) -> int:
        return hash((Secret, self.__value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


# --------------------------------------------------------------------------- redaction registry

_known_lock = threading.Lock()
_known: dict[str, list[str]] = {}  # account name -> the last few secrets handed out for it
_KEEP_PER_ACCOUNT = 4


def _remember(account: Account, secret: Secret) -> Secret:
    """Note a secret just handed out, so that log redaction can scrub it everywhere."""
    _remember_value(f"account:{account.name}", secret.reveal())
    return secret


def known_secrets() -> tuple[str, ...]:
    """The secrets handed out so far (the last few per account), longest first.

    Used by `mailrules.connect`'s log filter to scrub them from any log line.
    """
    with _known_lock:
        values = {v for recent in _known.values() for v in recent}
    return tuple(sorted(values, key=len, reverse=True))


def register_secret(value: str | Secret) -> None:
    """Treat `value` as a secret from now on: redacted in every form, kept out of child environments.

    For values built from a secret that are sent or shown whole, such as a SASL initial
    response (whose base64 a protocol log would otherwise show), or for a plugin's own token.
    """
    _remember_value("", value.reveal() if isinstance(value, Secret) else value, keep=16)


def _remember_value(key: str, value: str, *, keep: int = _KEEP_PER_ACCOUNT) -> None:
    if len(value) >= _MIN_SCRUB_LENGTH:
        with _known_lock:
            recent = [v for v in _known.get(key, []) if v != value]
            _known[key] = (recent + [value])[-keep:]


_forms_cache: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def secret_forms() -> tuple[str, ...]:
    """Every text form in which a known secret can appear in a log line, an error or a traceback.

    Longest first. For each secret: itself; its ``repr()``/``ascii()``/JSON escapes (control
    bytes, quotes, non-ASCII); the ``repr()`` of its UTF-8 bytes (``b'p\\xc3\\xa4ss'``, as
    imaplib reports a server's reply); its UTF-8 bytes mis-decoded as Latin-1 or cp1252 (a
    server's echo decoded the wrong way) and the reverse; its base64 (SASL PLAIN, XOAUTH2 and
    OAUTHBEARER initial responses are registered whole, see `register_secret`); its URL
    encodings. Parts of a secret are not covered.
    """
    global _forms_cache
    secrets = known_secrets()
    cached_for, forms = _forms_cache
    if cached_for == secrets:
        return forms
    found: set[str] = set()
    for value in secrets:
        found |= _forms_of(value)
    forms = tuple(sorted((f for f in found if len(f) >= _MIN_SCRUB_LENGTH), key=len, reverse=True))
    _forms_cache = (secrets, forms)
    return forms


def _forms_of(value: str) -> set[str]:
    import base64
    import json
    import urllib.parse

    raw = value.encode("utf-8", "surrogateescape")
    texts = {value, raw.decode("latin-1"), raw.decode("cp1252", "replace"), raw.decode("utf-8", "replace")}
    try:
        latin = value.encode("latin-1")
    except UnicodeEncodeError:
        pass
    else:  # a Latin-1 echo read as UTF-8
        texts |= {latin.decode("utf-8", "replace"), latin.decode("utf-8", "backslashreplace")}
    forms: set[str] = set()
    for text in texts:
        forms |= {text, repr(text)[1:-1], ascii(text)[1:-1], json.dumps(text)[1:-1],
                  json.dumps(text, ensure_ascii=False)[1:-1], repr(repr(text)[1:-1])[1:-1]}
    for data in {raw, value.encode("latin-1", "replace")}:
        forms |= {repr(data)[2:-1], data.decode("ascii", "backslashreplace")}
    encoded = base64.b64encode(raw).decode("ascii")
    forms |= {encoded, encoded.rstrip("="), base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")}
    forms |= {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), urllib.parse.quote(value)}
    return forms


def redact_secrets(text: str, replacement: str = "***") -> str:
    """`text` with every known secret, in every form of `secret_forms()`, replaced."""
    for form in secret_forms():
        if form in text:
            text = text.replace(form, replacement)
    return text


# --------------------------------------------------------------------------- child processes

_secret_variables: set[str] = set()


def register_secret_variable(name: str) -> None:
    """Keep the environment variable `name` out of `child_environment()` (it holds a secret)."""
    if isinstance(name, str) and name:
        with _known_lock:
            _secret_variables.add(name)


def protect_accounts(accounts: Iterable[Account]) -> None:
    """Register the ``password_env`` variable of every account (the Engine does this at start)."""
    for account in accounts:
        if account.auth.kind == "password_env":
            register_secret_variable(account.auth.value)


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default: ``os.environ``) fit for a child process that is not trusted with secrets.

    Leaves out every variable named by an account's ``password_env`` (see `protect_accounts`)
    or by `register_secret_variable`, and every variable whose value is, or contains, a
    secret handed out so far (`known_secrets`, `register_secret`). Plugins that start
    programs should pass ``env=child_environment()`` (plus their own variables).
    """
    environ = os.environ if base is None else base
    with _known_lock:
        names = set(_secret_variables)
    values = known_secrets()
    return {k: v for k, v in environ.items()
            if k not in names and not any(secret in v for secret in values)}


# --------------------------------------------------------------------------- sources


def _argv(command: Any, what: str, account: Account) -> list[str]:
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise SecretError(
                f"account {account.name!r}: {what} cannot be split into arguments ({exc}); "
                "check its quotes, or write it as a list"
            ) from None
    elif isinstance(command, Sequence) and all(isinstance(a, str | int | float) for a in command):
        argv = [str(a) for a in command]
    else:
        raise SecretError(f"account {account.name!r}: {what} must be a string or a list of strings")
    if not argv:
        raise SecretError(f"account {account.name!r}: {what} is empty")
    return argv


def run_secret_command(
    command: str | Sequence[str], account: Account, *, what: str = "password_command",
    timeout: float = COMMAND_TIMEOUT,
) -> Secret:
    """Run a password/token command (no shell) and return its output as a `Secret`.

    The command's standard output, less one trailing newline, is the secret. Its error
    output is captured and discarded: errors report only the exit status, since a failing
    helper may print the secret (or parts of it) there. The program gets no standard input.
    """
    argv = _argv(command, what, account)
    program = argv[0]
    where = f"account {account.name!r}: {what} ({program})"
    try:
        # Own process group, so that a timeout also stops the helper's children (which
        # would otherwise keep the pipes open and make us wait for them).
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_environment(),  # not the other accounts' password_env variables
            process_group=0,
        )
    except FileNotFoundError:
        raise SecretError(f"{where}: program not found; check the command and PATH") from None
    except PermissionError:
        # exec*p reports EACCES, not ENOENT, for a program found nowhere when a directory of
        # PATH could not be searched (a non-root user with /root/... on PATH): say which
        if "/" not in program and shutil.which(program) is None:
            raise SecretError(f"{where}: program not found; check the command and PATH") from None
        raise SecretError(f"{where}: program is not executable") from None
    except OSError as exc:
        raise SecretError(f"{where} could not be started: {exc.strerror or exc or 'no details'}") from None
    try:
        stdout, _stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        # `from None`: TimeoutExpired may carry partial output, which may be the secret.
        raise SecretError(
            f"{where} did not finish within {timeout:g} s and was stopped; does it wait for "
            "input (a passphrase prompt, an unlocked agent, a browser login)?"
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    del _stderr  # never shown: it may contain the secret
    done = subprocess.CompletedProcess(argv, proc.returncode, stdout, b"")
    if done.returncode != 0:
        status = (f"was killed by signal {-done.returncode}" if done.returncode < 0
                  else f"failed with exit status {done.returncode}")
        raise SecretError(
            f"{where} {status}; its error output is not shown because it may contain the "
            "secret: run the command yourself to see it"
        )
    try:
        text = done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{where} printed something that is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretError(f"{where} succeeded but printed nothing")
    if "\n" in text or "\r" in text:
        raise SecretError(
            f"{where} printed more than one line; it must print only the secret. For `pass`, "
            "whose entries may hold more lines, use: [sh, -c, 'pass show NAME | head -n 1']"
        )
    return Secret(text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a helper and everything it started; reap it without waiting on its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    proc.wait()


def _from_env(name: Any, account: Account) -> Secret:
    if not isinstance(name, str) or not name:
        raise SecretError(f"account {account.name!r}: password_env must name an environment variable")
    register_secret_variable(name)
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"account {account.name!r}: environment variable {name} is not set")
    if value == "":
        raise SecretError(f"account {account.name!r}: environment variable {name} is empty")
    return Secret(value)


def keyring_entry(account: Account) -> tuple[str, str]:
    """The (service, user name) under which `account`'s password is kept in the keyring."""
    return KEYRING_SERVICE, account.name


def _keyring_module() -> Any:
    try:
        import keyring
    except ImportError:  # pragma: no cover - keyring is a declared dependency
        raise SecretError("the 'keyring' package is not installed (pip install keyring)") from None
    return keyring


def _from_keyring(account: Account) -> Secret:
    keyring = _keyring_module()
    service, entry = keyring_entry(account)
    try:
        value = keyring.get_password(service, entry)
    except Exception as exc:  # keyring.errors.KeyringError and backend-specific errors
        raise SecretError(
            f"account {account.name!r}: the system keyring could not be read "
            f"({exc or 'no details from the keyring backend'}); is a keyring backend installed and unlocked? "
            "(see `keyring --list-backends`)"
        ) from None
    if value is None:
        raise SecretError(
            f"account {account.name!r}: no password in the keyring (service {service!r}, "
            f"entry {entry!r}); store it with: mailrules login {account.name}"
        )
    return Secret(value)


def _from_oauth2(value: Any, account: Account) -> Secret:
    if not isinstance(value, dict) or "token_command" not in value:
        raise SecretError(f"account {account.name!r}: oauth2 needs {{token_command: ...}}")
    return run_secret_command(value["token_command"], account, what="oauth2 token_command")


def _from_command(value: Any, account: Account) -> Secret:
    return run_secret_command(value, account)


def _from_keyring_source(value: Any, account: Account) -> Secret:
    return _from_keyring(account)


def _from_inline(value: Any, account: Account) -> Secret:
    if not isinstance(value, str) or not value:
        raise SecretError(f"account {account.name!r}: password must be a non-empty string")
    return Secret(value)


@dataclass(frozen=True)
class SecretSource:
    """One way an account names its secret: the account key, and how the secret is obtained."""

    key: str
    """The account's key in the rules file (``password_command``...): exactly one is given."""
    written: str
    """How it is written, for messages that list the choices (``keyring: true``)."""
    fetch: Callable[[Any, Account], Secret]
    """(the key's value as loaded, the account) -> the secret; raises SecretError."""
    runs_something: bool = False
    """Whether `fetch` runs a program or asks a keyring (that may prompt): `run --once` opens its
    first connection before the whole rules file is validated only for the others."""


SECRET_SOURCES: dict[str, SecretSource] = {
    source.key: source
    for source in (
        SecretSource("password_command", "password_command", _from_command, runs_something=True),
        SecretSource("password_env", "password_env", _from_env),
        SecretSource("keyring", "keyring: true", _from_keyring_source, runs_something=True),
        SecretSource("oauth2", "oauth2: {token_command: ...}", _from_oauth2, runs_something=True),
        SecretSource("password", "password", _from_inline),
    )
}
"""The secret sources, in the order the reference lists them. The loader (`mailrules.config`)
takes the account keys from here and `get_secret` the way to obtain each: one table, so that
a source cannot be accepted by one and unknown to the other."""


def get_secret(account: Account) -> Secret:
    """The password (or, for ``oauth2``, a fresh access token) for `account`.

    Raises `SecretError` with a message that names the account and the source and never
    contains the secret.
    """
    kind, value = account.auth.kind, account.auth.value
    source = SECRET_SOURCES.get(kind)
    if source is None:
        raise SecretError(f"account {account.name!r}: unknown kind of secret {kind!r}")
    return _remember(account, source.fetch(value, account))


# --------------------------------------------------------------------------- keyring login


def store_password_in_keyring(account: Account, password: str | Secret) -> None:
    """Store `password` in the system keyring for `account` (see `keyring_entry`)."""
    value = password.reveal() if isinstance(password, Secret) else password
    if not value:
        raise SecretError("an empty password was not stored")
    keyring = _keyring_module()
    service, entry = keyring_entry(account)
    try:
        keyring.set_password(service, entry, value)
    except Exception as exc:
        raise SecretError(
            f"account {account.name!r}: the password could not be stored in the system keyring "
            f"({exc or 'no details from the keyring backend'}); is a keyring backend installed and unlocked? "
            "(see `keyring --list-backends`)"
        ) from None


def _keyring_unusable(account: Account) -> str | None:
    """Why the system keyring cannot hold `account`'s password, or None if it can be used.

    The backend is asked for the entry (read only): with no backend installed, keyring's
    fallback raises at once; a locked or broken backend fails the same way.
    """
    try:
        keyring = _keyring_module()
    except SecretError as exc:
        return str(exc)
    try:
        backend = keyring.get_keyring()
        if getattr(backend, "backends", None) == []:  # keyring's chainer, with nothing to chain
            raise RuntimeError("no keyring backend is installed")
        keyring.get_password(*keyring_entry(account))
    except Exception as exc:  # noqa: BLE001 - keyring.errors.NoKeyringError and backend errors
        return (f"the system keyring cannot be used ({exc or 'no details from the keyring backend'}); install and unlock "
                "a keyring backend (see `keyring --list-backends`), or use 'password_command:' or "
                "'password_env:' for this account")
    return None


def login_command(
    account: Account,
    *,
    prompt: Callable[[str], str] | None = None,
    out: IO[str] | None = None,
) -> int:
    """``mailrules login ACCOUNT``: ask for the password (twice) and store it in the keyring.

    Returns the exit code: 0 stored, 1 the keyring failed, 2 the account does not use the
    keyring or the passwords were empty or differed.
    """
    out = out if out is not None else sys.stderr
    if prompt is None:
        import getpass  # here: its termios costs ~2 ms of every start otherwise

        prompt = getpass.getpass
    if account.auth.kind != "keyring":
        print(
            f"mailrules login: account {account.name!r} takes its secret from "
            f"{account.auth.kind}, not the keyring; set 'keyring: true' for it in the rules "
            "file (and remove the other secret) to use `mailrules login`",
            file=out,
        )
        return 2
    problem = _keyring_unusable(account)
    if problem:  # before asking: a password typed for nothing is worse than no question
        print(f"mailrules login: {problem}; nothing was asked and nothing stored", file=out)
        return 1
    try:
        first = prompt(f"Password for {account.username} on {account.host} (account {account.name}): ")
        second = prompt("Again, to confirm: ")
    except (EOFError, KeyboardInterrupt):
        print("\nmailrules login: cancelled, nothing stored", file=out)
        return 2
    if not first:
        print("mailrules login: empty password, nothing stored", file=out)
        return 2
    if not hmac.compare_digest(first.encode(), second.encode()):
        print("mailrules login: the two passwords differ, nothing stored", file=out)
        return 2
    try:
        store_password_in_keyring(account, Secret(first))
    except SecretError as exc:
        print(f"mailrules login: {exc}", file=out)
        return 1
    service, entry = keyring_entry(account)
    print(
        f"Stored the password for account {account.name!r} in the system keyring "
        f"(service {service!r}, entry {entry!r}).",
        file=out,
    )
    return 0
