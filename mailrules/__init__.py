"""mailrules: declarative IMAP mail filtering.

What plugin authors use is importable from here (see ``docs/plugins.md``):

- `hookimpl`: decorates a plugin's hook functions (`mailrules.hookspecs`);
- `Predicate`, `Action`: what the hooks return;
- `ActionContext`: the protocol an action's ``run(context, uids, arg)`` receives;
- `MessageView`: what a predicate's ``test(message, args)`` and ``context.messages()`` give;
- `ArgumentError`, `PluginError`, `ActionEvent`, `UidSet`;
- `resolve_path`: a path in a rule's argument, relative to the rules file's directory;
- `ConfigError` (a bad rules file or argument, with file:line:column);
- `child_environment`, `register_secret`, `register_secret_variable` (`mailrules.secrets`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        Action,
        ActionContext,
        ActionEvent,
        ArgumentError,
        PluginError,
        Predicate,
        hookimpl,
        resolve_path,
    )
    from .config import ConfigError
    from .message import MessageView
    from .secrets import child_environment, register_secret, register_secret_variable
    from .uidset import UidSet

# Imported on first use (PEP 562), so that `mailrules` itself costs the command line nothing.
_EXPORTS = {
    "Action": "api", "ActionContext": "api", "ActionEvent": "api", "ArgumentError": "api",
    "PluginError": "api", "Predicate": "api", "hookimpl": "api", "resolve_path": "api",
    "MessageView": "message", "UidSet": "uidset",
    "ConfigError": "config", "child_environment": "secrets", "register_secret": "secrets",
    "register_secret_variable": "secrets",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mailrules' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "Action",
    "ActionContext",
    "ActionEvent",
    "ArgumentError",
    "ConfigError",
    "MessageView",
    "PluginError",
    "Predicate",
    "UidSet",
    "__version__",
    "child_environment",
    "hookimpl",
    "register_secret",
    "register_secret_variable",
    "resolve_path",
]
