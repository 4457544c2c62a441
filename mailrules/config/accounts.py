"""The `accounts:` section: each account's server, TLS, login, secret source and daemon settings.

The secret sources (password_command, password_env, keyring, oauth2, password) are the ones
`mailrules.secrets.SECRET_SOURCES` lists; `SECRET_VALUES` reads each one's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yaml.nodes import Node, ScalarNode

from ..model import Account, Auth, Watching
from ..netutil import is_loopback
from ..secrets import SECRET_SOURCES
from .context import LoadState
from .errors import ConfigError
from .nodes import bool_of, expected_error, int_of, mapping_of, pairs_of, sendable, string_of, strings_of
from .reading import Doc
from .values import MAX_CONNECTIONS, MAX_TIMEOUT, normalize_mailbox, parse_duration

__all__ = ["ACCOUNT_KEYS", "SECRET_KEYS", "SECRET_VALUES", "TLS_MODES", "is_loopback", "read_accounts"]

SECRET_KEYS = tuple(SECRET_SOURCES)
ACCOUNT_KEYS = (
    "host",
    "port",
    "tls",
    "username",
    *SECRET_KEYS,
    "ca_file",
    "insecure",
    "watch",
    "timeout",
    "max_connections",
    "poll_interval",
    "idle_interval",
    "reconnect_max",
    "shared",  # shared mailboxes (mailrules.claims)
    "claim_timeout",
)
TLS_MODES = ("implicit", "starttls", "none")


def read_accounts(doc: Doc, node: Node, state: LoadState) -> dict[str, Account]:
    expected = "a mapping of account names to account settings"
    pairs = pairs_of(doc, node, "accounts", expected)
    if not pairs:
        raise doc.error(node, f"accounts: expected {expected}, found an empty mapping")
    accounts = {}
    for name, (key_node, value_node) in pairs.items():
        if ":" in name or not name.strip():
            raise doc.error(key_node, f"account name {name!r}: expected a non-empty name without ':'")
        try:
            accounts[name] = _account(doc, name, value_node, state)
        except ConfigError as exc:
            raise exc.within(f"account {name!r}") from None
    return accounts


def _account(doc: Doc, name: str, node: Node, state: LoadState) -> Account:
    pairs = mapping_of(doc, node, "", ACCOUNT_KEYS, required=("host", "username"))
    value = {key: v for key, (_, v) in pairs.items()}

    host = string_of(doc, value["host"], "host", "a host name such as imap.example.com")
    if "://" in host or " " in host.strip() or re.fullmatch(r"[^:\[\]]+:\d+", host):
        raise doc.error(
            value["host"],
            f"host: expected a bare host name such as imap.example.com (a port goes in port:), found {host!r}",
        )
    host = sendable(doc, value["host"], "host", host.strip())
    username = sendable(doc, value["username"], "username", string_of(doc, value["username"], "username",
                                                                   "the login name"))

    tls = "implicit"
    if "tls" in pairs:
        tls = string_of(doc, value["tls"], "tls", "one of implicit, starttls, none")
        if tls not in TLS_MODES:
            raise expected_error(doc, value["tls"], "tls", "one of implicit, starttls, none", hint=False)
    insecure = bool_of(doc, value["insecure"], "insecure") if "insecure" in pairs else False
    if tls == "none" and not insecure and not is_loopback(host):
        raise doc.error(
            value["tls"],
            f"tls: none would send the password unencrypted to {host!r}; it is allowed only for a loopback "
            "host (localhost, 127.0.0.0/8, ::1) or with 'insecure: true'",
        )

    port = 993 if tls == "implicit" else 143
    if "port" in pairs:
        port = int_of(doc, value["port"], "port", "a port number from 1 to 65535")
        if not 1 <= port <= 65535:
            raise expected_error(doc, value["port"], "port", "a port number from 1 to 65535", hint=False)

    ca_file = None
    if "ca_file" in pairs:
        text = string_of(doc, value["ca_file"], "ca_file", "the path of a PEM file of CA certificates")
        ca_path = (doc.path.parent / Path(text).expanduser()).absolute()
        if not ca_path.is_file():
            raise doc.error(value["ca_file"], f"ca_file: no such file {text!r} (looked for {ca_path})")
        ca_file = str(ca_path)

    watch: tuple[str, ...] = ("INBOX",)
    if "watch" in pairs:
        names = strings_of(
            doc, value["watch"], "watch", "a mailbox name or a list of them, such as [INBOX]"
        )
        watch = tuple(dict.fromkeys(normalize_mailbox(sendable(doc, n_node, "watch", n)) for n, n_node in names))

    timeout = 60.0
    if "timeout" in pairs:
        timeout = _timeout(doc, value["timeout"])
    daemon: dict[str, Any] = {}
    for key in ("poll_interval", "idle_interval", "reconnect_max", "claim_timeout"):  # claim_timeout: shared
        if key in pairs:
            daemon[key] = _timeout(doc, value[key], key)
    if "shared" in pairs:  # shared mailboxes (mailrules.claims)
        daemon["shared"] = bool_of(doc, value["shared"], "shared")
    if "max_connections" in pairs:
        daemon["max_connections"] = int_of(doc, value["max_connections"], "max_connections",
                                         "a number of connections, at least 1")
        if not 1 <= daemon["max_connections"] <= MAX_CONNECTIONS:
            raise expected_error(doc, value["max_connections"], "max_connections",
                            f"a number of connections, at least 1 and at most {MAX_CONNECTIONS}", hint=False)

    auth = _auth(doc, node, pairs, name, state)
    return Account(
        name=name,
        host=host,
        username=username,
        auth=auth,
        port=port,
        tls=tls,
        ca_file=ca_file,
        insecure=insecure,
        watch=watch,
        timeout=timeout,
        watching=Watching(**daemon),
        location=doc.loc(node),
    )


def _timeout(doc: Doc, node: Node, what: str = "timeout") -> float:
    """Seconds > 0 and at most 7 days: socket timeouts and poll() overflow beyond (.inf did, every run)."""
    expected = "a number of seconds greater than zero and at most 7 days, or a duration such as '90s'"
    raw = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(raw, str):
        try:
            seconds = float(parse_duration(raw))
        except ValueError:
            raise expected_error(doc, node, what, expected) from None
        if seconds <= MAX_TIMEOUT:
            return seconds
        raise expected_error(doc, node, what, expected, hint=False)
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 < raw <= MAX_TIMEOUT:
        return float(raw)
    raise expected_error(doc, node, what, expected, hint=False)


def _auth(doc: Doc, node: Node, pairs: dict[str, tuple[Node, Node]], name: str, state: LoadState) -> Auth:
    """Exactly one of the secret sources (`SECRET_SOURCES`): password_command, password_env, ..."""
    given = [key for key in SECRET_KEYS if key in pairs]
    written = [source.written for source in SECRET_SOURCES.values()]
    choices = f"{', '.join(written[:-1])} or {written[-1]}"
    if not given:
        raise doc.error(node, f"no way to obtain the password: give exactly one of {choices}")
    if len(given) > 1:
        second = min((pairs[k][0] for k in given[1:]), key=lambda n: (n.start_mark.line, n.start_mark.column))
        raise doc.error(second, f"both {given[0]} and {given[1]} are given: give exactly one of {choices}")
    kind = given[0]
    value_node = pairs[kind][1]
    value = SECRET_VALUES[kind](doc, value_node, choices)
    if kind == "password":
        state.warn(
            f"{doc.loc(value_node)}: account {name!r}: the password is written in the rules file; "
            "prefer password_command, password_env, keyring or oauth2"
        )
        _warn_if_readable(doc, state)
    return Auth(kind, value)


_COMMAND_FORM = "a command: a string, or a list of program and arguments"


def _command_value(doc: Doc, node: Node, what: str) -> str | list[str]:
    """A command as written: a string (split later with shlex), or a list of program and arguments."""
    commands = strings_of(doc, node, what, _COMMAND_FORM)
    return commands[0][0] if isinstance(node, ScalarNode) else [c for c, _ in commands]


def _password_command(doc: Doc, node: Node, choices: str) -> Any:
    return _command_value(doc, node, "password_command")


def _password_env(doc: Doc, node: Node, choices: str) -> Any:
    value = string_of(doc, node, "password_env", "the name of an environment variable")
    if not re.fullmatch(r"[^=\s]+", value):
        raise expected_error(doc, node, "password_env", "the name of an environment variable")
    return value


def _keyring(doc: Doc, node: Node, choices: str) -> Any:
    if not bool_of(doc, node, "keyring"):
        raise doc.error(node, f"keyring: false is not a way to obtain the password: give one of {choices}")
    return True


def _oauth2(doc: Doc, node: Node, choices: str) -> Any:
    oauth = mapping_of(doc, node, "oauth2", ("token_command",), required=("token_command",))
    return {"token_command": _command_value(doc, oauth["token_command"][1], "token_command")}


def _password(doc: Doc, node: Node, choices: str) -> Any:
    return string_of(doc, node, "password", "the password", empty_ok=True)


SECRET_VALUES: dict[str, Callable[[Doc, Node, str], Any]] = {
    "password_command": _password_command,
    "password_env": _password_env,
    "keyring": _keyring,
    "oauth2": _oauth2,
    "password": _password,
}
"""How each secret source's value is read from the rules file: (doc, value node, the choices
for messages) -> the value `mailrules.secrets` takes. A test checks it covers `SECRET_SOURCES`."""


def _warn_if_readable(doc: Doc, state: LoadState) -> None:
    try:
        mode = doc.path.stat().st_mode
    except OSError:
        return
    if os.name == "posix" and mode & 0o044:
        state.warn(
            f"{doc.display}: holds a password and is readable by group or others "
            f"(mode {mode & 0o777:04o}): chmod 600 {doc.display}"
        )

