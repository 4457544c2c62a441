"""Plugin discovery, the registry of predicates and actions, and their argument validation.

`Registry.load()` builds a pluggy PluginManager with the built-ins (`mailrules.builtins`),
every plugin of the ``mailrules`` entry-point group and any `extra` plugin objects, and
indexes what they provide by name. Built-ins and plugins are one mechanism: the built-in
`regex` predicate and the built-in actions come through the same hooks.

What a plugin provides is described by two frozen dataclasses:

- `Predicate`: a client-side test named in a rule's ``where:`` list;
- `Action`: something a rule does, named in its ``actions:`` list.

Both validate their arguments when the rules file is loaded (`Predicate.validate`,
`Action.validate`): with a JSON Schema (``schema=``, checked by the `jsonschema` library),
a ``parse=`` function, or both (schema first, then parse). A bad argument raises
`ArgumentError` (a ValueError), which the loader reports with file, line and column.

The API a plugin implements is documented in `mailrules.hookspecs`; the guide is
``docs/plugins.md``.
"""

from __future__ import annotations

import difflib
import logging
import math
import queue
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .criteria import fetchable_header_name

hookimpl = pluggy.HookimplMarker("mailrules")

ENTRY_POINT_GROUP = "mailrules"

log = logging.getLogger("mailrules.plugins")

__all__ = [
    "ENTRY_POINT_GROUP",
    "NEEDS",
    "Action",
    "ActionEvent",
    "ArgumentError",
    "PluginError",
    "PluginInfo",
    "Predicate",
    "Registry",
    "TimeLimit",
    "hookimpl",
]

NEEDS = ("headers", "body", "message", "size", "flags")
"""The message parts a predicate may need, besides ``"header:Name"`` (one header field)."""

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_DELIVERY = ("at-least-once", "at-most-once")


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


# --------------------------------------------------------------------------- validation


def _summary(description: str) -> str:
    """The first line of a description."""
    text = (description or "").strip()
    return text.splitlines()[0].strip() if text else ""


def _compile_schema(schema: Mapping[str, Any], what: str) -> Any:
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


def _check_needs(needs: Iterable[str], what: str) -> frozenset[str]:
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
        ``"size"`` (`MessageView.size`), ``"flags"`` (`MessageView.flags`). The engine
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
        return _check_needs(needs, f"predicate {self.name!r}")


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
        Carries the action out on a batch: `context` is a `mailrules.actions.ActionContext`
        (session, account, mailbox, rule, dry_run, ``context.messages(uids, needs)``),
        `uids` a `mailrules.uidset.UidSet` of the selected mailbox, `arg` the validated
        argument. Return normally when done for the whole batch; raise to fail it: the
        failure is logged and every message of the batch is retried from this action on
        a later pass (later rules wait for it). Never called in ``--dry-run``. The engine
        logs each applied action per message, like a built-in one.
    delivery
        What a crash in the middle of `run` leads to on resume: ``"at-least-once"`` (run
        again for the batch: make the action idempotent or harmless to repeat) or
        ``"at-most-once"`` (not run again; the messages go on to the next action).
    terminal
        True if the action removes the messages from the mailbox (nothing may follow it).
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
    _validator: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def summary(self) -> str:
        return _summary(self.description)

    def validate(self, raw: Any) -> Any:
        """The checked argument of a rule's raw YAML argument; raises ArgumentError (ValueError)."""
        if self.schema is not None:
            _check_schema(self, raw, "action")
            return _run_parse(self.parse, raw) if self.parse is not None else raw
        return _run_parse(self.parse or _no_argument, raw)


def _check_schema(item: Predicate | Action, raw: Any, kind: str) -> None:
    """Check `raw` against the item's JSON Schema (compiled on first use); raises ArgumentError."""
    if item.schema is None:
        return
    if item._validator is None:
        what = getattr(item, "_what", f"{kind} {item.name!r}")
        object.__setattr__(item, "_validator", _compile_schema(item.schema, what))
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


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: its name, and the distribution it came from (None for `extra`)."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str = ""


# --------------------------------------------------------------------------- time limits


class _Worker:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.abandoned = False
        self.thread = threading.Thread(target=self._loop, name="mailrules-plugin", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, args, box, done = job
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                if not isinstance(exc, Exception):  # e.g. sys.exit() in a plugin: not the daemon's exit
                    exc = RuntimeError(f"raised {type(exc).__name__}: {exc}")
                box.append((False, exc))
            finally:
                done.set()
            if self.abandoned:
                return


class TimeLimit:
    """Runs plugin calls in a daemon worker thread, each with a time limit.

    A call that overruns raises TimeoutError in the caller; its thread is abandoned
    (Python cannot stop a thread) and a fresh one serves the next call. Abandoned threads
    are daemon threads, so they never keep the process from exiting. If more than
    `max_stuck` of them are still stuck, further calls fail at once rather than piling up.
    """

    def __init__(self, max_stuck: int = 16) -> None:
        self.max_stuck = max_stuck
        self._worker: _Worker | None = None
        self._stuck: list[_Worker] = []

    def call(self, fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
        self._stuck = [w for w in self._stuck if w.thread.is_alive()]
        if len(self._stuck) >= self.max_stuck:
            raise TimeoutError(f"{len(self._stuck)} earlier plugin calls are still stuck; not starting another")
        if self._worker is None:
            self._worker = _Worker()
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        self._worker.jobs.put((fn, args, box, done))
        if not done.wait(timeout):
            worker, self._worker = self._worker, None
            worker.abandoned = True
            self._stuck.append(worker)
            raise TimeoutError(f"exceeded its time limit of {timeout:g}s")
        ok, value = box[0]
        if ok:
            return value
        raise value

    def close(self) -> None:
        if self._worker is not None:
            self._worker.jobs.put(None)
            self._worker = None


# --------------------------------------------------------------------------- registry


def _plugin_name(plugin: object) -> str:
    for attr in ("mailrules_plugin_name", "__name__"):
        value = getattr(plugin, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(plugin).__name__


@dataclass
class Registry:
    """Every predicate and action by name, and the plugins that provide them."""

    predicates: dict[str, Predicate] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    manager: pluggy.PluginManager | None = None
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    @classmethod
    def load(cls, *, entry_points: bool = True, extra: Iterable[object] = ()) -> Registry:
        """The built-ins, plus installed plugins (``mailrules`` entry points), plus `extra` objects.

        `extra` items are plugin objects (modules, classes or instances with hookimpls);
        they are named by their ``mailrules_plugin_name`` or ``__name__`` attribute.
        Raises PluginError when a plugin fails to load, returns something that is not a
        Predicate/Action, or two plugins register the same name.
        """
        from . import __version__, builtins

        pm = pluggy.PluginManager("mailrules")
        pm.add_hookspecs(hookspecs)
        reg = cls(manager=pm)
        reg._register(builtins, PluginInfo("builtin", "mailrules", __version__, builtins.__name__))
        if entry_points:
            reg._load_entry_points()
        for plugin in extra:
            name = _plugin_name(plugin)
            reg._register(plugin, PluginInfo(name, None, None, getattr(plugin, "__module__", None) or name))
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid plugin: {exc}") from None
        reg._collect("mailrules_predicates", reg.predicates, Predicate, "predicate")
        reg._collect("mailrules_actions", reg.actions, Action, "action")
        return reg

    def _register(self, plugin: object, info: PluginInfo) -> None:
        assert self.manager is not None
        self._check_unique(info)
        try:
            self.manager.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {info.name!r} ({_origin(info)}) is invalid: {exc}") from None
        except ValueError as exc:  # the same object registered twice
            raise PluginError(f"plugin {info.name!r}: {exc}") from None
        self.plugins[info.name] = info

    def _check_unique(self, info: PluginInfo) -> None:
        if info.name in self.plugins:
            other = self.plugins[info.name]
            raise PluginError(
                f"two plugins are named {info.name!r}: {_origin(other)} and {_origin(info)}; "
                "uninstall or rename one of them"
            )

    def _load_entry_points(self) -> None:
        from importlib import metadata

        seen: dict[str, str] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if seen.get(ep.name) == ep.value:
                continue  # the same distribution found twice on sys.path (e.g. an editable install)
            seen[ep.name] = ep.value
            info = PluginInfo(ep.name, dist_name, version, ep.value)
            self._check_unique(info)
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure: say which plugin
                raise PluginError(
                    f"plugin {ep.name!r} ({_origin(info)}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            self._register(plugin, info)

    def _collect(self, hook: str, table: dict, kind_type: type, kind: str) -> None:
        assert self.manager is not None
        # get_hookimpls() is in registration order: built-ins, entry points, extra
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            try:
                items = impl.function()
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"plugin {impl.plugin_name!r}: {hook}() failed: {type(exc).__name__}: {exc}") from exc
            for item in items or ():
                if not isinstance(item, kind_type):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: {hook}() must return {kind_type.__name__} objects, "
                        f"got {item!r}"
                    )
                self._add(table, item, impl.plugin_name, kind)

    def _add(self, table: dict, item: Any, plugin_name: str, kind: str) -> None:
        what = f"{kind} {item.name!r} of plugin {plugin_name!r}"
        if not isinstance(item.name, str) or not _NAME_RE.match(item.name):
            raise PluginError(f"{what}: a name is letters, digits, '_' and '-', starting with a letter")
        if item.name in table:
            other = table[item.name].plugin or "builtin"
            raise PluginError(
                f"{kind} {item.name!r} is registered twice: by plugin {other!r} "
                f"({_origin(self.plugins.get(other))}) and by plugin {plugin_name!r} "
                f"({_origin(self.plugins.get(plugin_name))}); "
                + ("a plugin cannot take a built-in name" if other == "builtin" else "uninstall one of them")
            )
        if isinstance(item, Predicate):
            if not callable(item.test):
                raise PluginError(f"{what}: test must be a function (message, args) -> bool")
            if not callable(item.needs):
                _check_needs(item.needs, what)
            if (not isinstance(item.timeout, int | float) or isinstance(item.timeout, bool)
                    or not math.isfinite(item.timeout) or not 0 < item.timeout <= threading.TIMEOUT_MAX):
                raise PluginError(f"{what}: timeout must be a positive, finite number of seconds")
        else:
            if item.delivery not in _DELIVERY:
                raise PluginError(f"{what}: delivery must be one of {', '.join(_DELIVERY)}")
            if item.run is not None and not callable(item.run):
                raise PluginError(f"{what}: run must be a function (context, uids, arg)")
        # The schema is compiled on first use (validate(), `mailrules plugins`): importing
        # jsonschema costs ~0.1 s of start-up that most runs do not need.
        object.__setattr__(item, "plugin", plugin_name)
        object.__setattr__(item, "_what", what)
        table[item.name] = item

    def describe(self) -> list[str]:
        """What ``mailrules plugins`` prints: each plugin, then its predicates and actions, one line each."""
        lines: list[str] = []
        hooks = self._hooks_by_plugin()
        for name, info in self.plugins.items():
            origin = f" ({info.distribution} {info.version})" if info.distribution else f" ({info.module})"
            lines.append(f"{name}{origin}")
            items = [("predicate", p) for p in self.predicates.values() if p.plugin == name]
            items += [("action", a) for a in self.actions.values() if a.plugin == name]
            width = max((len(item.name) for _, item in items), default=0)
            for kind, item in items:
                lines.append(f"  {kind:<9} {item.name:<{width}}  {item.summary}".rstrip())
                if item.schema is not None and item._validator is None:
                    try:  # schemas are compiled lazily: report a broken one here
                        object.__setattr__(item, "_validator", _compile_schema(item.schema, item._what))
                    except PluginError as exc:
                        lines.append(f"    error: {exc}")
            events = [h for h in hooks.get(name, ()) if h not in ("mailrules_predicates", "mailrules_actions")]
            if events:
                lines.append(f"  {'hooks':<9} {', '.join(events)}")
            if not items and not events:
                lines.append("  (provides nothing)")
        return lines

    def _hooks_by_plugin(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.manager is None:
            return out
        for hook in ("mailrules_predicates", "mailrules_actions", "mailrules_started",
                     "mailrules_action_applied", "mailrules_stopping"):
            for impl in getattr(self.manager.hook, hook).get_hookimpls():
                out.setdefault(impl.plugin_name, []).append(hook)
        return out

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a notification hook in every plugin; a plugin's error is logged, never raised.

        Each implementation is called on its own (with the arguments it asks for), so one
        failing plugin does not keep the others from being notified.
        """
        if self.manager is None:
            return
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception:  # noqa: BLE001 - a notification plugin must not stop mail processing
                log.exception("plugin %s: hook %s failed", impl.plugin_name, hook)


def _origin(info: PluginInfo | None) -> str:
    if info is None:
        return "unknown origin"
    if info.distribution:
        version = f" {info.version}" if info.version else ""
        return f"distribution {info.distribution}{version}, {info.module}"
    return f"module {info.module}" if info.module else "registered directly"
