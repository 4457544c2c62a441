"""mailrules plugin: tell something outside the mailbox about a message.

Two actions:

``pipe: {command: [PROGRAM, ARG...], timeout: 10}``
    Runs PROGRAM (no shell) once per message, the whole message on its standard input.
    The environment is mailrules' own without the accounts' secrets (see
    `mailrules.secrets.child_environment`), plus MAILRULES_RULE, MAILRULES_ACCOUNT, MAILRULES_MAILBOX,
    MAILRULES_UID and MAILRULES_MESSAGE_ID. A non-zero exit status, or running longer
    than `timeout` seconds (the program and its children are then killed), fails the
    action: the message is retried on a later pass.

``webhook: {url: https://..., timeout: 5, headers: {Name: value}}``
    POSTs a JSON summary of each message to `url`: rule, account, mailbox, uid,
    message_id, from, to, subject, date. A status other than 2xx, a connection error
    or a timeout fails the action (retried later).

Both are at-least-once: after a failure or a crash in the middle of a batch, the batch
is handed over again, so a receiver may see a message twice. Both act outside the mailbox
(``effects="outside"``): offline (``mailrules test``, a rules file's ``tests:`` cases) they are
reported as "would run" and never called; ``run --dry-run`` never calls them either.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from mailrules import Action, ArgumentError, hookimpl, resolve_path
from mailrules.secrets import child_environment

__version__ = "0.1.0"

log = logging.getLogger("mailrules.notify")

# --------------------------------------------------------------------------- pipe

PIPE_SCHEMA = {
    "type": "object",
    "description": "{command: [PROGRAM, ARG...], timeout: SECONDS}",
    "properties": {
        "command": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    },
    "required": ["command"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class PipeArgs:
    command: tuple[str, ...]
    timeout: float

    def __str__(self) -> str:  # how logs and --dry-run show the argument
        return shlex.join(self.command)


def parse_pipe(raw: dict) -> PipeArgs:
    """After the schema: the program must exist now (a typo is a load-time error).

    A program given as a path (``scripts/store``, ``~/bin/store``) is relative to the rules
    file's directory; a bare name is looked up on PATH.
    """
    program = raw["command"][0]
    if "/" in program:
        program = str(resolve_path(program))
    if shutil.which(program) is None:
        raise ArgumentError(f"program {program!r} not found (give a path, or a program on PATH)", ("command", 0))
    return PipeArgs((program, *raw["command"][1:]), float(raw.get("timeout", 10)))


def run_pipe(context: Any, uids: Any, arg: PipeArgs) -> None:
    """Pipe each message to the command; raise on the first failure (the batch is retried)."""
    for message in context.messages(uids, ["message"]):
        env = child_environment()  # without the accounts' secrets
        env.update(
            MAILRULES_RULE=context.rule.name,
            MAILRULES_ACCOUNT=context.account,
            MAILRULES_MAILBOX=context.mailbox,
            MAILRULES_UID=str(message.uid),
            MAILRULES_MESSAGE_ID=message.message_id,
        )
        status, stderr = _run(list(arg.command), message.raw or b"", arg.timeout, env)
        if status is None:
            raise RuntimeError(f"{arg.command[0]} did not finish within {arg.timeout:g}s (killed)")
        if status != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-300:]
            raise RuntimeError(f"{arg.command[0]} exited with status {status}" + (f": {tail}" if tail else ""))


def _run(command: list[str], data: bytes, timeout: float, env: dict[str, str]) -> tuple[int | None, bytes]:
    """Run without a shell in a new session; on timeout kill it and its children. (status, stderr)."""
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, start_new_session=True,
    )
    try:
        _out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        return None, b""
    return proc.returncode, err or b""


# --------------------------------------------------------------------------- webhook

WEBHOOK_SCHEMA = {
    "type": "object",
    "description": "{url: https://..., timeout: SECONDS, headers: {Name: value}}",
    "properties": {
        "url": {"type": "string", "pattern": "^https?://[^\\s/]+"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["url"],
    "additionalProperties": False,
}

SUMMARY_HEADERS = ["header:From", "header:To", "header:Subject", "header:Date", "header:Message-ID"]


@dataclass(frozen=True)
class WebhookArgs:
    url: str
    timeout: float
    headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        """The URL without its query (it may hold a token): logs and --dry-run show this."""
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def parse_webhook(raw: dict) -> WebhookArgs:
    """https://user:password@host/... becomes Basic authentication (urllib does not do it itself)."""
    headers = dict(raw.get("headers", {}))
    parts = urllib.parse.urlsplit(raw["url"])
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ArgumentError(f"url: {exc}", ("url",)) from None
    url = raw["url"]
    if parts.username is not None or parts.password is not None:
        netloc = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers.setdefault("Authorization", f"Basic {token}")
    return WebhookArgs(url, float(raw.get("timeout", 5)), headers)


def summary(context: Any, message: Any) -> dict:
    """The JSON object POSTed for one message."""
    return {
        "rule": context.rule.name,
        "account": context.account,
        "mailbox": context.mailbox,
        "uid": message.uid,
        "message_id": message.message_id,
        "from": ", ".join(message.header("From")),
        "to": ", ".join(message.header("To")),
        "subject": message.subject,
        "date": ", ".join(message.header("Date")),
    }


def run_webhook(context: Any, uids: Any, arg: WebhookArgs) -> None:
    """POST one summary per message; raise on the first failure (the batch is retried)."""
    import urllib.error  # here, not at the top: every mailrules start loads this plugin
    import urllib.request

    for message in context.messages(uids, SUMMARY_HEADERS):
        body = json.dumps(summary(context, message)).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": f"mailrules-notify/{__version__}"}
        headers.update(arg.headers)
        request = urllib.request.Request(arg.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=arg.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{arg} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(f"{arg}: {reason}") from None


# --------------------------------------------------------------------------- the hooks


@hookimpl
def mailrules_actions():
    return [
        Action(
            "pipe",
            "run a command (no shell) with each message on its standard input",
            schema=PIPE_SCHEMA,
            parse=parse_pipe,
            run=run_pipe,
            effects="outside",  # a command: never run offline (mailrules test, tests: cases)
        ),
        Action(
            "webhook",
            "POST a JSON summary of each message (rule, from, subject, ...) to a URL",
            schema=WEBHOOK_SCHEMA,
            parse=parse_webhook,
            run=run_webhook,
            effects="outside",  # a web request: never run offline
        ),
    ]
