"""Plugin discovery and the registry of predicates and actions.

`Registry.load()` builds a pluggy PluginManager with the built-ins (`mailrules.builtins`),
every plugin of the ``mailrules`` entry-point group and any `extra` plugin objects, and
indexes what they provide by name. Built-ins and plugins are one mechanism: the built-in
`regex` predicate and the built-in actions come through the same hooks, called through
pluggy's hook calling (so ``tryfirst``/``trylast`` and wrappers behave as pluggy documents).

What a plugin provides (`Predicate`, `Action`) and the argument validation live in
`mailrules.api` (re-exported here and by `mailrules`); the hooks are documented in
`mailrules.hookspecs`; the guide is ``docs/plugins.md``.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .api import (
    DELIVERY,
    EFFECTS,
    NAME_RE,
    NEEDS,
    Action,
    ActionContext,
    ActionEvent,
    ArgumentError,
    PluginError,
    Predicate,
    check_needs,
    compile_schema,
    hookimpl,
)

ENTRY_POINT_GROUP = "mailrules"

log = logging.getLogger("mailrules.plugins")

__all__ = [
    "ENTRY_POINT_GROUP",
    "NEEDS",
    "Action",
    "ActionContext",
    "ActionEvent",
    "ArgumentError",
    "PluginError",
    "PluginInfo",
    "Predicate",
    "Registry",
    "TimeLimit",
    "hookimpl",
]

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
            meta = dist.metadata if dist is not None else None  # parsed once (dist.version parses it again)
            dist_name = meta["Name"] if meta is not None else None
            version = meta["Version"] if meta is not None else None
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
        """Call `hook` through pluggy and index what each plugin returned under its name."""
        assert self.manager is not None
        origin: dict[int, str] = {}
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if not (impl.wrapper or impl.hookwrapper):
                impl.function = _collector(impl.function, impl.plugin_name, hook, kind_type, origin)
        results = getattr(self.manager.hook, hook)()
        # pluggy calls the last registered first: reversed, built-ins come first, then entry
        # points, then `extra` (so that a clash names the built-in as the first owner)
        for items in reversed(results):
            plugin = origin.get(id(items), "unknown")  # a list a wrapper made has no known origin
            for item in items or ():
                if not isinstance(item, kind_type):
                    raise PluginError(f"{hook}() must return {kind_type.__name__} objects, got {item!r}")
                self._add(table, item, plugin, kind)

    def _add(self, table: dict, item: Any, plugin_name: str, kind: str) -> None:
        what = f"{kind} {item.name!r} of plugin {plugin_name!r}"
        if not isinstance(item.name, str) or not NAME_RE.match(item.name):
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
                check_needs(item.needs, what)
            if (not isinstance(item.timeout, int | float) or isinstance(item.timeout, bool)
                    or not math.isfinite(item.timeout) or not 0 < item.timeout <= threading.TIMEOUT_MAX):
                raise PluginError(f"{what}: timeout must be a positive, finite number of seconds")
        else:
            if item.delivery not in DELIVERY:
                raise PluginError(f"{what}: delivery must be one of {', '.join(DELIVERY)}")
            if item.effects not in EFFECTS:
                raise PluginError(f"{what}: effects must be one of {', '.join(EFFECTS)}")
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
                        object.__setattr__(item, "_validator", compile_schema(item.schema, item._what))
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
        """Call a notification hook through pluggy; a plugin's error is logged, never raised.

        Each implementation is guarded on its own (see `_guarded`), so one failing plugin does
        not keep the others from being notified, while pluggy's ordering (``tryfirst``,
        ``trylast``) and wrappers apply as pluggy documents.
        """
        if self.manager is None:
            return
        caller = getattr(self.manager.hook, hook)
        for impl in caller.get_hookimpls():
            if not (impl.wrapper or impl.hookwrapper or getattr(impl.function, "_mailrules_guarded", False)):
                impl.function = _guarded(impl.function, impl.plugin_name, hook)
        caller(**kwargs)


def _collector(fn: Callable[..., Any], plugin: str, hook: str, kind_type: type,
               origin: dict[int, str]) -> Callable[..., Any]:
    """`fn` (a plugin's collection hook) checked, the list it returns noted as coming from `plugin`."""

    @functools.wraps(fn)
    def collect(*args: Any) -> list:
        try:
            items = fn(*args)
        except Exception as exc:  # noqa: BLE001
            raise PluginError(f"plugin {plugin!r}: {hook}() failed: {type(exc).__name__}: {exc}") from exc
        items = list(items or ())
        for item in items:
            if not isinstance(item, kind_type):
                raise PluginError(
                    f"plugin {plugin!r}: {hook}() must return {kind_type.__name__} objects, got {item!r}"
                )
        origin[id(items)] = plugin  # the list pluggy hands back among the results (kept alive there)
        return items

    return collect


def _guarded(fn: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    """`fn` (a plugin's notification hook) with its errors logged instead of raised."""

    @functools.wraps(fn)
    def guarded(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - a notification plugin must not stop mail processing
            log.exception("plugin %s: hook %s failed", plugin, hook)
            return None

    guarded._mailrules_guarded = True  # type: ignore[attr-defined]
    return guarded


def _origin(info: PluginInfo | None) -> str:
    if info is None:
        return "unknown origin"
    if info.distribution:
        version = f" {info.version}" if info.version else ""
        return f"distribution {info.distribution}{version}, {info.module}"
    return f"module {info.module}" if info.module else "registered directly"
