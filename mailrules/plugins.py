"""Plugin discovery and the registry of predicates and actions.

`Registry.load()` builds a pluggy PluginManager with the built-ins and every plugin of
the ``mailrules`` entry-point group, and indexes what they provide by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

hookimpl = pluggy.HookimplMarker("mailrules")

ENTRY_POINT_GROUP = "mailrules"


class PluginError(Exception):
    """A plugin is broken or two plugins register the same name."""


def _no_argument(value: Any) -> Any:
    if value is not None:
        raise ValueError("takes no argument (write it as a bare word)")
    return None


@dataclass(frozen=True)
class Predicate:
    """A client-side test a rule names in `where:`.

    test(message, args) -> bool, where message is a `mailrules.fetch.MessageView`.
    parse(raw_args) -> args validates the arguments at load time (raise ValueError with
    a message saying what was expected). needs(args) says which message parts the test
    reads: any of 'headers', 'message' (full RFC822 text), 'size', 'flags', or
    'header:Name' for single header fields. The engine fetches only those, in batches.
    """

    name: str
    test: Callable[[Any, Any], bool]
    description: str = ""
    parse: Callable[[Any], Any] = lambda args: args
    needs: Callable[[Any], Iterable[str]] = lambda args: ("message",)
    timeout: float = 10.0
    plugin: str = ""


@dataclass(frozen=True)
class Action:
    """Something a rule does to the messages it matched.

    parse(raw_arg) -> arg validates the argument at load time. For plugin actions,
    run(context, uids, arg) performs it on a batch (see `mailrules.actions.ActionContext`).
    terminal: the message leaves the mailbox (move, trash, delete).
    delivery: 'at-least-once' or 'at-most-once' across crashes.
    """

    name: str
    description: str = ""
    parse: Callable[[Any], Any] = _no_argument
    run: Callable[..., Any] | None = None
    terminal: bool = False
    delivery: str = "at-least-once"
    builtin: bool = False
    plugin: str = ""


@dataclass(frozen=True)
class ActionEvent:
    rule: str
    account: str
    mailbox: str
    action: str
    argument: Any
    uids: tuple[int, ...]
    message_ids: tuple[str, ...]
    dry_run: bool = False


@dataclass
class Registry:
    predicates: dict[str, Predicate] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    manager: pluggy.PluginManager | None = None

    @classmethod
    def load(cls, *, entry_points: bool = True, extra: Iterable[object] = ()) -> Registry:
        """The built-ins, plus installed plugins (entry points), plus `extra` plugin objects."""
        from . import builtins

        pm = pluggy.PluginManager("mailrules")
        pm.add_hookspecs(hookspecs)
        pm.register(builtins, name="builtin")
        if entry_points:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in extra:
            pm.register(plugin)
        reg = cls(manager=pm)
        for impl in pm.hook.mailrules_predicates.get_hookimpls():
            for pred in impl.function() or ():
                reg._add(reg.predicates, pred, impl.plugin_name, "predicate")
        for impl in pm.hook.mailrules_actions.get_hookimpls():
            for act in impl.function() or ():
                reg._add(reg.actions, act, impl.plugin_name, "action")
        return reg

    @staticmethod
    def _add(table: dict, item: Any, plugin_name: str, kind: str) -> None:
        if item.name in table:
            other = table[item.name].plugin or "builtin"
            raise PluginError(
                f"{kind} {item.name!r} is registered twice: by plugin {other!r} and by plugin {plugin_name!r}"
            )
        object.__setattr__(item, "plugin", plugin_name)
        table[item.name] = item

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a notification hook; errors in plugins are logged, never raised."""
        if self.manager is None:
            return
        import logging

        try:
            getattr(self.manager.hook, hook)(**kwargs)
        except Exception:  # noqa: BLE001 - a notification plugin must not stop mail processing
            logging.getLogger("mailrules.plugins").exception("plugin hook %s failed", hook)
