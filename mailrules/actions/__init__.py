"""The built-in actions, one module per family, each an `mailrules.api.Action` object.

- `flags`: flag, unflag, seen, unseen, add_flag, remove_flag;
- `keywords`: add_keyword, remove_keyword;
- `copy`: copy and move (same account and cross-account, verified by content);
- `trash`, `delete`;
- `intent`: the typed intent a copy journals before it runs;
- `base`: what every action runs with (`ActionRun`, `BuiltinAction`, the public `StoreContext`).

Each object owns its execution on a UID set (`execute`: one body, on a
`mailrules.mailstore.MailStore`, the IMAP session or the in-memory store), its crash-resume verification
(`intent`/`read_intent`), its dry-run text (`describe`), whether it ends the message's
journey (`terminal`), its destinations and what reversing it needs (journaled with its
done step). They are registered by `mailrules.builtins` through the same hook as a
plugin's actions; no other module names an action.

This package's `__init__` imports nothing, so that `mailrules.api` can import `base`
without a cycle; `all_actions()` gathers the built-ins.
"""

from __future__ import annotations

from typing import Any


def all_actions() -> list[Any]:
    """A fresh object of every built-in action, in the order `mailrules plugins` lists them."""
    from . import copy, delete, flags, keywords, trash

    return [*flags.actions(), *keywords.actions(), *copy.actions(), *trash.actions(), *delete.actions()]


def __getattr__(name: str) -> Any:
    """Names older versions exported from `mailrules.actions` (a module then)."""
    if name in ("uncertain_groups", "CopyIntent"):
        from . import intent

        return getattr(intent, name)
    if name == "content_digest":
        from . import copy

        return copy.content_digest
    if name in ("ActionFailed", "ActionResult", "ActionRun"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
