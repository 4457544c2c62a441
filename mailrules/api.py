"""The plugin API: what a plugin module implements and returns (re-exported by `mailrules`).

- `hookimpl`: the decorator of a plugin's hook functions (`mailrules.hookspecs`);
- `Predicate`: a client-side test a rule names in ``where:``;
- `Action`: something a rule does, named in ``actions:``. The built-in actions
  (`mailrules.actions`) are `Action` objects too, registered through the same hook;
- `ActionContext`: what an action's ``run(context, uids, arg)`` receives (a protocol: the
  IMAP engine and the in-memory mailbox (`mailrules.memory`) each implement it);
- `ArgumentError`, `PluginError`, `ActionEvent`.

Both `Predicate` and `Action` validate their arguments when the rules file is loaded
(`Predicate.validate`, `Action.validate`): with a JSON Schema (``schema=``, checked by the
`jsonschema` library), a ``parse=`` function, or both (schema first, then parse). A bad
argument raises `ArgumentError` (a ValueError), which the loader reports with file, line
and column.

This module imports nothing of the engine: the registry (`mailrules.plugins`), the
built-ins and the engine all build on it. The guide is ``docs/plugins.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from .criteria import fetchable_header_name
from .uidset import UidSet

log = logging.getLogger("mailrules.actions")

if TYPE_CHECKING:
    from .message import MessageView

hookimpl = pluggy.HookimplMarker("mailrules")

__all__ = [
    "NEEDS",
    "Action",
    "ActionContext",
    "ActionEvent",
    "ArgumentError",
    "PluginError",
    "Predicate",
    "hookimpl",
    "resolve_path",
]

NEEDS = ("headers", "body", "message", "size", "flags", "arrival")
"""The message parts a predicate may need, besides ``"header:Name"`` (one header field)."""

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
DELIVERY = ("at-least-once", "at-most-once")
EFFECTS = ("mailbox", "outside")
"""What an action does (`Action.effects`): "mailbox" (it changes the mailbox through the context
only, so offline runs carry it out in memory) or "outside" (anything else: a command, a web
request, a file, another service; offline runs report it as "would run" and never call it)."""


class PluginError(Exception):
    """A plugin is broken (fails to import, returns something invalid) or two plugins clash."""


class ArgumentError(ValueError):
    """A rule gave a predicate or action a bad argument (a load-time error).

    `path` locates the bad part inside the argument (mapping keys and list indexes), so
    that the loader can point at its line: ``ArgumentError("expected a number", ("min_score",))``.
    """

    def __init__(self, message: str, path: Iterable[str | int] = (), *, at_key: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)
        self.at_key = at_key  # the last step of `path` names a mapping key that is itself wrong


# --------------------------------------------------------------------------- paths in arguments

_RULES_DIRECTORY: contextvars.ContextVar[Path | None] = contextvars.ContextVar("mailrules_rules_directory",
                                                                               default=None)


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A path written in a rules file, as the rules file means it: ``~`` expanded, and a
    relative path taken relative to the directory of the file that wrote it (as ``include:``,
    ``ca_file:`` and a test's ``file:`` are), not to the current directory.

    Call it from a `parse` function: the loader says which file is being read while it
    validates an argument. Outside loading (a plugin's own tests calling `parse` directly) a
    relative path is relative to the current directory.
    """
    result = Path(path).expanduser()
    base = _RULES_DIRECTORY.get()
    if not result.is_absolute() and base is not None:
        result = base / result
    return result


@contextlib.contextmanager
def rules_directory(directory: Path) -> Iterator[None]:
    """Within the block, `resolve_path` resolves relative paths against `directory` (the loader's)."""
    token = _RULES_DIRECTORY.set(directory)
    try:
        yield
    finally:
        _RULES_DIRECTORY.reset(token)


# --------------------------------------------------------------------------- validation


def _summary(description: str) -> str:
    """The first line of a description."""
    text = (description or "").strip()
    return text.splitlines()[0].strip() if text else ""


def compile_schema(schema: Mapping[str, Any], what: str) -> Any:
    """A jsonschema validator for `schema` (the draft named by $schema, else 2020-12)."""
    import jsonschema
    from jsonschema.validators import validator_for

    if not isinstance(schema, Mapping):
        raise PluginError(f"{what}: schema must be a JSON Schema mapping, not {type(schema).__name__}")
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PluginError(f"{what}: invalid JSON Schema: {exc.message}") from None
    return cls(schema)


def _schema_error(validator: Any, raw: Any) -> ArgumentError | None:
    """The most relevant schema violation of `raw`, as an ArgumentError (None if valid)."""
    from jsonschema.exceptions import best_match

    errors = list(validator.iter_errors(raw))
    if not errors:
        return None
    # An unknown key is most often a misspelt known one: say so before "'x' is required".
    unknown = [e for e in errors if e.validator == "additionalProperties"]
    error = max(unknown, key=lambda e: len(e.absolute_path)) if unknown else best_match(errors)
    path = tuple(error.absolute_path)
    message = error.message
    at_key: tuple = ()
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            known = ", ".join(map(str, allowed)) or "none"
            import difflib  # only for a misspelt key: ~2 ms of every start otherwise

            close = difflib.get_close_matches(str(extra[0]), [str(k) for k in allowed], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key {extra[0]!r} (expected: {known}){hint}"
            at_key = (extra[0],)
    elif error.validator == "type" and raw is None and not path:
        message = f"an argument is required ({_describe_schema(error.schema)})"
    where = ".".join(str(p) for p in path)
    return ArgumentError(f"{where}: {message}" if where else message, (*path, *at_key), at_key=bool(at_key))


def _describe_schema(schema: Any) -> str:
    if isinstance(schema, Mapping) and schema.get("description"):
        return str(schema["description"])
    if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
        return "a mapping with keys: " + ", ".join(schema["properties"])
    return f"expected {schema.get('type', 'a value')}" if isinstance(schema, Mapping) else "see the plugin's docs"


def _run_parse(parse: Callable[[Any], Any], raw: Any) -> Any:
    try:
        return parse(raw)
    except ValueError:
        raise
    except (TypeError, KeyError, IndexError, AttributeError) as exc:
        # the validator assumed another shape of argument: still the user's argument that is wrong
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ArgumentError(f"invalid argument {raw!r}: {detail}") from None


def check_needs(needs: Iterable[str], what: str) -> frozenset[str]:
    """Validate and normalise a needs list ('body' fetches the whole message)."""
    if isinstance(needs, str):
        needs = (needs,)
    out: set[str] = set()
    for need in needs:
        if not isinstance(need, str):
            raise PluginError(f"{what}: needs must be strings, got {need!r}")
        if need.lower().startswith("header:"):
            name = need.split(":", 1)[1].strip()
            if not fetchable_header_name(name):
                raise PluginError(f"{what}: needs {need!r}: not a header field name")
            out.add(f"header:{name}")
        elif need in NEEDS:
            out.add("message" if need == "body" else need)
        else:
            raise PluginError(
                f"{what}: unknown need {need!r} (expected 'header:Name', {', '.join(map(repr, NEEDS))})"
            )
    return frozenset(out)


# --------------------------------------------------------------------------- predicates and actions


@dataclass(frozen=True)
class Predicate:
    """A client-side test a rule names in ``where:`` as ``{name: arguments}`` (or a bare name).

    name
        What rules write. Letters, digits, ``_`` and ``-``; unique across all plugins.
    test(message, args) -> bool
        `message` is a `mailrules.message.MessageView` holding the parts named by `needs`,
        parsed lazily (stdlib `email`, modern policy); `args` is what validation returned.
        Called in a worker thread with a time limit (`timeout` seconds); raising or
        running out of time means "could not decide": the rule does not act on that
        message, the error is logged with plugin, rule and UID, and the message is
        retried on a later pass (up to 5 attempts, then given up and reported).
    description
        Shown by ``mailrules plugins`` (first line) and in the docs.
    schema
        A JSON Schema (a dict) the raw YAML argument must satisfy; a bare ``- name`` in
        ``where:`` gives the argument None (JSON null). Checked by `jsonschema`.
    parse(raw) -> args
        Validates/converts the raw argument (after `schema`, if both are given). Raise
        ValueError (or `ArgumentError` with a `path`) saying what was expected. Without
        `parse`, args is the raw (schema-checked) value.
    needs
        The message parts `test` reads, as an iterable, or a function(args) -> iterable:
        ``"header:Name"`` (that header field; repeat for several), ``"headers"`` (the
        whole header), ``"body"`` (the decoded text: fetches the whole message, which MIME
        decoding needs), ``"message"`` (the whole RFC 822 message, `MessageView.raw`),
        ``"size"`` (`MessageView.size`), ``"flags"`` (`MessageView.flags`), ``"arrival"``
        (`MessageView.arrived`, INTERNALDATE). The engine
        fetches the union of what a rule's predicates need once per batch of messages.
        A part that was not declared is missing: a body never fetched reads as empty.
    timeout
        Seconds `test` may take per message (default 10).
    prefilter
        Optional function(args) -> criteria tree (`mailrules.model`) or None: a condition
        that every message the predicate accepts is sure to meet, which the server can
        check. The engine adds it to the rule's one UID SEARCH (on servers whose
        substring search follows RFC 3501) so that fewer messages are fetched. The
        predicate still decides; a prefilter only saves work.
    """

    name: str
    test: Callable[[Any, Any], bool]
    description: str = ""
    parse: Callable[[Any], Any] | None = None
    needs: Iterable[str] | Callable[[Any], Iterable[str]] = ("message",)
    timeout: float = 10.0
    schema: Mapping[str, Any] | None = None
    prefilter: Callable[[Any], Any] | None = None
    plugin: str = ""
    _validator: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def summary(self) -> str:
        return _summary(self.description)

    @property
    def runs_offline(self) -> bool:
        """Whether offline runs carry the action out (in memory): only mailbox-only actions."""
        return self.effects == "mailbox"

    def validate(self, raw: Any) -> Any:
        """The checked arguments of a rule's raw YAML argument; raises ArgumentError (ValueError)."""
        _check_schema(self, raw, "predicate")
        args = _run_parse(self.parse, raw) if self.parse is not None else raw
        try:
            self.needs_for(args)
        except PluginError as exc:
            raise ValueError(f"plugin bug: {exc}") from None
        return args

    def needs_for(self, args: Any) -> frozenset[str]:
        """The normalised set of parts to fetch for these arguments ('body' becomes 'message')."""
        needs = self.needs(args) if callable(self.needs) else self.needs
        return check_needs(needs, f"predicate {self.name!r}")


def _no_argument(value: Any) -> Any:
    if value is not None:
        raise ValueError("takes no argument (write it as a bare word)")
    return None


@dataclass(frozen=True)
class Action:
    """Something a rule does to the messages it matched, named in ``actions:``.

    name
        What rules write: a bare word (``- learn_spam``) or ``{name: argument}``.
    description
        Shown by ``mailrules plugins`` (first line).
    schema / parse
        Validate the raw argument at load time, exactly as for `Predicate` (schema first,
        then parse). With neither, the action takes no argument (bare word only).
    run(context, uids, arg)
        Carries the action out on a batch: `context` is an `ActionContext` (account,
        mailbox, rule, dry_run, the messages' parts, arrival dates, flags and keywords,
        setting and clearing flags and keywords, copy/move), `uids` a
        `mailrules.uidset.UidSet` of the selected mailbox, `arg` the validated argument.
        Return normally when done for the whole batch; raise to fail it: the failure is
        logged and every message of the batch is retried from this action on a later pass
        (later rules wait for it). Never called in ``--dry-run``. The engine logs each
        applied action per message, like a built-in one.
    delivery
        What a crash in the middle of `run` leads to on resume: ``"at-least-once"`` (run
        again for the batch: make the action idempotent or harmless to repeat) or
        ``"at-most-once"`` (not run again; the messages go on to the next action).
    terminal
        True if the action removes the messages from the mailbox (nothing may follow it):
        the messages leave play, no later rule sees them.
    effects
        ``"outside"`` (the default, the safe one) or ``"mailbox"``. An action whose `run`
        only changes the mailbox through the context (flags, keywords, copy, move) says
        ``"mailbox"``: offline runs (``mailrules test``, a rules file's ``tests:`` cases,
        anything built on `mailrules.memory`) carry it out in memory. Every other action, and every action that does
        not say, is never called offline: it is reported as "would run".

    The methods below are what the engine asks of every action. A plugin's action keeps
    their defaults; the built-in actions (`mailrules.actions`) override them, each in its
    own module: adding a built-in action is one new subclass in one file.
    """

    name: str
    description: str = ""
    parse: Callable[[Any], Any] | None = None
    run: Callable[..., Any] | None = None
    terminal: bool = False
    delivery: str = "at-least-once"
    builtin: bool = False
    schema: Mapping[str, Any] | None = None
    plugin: str = ""
    # In a scheduled sweep, act on a message at most once per rule (journaled in the state):
    # what cannot be repeated harmlessly on every sweep. Idempotent flag changes say False.
    once_per_rule: bool = True
    effects: str = "outside"  # see EFFECTS: an action that says nothing never runs offline
    _validator: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def summary(self) -> str:
        return _summary(self.description)

    @property
    def runs_offline(self) -> bool:
        """Whether offline runs carry the action out (in memory): only mailbox-only actions."""
        return self.effects == "mailbox"

    def validate(self, raw: Any) -> Any:
        """The checked argument of a rule's raw YAML argument; raises ArgumentError (ValueError)."""
        if self.schema is not None:
            _check_schema(self, raw, "action")
            return _run_parse(self.parse, raw) if self.parse is not None else raw
        return _run_parse(self.parse or _no_argument, raw)

    # ------------------------------------------------------------------ what the engine asks

    def describe(self, arg: Any) -> str:
        """The argument as the dry run and the action log print it after the name ("" for none)."""
        if arg is None:
            return ""
        if isinstance(arg, tuple):
            return " ".join(str(a) for a in arg)
        return str(arg)

    def outcome(self) -> str:
        """What the action does to a message, as offline summaries (`mailrules test`, the demo)
        tell it: "moved" (to another folder), "copied", "flags", "keywords" or "deleted"; any
        other action: its name. So that no module outside the actions names one.
        """
        return self.name

    def flag_changes(self, arg: Any) -> tuple[frozenset[str], frozenset[str]]:
        """The system flags and keywords this action sets and clears on a message: (added,
        removed). A dry run (`mailrules.kernel.run_pass`) carries nothing out, so it asks this
        to let later rules' criteria on flags see what the real run would have set. The
        default: none (a plugin action is taken to change no flag)."""
        return frozenset(), frozenset()

    def destinations(self, arg: Any) -> tuple[Any, ...]:
        """The folders (`mailrules.model.FolderRef`) this action puts messages in.

        The engine never processes them there again (loop prevention), lists them in its
        pass's opening, and ``check --connect`` checks that they can exist.
        """
        return ()

    def requires(self, arg: Any) -> frozenset[str]:
        """What the mailbox must allow, checked by ``check --connect``: "keywords", "trash"."""
        return frozenset()

    def has_executor(self) -> bool:
        """Whether the engine can carry the action out (a plugin's needs `run`)."""
        return callable(self.run) or type(self).perform is not Action.perform

    def perform(self, context: ActionContext, uids: UidSet, arg: Any) -> None:
        """Carry the action out through the narrow `ActionContext` (a plugin's `run`).

        The in-memory mailbox (`mailrules.memory`) runs every action this way; on IMAP the
        built-ins override `execute` with their batched, verified commands.
        """
        if not callable(self.run):
            raise ActionFailed(f"action {self.name!r} is not available (is its plugin installed?)")
        self.run(context, uids, arg)

    def intent(self, run: Any, arg: Any, uids: UidSet) -> Any:
        """What the journal records before the action, so that a crash mid-action can be
        verified on resume: a typed intent with ``to_json()`` (None: nothing to verify)."""
        return None

    def read_intent(self, detail: Mapping[str, Any] | None) -> Any:
        """The intent back from the journal's JSON (every form older versions stored)."""
        return None

    def reverse(self, undo: Any, record: Mapping[str, Any]) -> Any:
        """Reverse what this action did (`mailrules undo`), from the record ("undo") its done
        step journaled: returns a `mailrules.actions.reverse.Reversed`. The default: it cannot
        be undone (delete, and plugin actions), which undo reports."""
        return None

    @property
    def reversible(self) -> bool:
        """Whether `reverse` can undo this action (the built-in flag, keyword, copy, move, trash)."""
        return type(self).reverse is not Action.reverse

    def execute(self, run: Any, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        """Carry the action out on IMAP: `run` is the engine's `mailrules.actions.base.ActionRun`.

        Returns an `ActionResult`; raises `ActionFailed`. A plugin's action: `run` is called
        with the public context (`run.context()`), isolated from the engine; after a crash it
        is repeated or not as `delivery` says.
        """
        if not self.has_executor():
            raise ActionFailed(f"action {self.name!r} is not available (is its plugin installed?)")
        if resuming and self.delivery == "at-most-once":
            log.warning(
                "rule %r: action %s was interrupted by a crash and is at-most-once: not repeated for UIDs %s",
                run.rule.name, self.name, uids,
            )
            return ActionResult(uids)
        try:
            self.perform(run.context(), uids, arg)
        except Exception as exc:  # noqa: BLE001 - a plugin must never crash the daemon
            log.exception("plugin action %s (plugin %s) failed in rule %r", self.name, self.plugin, run.rule.name)
            raise ActionFailed(f"plugin action {self.name} failed: {exc}") from exc
        return ActionResult(uids, removed=self.terminal)


class ActionFailed(Exception):
    """The action could not be applied to the batch (the messages are retried later).

    done: the UIDs of the batch for which the action did complete before it failed (they
    are not retried, so that a copy is never repeated).
    verified: for a copy that may have partly happened, what its retry must check first
    (a `mailrules.actions.intent.Verified`).
    """

    def __init__(self, message: str, *, done: UidSet | None = None, verified: Any = None) -> None:
        super().__init__(message)
        self.done = done if done is not None else UidSet()
        self.verified = verified


@dataclass
class ActionResult:
    """What `Action.execute` did to a batch."""

    done: UidSet  # the UIDs acted on
    removed: bool = False  # the messages left the mailbox
    # Recorded with the journal's "done" step: what reversing the action needs (for a
    # future `undo`): e.g. the source mailbox and the COPYUID mapping of a move.
    detail: dict = field(default_factory=dict)


def _check_schema(item: Predicate | Action, raw: Any, kind: str) -> None:
    """Check `raw` against the item's JSON Schema (compiled on first use); raises ArgumentError."""
    if item.schema is None:
        return
    if item._validator is None:
        what = getattr(item, "_what", f"{kind} {item.name!r}")
        object.__setattr__(item, "_validator", compile_schema(item.schema, what))
    error = _schema_error(item._validator, raw)
    if error is not None:
        raise error


@dataclass(frozen=True)
class ActionEvent:
    """What `mailrules_action_applied` receives: one action applied to a batch of messages."""

    rule: str
    account: str
    mailbox: str
    action: str
    argument: Any
    uids: tuple[int, ...]
    message_ids: tuple[str, ...]
    dry_run: bool = False




class RuleInfo(Protocol):
    """The rule an action runs for (a `mailrules.model.Rule`): ``.name`` and ``.location``."""

    name: str


class ActionContext(Protocol):
    """What an action's ``run(context, uids, arg)`` receives: the documented, narrow interface.

    The IMAP engine and the in-memory mailbox (`mailrules.memory`) both implement it, so an
    action written against it runs in both. Every method takes the batch's UIDs (a
    `mailrules.uidset.UidSet` or any iterable of ints) of the mailbox being processed.
    """

    account: str  # the account's name in the rules file
    mailbox: str  # the mailbox being processed (the server's name)
    rule: RuleInfo  # the rule that matched (``context.rule.name``)
    dry_run: bool  # always False inside `run` (a dry run never runs actions); for shared helpers
    # True when the run is offline (`mailrules test`, `tests:` cases): the mailbox is an
    # in-memory copy and nothing outside may be touched (only effects="mailbox" actions run then)
    offline: bool
    # The mailbox's UIDVALIDITY: (account, mailbox, uidvalidity, uid) names a message for good,
    # e.g. as the key of an idempotent action's own record of what it did (1 offline, in memory)
    uidvalidity: int
    message_ids: Mapping[int, str]  # uid -> Message-ID, where already known

    def messages(self, uids: Iterable[int], needs: Iterable[str] = ("message",)) -> Iterator[MessageView]:
        """The messages as `MessageView` objects holding the parts named by `needs` (the values
        of `Predicate.needs`, plus "arrival"), fetched in batches; gone messages are left out."""
        ...

    def arrival_dates(self, uids: Iterable[int]) -> dict[int, dt.datetime]:
        """uid -> when the message arrived in its mailbox (IMAP INTERNALDATE), time-zone aware."""
        ...

    def flags(self, uids: Iterable[int]) -> dict[int, frozenset[str]]:
        """uid -> its system flags (``\\Seen``, ``\\Flagged``, ...)."""
        ...

    def keywords(self, uids: Iterable[int]) -> dict[int, frozenset[str]]:
        """uid -> its keywords (``$Dev``, ``Work``, ...)."""
        ...

    def set_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        """Add system flags (``\\Seen``, ``\\Answered``, ``\\Flagged``, ``\\Draft``)."""
        ...

    def clear_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        """Remove system flags."""
        ...

    def set_keywords(self, uids: Iterable[int], keywords: Iterable[str]) -> None:
        """Add keywords; raises if the mailbox cannot store keywords."""
        ...

    def clear_keywords(self, uids: Iterable[int], keywords: Iterable[str]) -> None:
        """Remove keywords."""
        ...

    def copy(self, uids: Iterable[int], folder: str) -> None:
        """Copy to `folder` ('A/B', or 'account:A/B' for another account), created if missing."""
        ...

    def move(self, uids: Iterable[int], folder: str) -> None:
        """Move to `folder`, as `copy`. An action that moves should be declared `terminal`."""
        ...
