"""The plugin hook specifications: the whole API a mailrules plugin implements.

A plugin is a module (or any object) with functions decorated by `mailrules.hookimpl`
whose names match the functions below; it implements only the hooks it needs, and each
implementation may accept a subset of the arguments listed here (pluggy matches them
by name). A plugin distribution declares it in the ``mailrules`` entry-point group::

    [project.entry-points.mailrules]
    notify = "mailrules_notify"        # plugin name = module with the hookimpls

``mailrules plugins`` lists what is installed. The built-in `regex` predicate and the
built-in actions are registered through these same hooks (`mailrules.builtins`), so
built-ins and plugins are one mechanism. Names are global: two plugins providing the
same predicate or action name is an error (`mailrules.plugins.PluginError`) that stops
mailrules at start, naming both plugins.

Guarantees the engine gives every plugin:

- arguments are validated when the rules file is loaded, so a bad argument is a
  configuration error with file, line and column, never a runtime surprise;
- a predicate that raises or exceeds its time limit, or an action that raises, never
  crashes the daemon and never loses mail: that rule does not act on the message(s),
  the error is logged (plugin, rule, UIDs), and the message is retried on a later pass
  from that rule (later rules wait), at most 5 times, then given up and listed by
  ``mailrules status``;
- in ``mailrules run --dry-run`` no action runs (the engine prints what it would do).

Threads: the daemon runs one engine per account, each in its own thread, so predicates,
actions and `mailrules_action_applied` may be called from several threads at once (one
message at a time per account). Keep module-level state thread-safe.

Step by step: ``docs/plugins.md`` ("Writing a plugin").
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mailrules")


@hookspec
def mailrules_predicates():
    """Return the predicates this plugin provides: a list of `mailrules.plugins.Predicate`.

    Called once, when the registry is built (before the rules file is loaded). A rule
    names a predicate in its ``where:`` list as ``{name: arguments}`` or as a bare
    ``name`` (arguments None); all of a rule's predicates must hold for it to act.

    ``Predicate(name, test, description="", parse=None, schema=None, needs=("message",),
    timeout=10.0)``:

    - ``test(message, args) -> bool``: `message` is a `mailrules.message.MessageView`
      (``.uid``, ``.header(name) -> list[str]`` decoded, ``.subject``, ``.message_id``,
      ``.from_addresses``, ``.body_text``, ``.email`` (an `email.message.EmailMessage`,
      modern policy, parsed on first use), ``.raw`` (bytes or None), ``.size``, ``.flags``);
      `args` is the validated argument. It runs in a worker thread, one message at a
      time, and must return within `timeout` seconds; raising or timing out means the
      message is retried later (see the module docstring), so raise on "cannot decide
      now" (e.g. a service is down) rather than guessing False.
    - ``schema``: a JSON Schema (dict) the raw YAML value must satisfy (checked with the
      `jsonschema` library; draft 2020-12 unless ``$schema`` says otherwise). YAML
      mappings are JSON objects, a bare name is null.
    - ``parse(raw) -> args``: converts the raw (schema-checked) value; raise ValueError or
      `mailrules.plugins.ArgumentError(message, path)` saying what was expected. Without
      `parse`, args is the raw value.
    - ``needs``: the parts of the message `test` reads, an iterable or a function of args:
      ``"header:Name"`` (one header field), ``"headers"`` (the whole header), ``"body"``
      (the decoded text, fetches the whole message), ``"message"`` (the whole message),
      ``"size"``, ``"flags"``. The engine fetches the union of what one rule's
      predicates need once per batch (a single UID FETCH per batch), and only that:
      declare everything you read. Declare as little as possible: header fields are
      far cheaper to fetch than whole messages.
    """


@hookspec
def mailrules_actions():
    """Return the actions this plugin provides: a list of `mailrules.plugins.Action`.

    Called once, when the registry is built. A rule names an action in its ``actions:``
    list as a bare word (argument None) or ``{name: argument}``.

    ``Action(name, description="", run=..., parse=None, schema=None,
    delivery="at-least-once", terminal=False, effects="outside")``:

    - ``run(context, uids, arg)``: apply the action to a batch of messages of the selected
      mailbox. `context` is a `mailrules.ActionContext` (a protocol, `mailrules.api`):
      ``.account``, ``.mailbox``, ``.rule`` (``.rule.name``), ``.dry_run``, ``.offline``,
      ``.uidvalidity``, ``.message_ids``
      (uid -> Message-ID), ``.messages(uids, needs)`` (MessageViews, fetched in batches),
      ``.arrival_dates(uids)`` (aware datetimes), ``.flags(uids)``, ``.keywords(uids)``,
      ``.set_flags``/``.clear_flags``/``.set_keywords``/``.clear_keywords(uids, names)``,
      ``.copy``/``.move(uids, folder)``. `uids` is a `mailrules.uidset.UidSet`. Return when
      done; raise to fail the whole batch (it is retried from this action on a later pass).
      Bound your own I/O with timeouts: actions run in the engine's thread.
    - ``schema`` / ``parse``: argument validation at load time, as for predicates. With
      neither, the action takes no argument.
    - ``delivery``: ``"at-least-once"`` (after a crash in the middle of `run`, it runs again
      for that batch) or ``"at-most-once"`` (it is not run again).
    - ``terminal``: True if `run` removes the messages from the mailbox (as move does).
    - ``effects``: ``"outside"`` (default: never called offline, reported as "would run") or
      ``"mailbox"`` (it changes the mailbox through the context only: carried out in memory
      by ``mailrules test`` and ``tests:`` cases).

    The engine logs every applied action per message (rule, account, mailbox, UID,
    Message-ID), exactly as for built-in actions, then calls `mailrules_action_applied`.
    """


@hookspec
def mailrules_started(config):
    """Called once when ``mailrules run`` has loaded `config` and is about to connect.

    `config` is the `mailrules.model.Config` (accounts and rules). Errors are logged and
    ignored. Also called in ``--dry-run``.
    """


@hookspec
def mailrules_action_applied(event):
    """Called after an action (built-in or plugin) was applied to a batch of messages.

    `event` is a `mailrules.plugins.ActionEvent`: ``rule``, ``account``, ``mailbox``,
    ``action`` (name), ``argument`` (validated), ``uids`` and ``message_ids`` (tuples, in
    the same order), ``dry_run``. Not called in ``--dry-run``, where nothing is applied.
    Called in the engine's thread of that account: return quickly. Errors are logged and
    ignored, and do not keep other plugins from being notified.
    """


@hookspec
def mailrules_stopping():
    """Called once when ``mailrules run`` is about to exit (also after ``--once``).

    Errors are logged and ignored.
    """
