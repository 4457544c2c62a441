"""The plugin hook specifications: the whole API a mailrules plugin implements.

A plugin is a module (or object) with functions decorated by `mailrules.hookimpl`
whose names match the functions below. It is found through the ``mailrules``
entry-point group::

    [project.entry-points.mailrules]
    myplugin = "myplugin"

The built-in `regex` predicate and the built-in actions are registered through these
same hooks (`mailrules.builtins`), so built-ins and plugins are one mechanism.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mailrules")


@hookspec
def mailrules_predicates():
    """Return a list of `mailrules.plugins.Predicate` this plugin provides.

    A predicate runs client-side on the messages a rule's `match:` returned, named in a
    rule's `where:` list as ``{name: arguments}``.
    """


@hookspec
def mailrules_actions():
    """Return a list of `mailrules.plugins.Action` this plugin provides.

    An action is named in a rule's `actions:` list, as a bare word or ``{name: argument}``.
    """


@hookspec
def mailrules_started(config):
    """Called once when `mailrules run` has loaded `config` and is about to connect."""


@hookspec
def mailrules_action_applied(event):
    """Called after an action was applied to a batch of messages.

    `event` is a `mailrules.plugins.ActionEvent` (rule, account, mailbox, action, UIDs,
    Message-IDs, dry_run). Must not raise; errors are logged and ignored.
    """


@hookspec
def mailrules_stopping():
    """Called once when `mailrules run` is about to exit."""
