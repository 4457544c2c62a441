"""mailrules: declarative IMAP mail filtering.

What plugin authors use is importable from here (see ``docs/plugins.md``):

- `hookimpl`: decorates a plugin's hook functions (`mailrules.hookspecs`);
- `Predicate`, `Action`: what the hooks return;
- `ActionContext`: the protocol an action's ``run(context, uids, arg)`` receives;
- `MessageView`: what a predicate's ``test(message, args)`` and ``context.messages()`` give;
- `ArgumentError`, `PluginError`, `ActionEvent`, `UidSet`.
"""

from .api import Action, ActionContext, ActionEvent, ArgumentError, PluginError, Predicate, hookimpl
from .message import MessageView
from .uidset import UidSet

__version__ = "0.1.0"
__all__ = [
    "Action",
    "ActionContext",
    "ActionEvent",
    "ArgumentError",
    "MessageView",
    "PluginError",
    "Predicate",
    "UidSet",
    "__version__",
    "hookimpl",
]
