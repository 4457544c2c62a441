# PYTHON_ARGCOMPLETE_OK  (argcomplete: this entry point answers shell completion requests)
"""The `mailrules` command line. Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from .model import Config

if TYPE_CHECKING:
    from .imap.pool import SessionPool
    from .plugins import Registry

log = logging.getLogger("mailrules")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="rules file (default: $MAILRULES_CONFIG, else ~/.config/mailrules/rules.yaml)")
    parser.add_argument("--state", metavar="DIR", default=default,
                        help="state directory (default: $XDG_STATE_HOME/mailrules)")
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="more log output: -v also each rule's search results, whole message lists and "
                             "tracebacks; -vv also the IMAP protocol (secrets redacted)")
    parser.add_argument("-q", "--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="only warnings and errors")
    parser.add_argument("--log-format", choices=("text", "json"), default="text" if top else argparse.SUPPRESS,
                        help="log lines for people (text, the default) or one JSON object per line (json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailrules", description="Declarative IMAP mail filtering.")
    parser.add_argument("--version", action="version", version=f"mailrules {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="the daemon: catch up, then watch with IDLE")
    _common(run, top=False)
    run.add_argument("--once", action="store_true", help="catch up on what arrived since the last run, then exit")
    run.add_argument("--sweep", action="store_true", help="also run every scheduled rule once, now")
    run.add_argument("--dry-run", action="store_true", help="change nothing; print what each rule would do")
    run.add_argument("--rule", action="append", metavar="NAME", help="only the named rules (repeatable)")
    run.add_argument("--since-now", action="store_true",
                     help="on a first run, skip the messages already in the mailboxes")
    run.add_argument("--shard", metavar="I/N",
                     help="serve only the accounts of shard I of N (from 0; by a stable hash of the account name); "
                          "default $MAILRULES_SHARD, which also takes a pod name: mailrules-2/3")
    run.add_argument("--metrics", metavar="HOST:PORT",
                     help="serve Prometheus metrics (/metrics), liveness (/healthz) and readiness (/readyz) "
                          "there, e.g. 127.0.0.1:9464 (needs prometheus-client, the extra 'metrics')")

    check = sub.add_parser("check", help="validate the rules file")
    _common(check, top=False)
    check.add_argument("--connect", action="store_true",
                       help="also log in and check accounts, folders and capabilities")

    status = sub.add_parser("status", help="progress, pending and given-up messages, next sweeps")
    _common(status, top=False)

    plugins = sub.add_parser("plugins", help="installed plugins, their predicates and actions")
    _common(plugins, top=False)

    test = sub.add_parser("test", help="which rules match which messages, offline; or the rules file's tests:")
    _common(test, top=False)
    _test_arguments(test)

    explain = sub.add_parser("explain", help="for one message on the server: each rule, matched or not, and why")
    _common(explain, top=False)
    explain.add_argument("account")
    explain.add_argument("mailbox")
    explain.add_argument("uid", type=int)

    demo = sub.add_parser("demo", help="the example rules at work on a throwaway local server (needs Dovecot)")
    _common(demo, top=False)
    demo.add_argument("--keep", action="store_true",
                      help="afterwards keep the server running; print its address, logins and a rules file for it")
    demo.add_argument("--load", action="append", metavar="PATH", default=[],
                      help="put .eml files, mbox files or Maildirs (repeatable) into its account 'me'; implies --keep")
    demo.add_argument("--port", type=int, default=0, help="the server's port on 127.0.0.1 (default: a free one)")

    from .init import add_parser as add_init_parser

    add_init_parser(sub, lambda p: _common(p, top=False))
    _journal_commands(sub)

    login = sub.add_parser("login", help="store an account's password in the system keyring")
    _common(login, top=False)
    login.add_argument("account")
    _learning_parsers(sub)
    from .cli_help import describe_subcommands

    describe_subcommands(sub)
    return parser


def _learning_parsers(sub) -> None:
    """`suggest` and `import` (mailrules.suggest, mailrules.importers): see docs/switching.md."""
    suggest = sub.add_parser("suggest", help="propose rules that reproduce how you filed your mail (reads headers only)")
    _common(suggest, top=False)
    suggest.add_argument("account")
    suggest.add_argument("--from", dest="source", default="INBOX", metavar="MAILBOX",
                         help="where the proposed rules would take mail from (default INBOX)")
    suggest.add_argument("--folders", nargs="+", metavar="F", help="only these folders (default: every folder)")
    suggest.add_argument("--min-messages", type=int, default=10, metavar="N",
                         help="skip folders with fewer messages (default 10)")
    imp = sub.add_parser("import", help="convert a Sieve script or a Gmail filters export into a rules file")
    _common(imp, top=False)
    imp.add_argument("kind", choices=("sieve", "gmail"))
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--rules-only", action="store_true",
                     help="write an include file (rules only, no placeholder account)")
    imp.add_argument("--separator", default="/", metavar="SEP",
                     help="sieve: the hierarchy separator of the script's folder names ('.': INBOX.Lists.dev "
                          "becomes Lists/dev)")
    imp.add_argument("--archive", default="Archive", metavar="FOLDER",
                     help="gmail: where shouldArchive moves mail (default Archive; on Gmail itself '[Gmail]/All Mail')")


def _journal_commands(sub) -> None:
    """`apply`, `undo` and `history` (mailrules.apply, .undo, .history): the journal's commands."""
    apply = sub.add_parser("apply", help="run rules over every message already in the mailboxes (plan first)")
    _common(apply, top=False)
    apply.add_argument("--rule", action="append", metavar="NAME", help="only the named rules (repeatable)")
    apply.add_argument("--account", metavar="A", help="only this account")
    apply.add_argument("--mailbox", action="append", metavar="M", help="these mailboxes (default: the watched ones)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    apply.add_argument("--yes", action="store_true", help="no confirmation question (for scripts)")
    undo = sub.add_parser("undo", help="reverse what a run did (moves, copies, flags, keywords)")
    _common(undo, top=False)
    undo.add_argument("run", nargs="?", type=int, metavar="RUN", help="the run's id (`history --runs`)")
    undo.add_argument("--last", action="store_true", help="the latest run that changed something")
    undo.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    undo.add_argument("--yes", action="store_true", help="no confirmation question (for scripts)")
    history = sub.add_parser("history", help="what mailrules did: per message and action, or per run")
    _common(history, top=False)
    history.add_argument("--message-id", metavar="ID", help="only this message")
    history.add_argument("--rule", action="append", metavar="NAME", help="only these rules (repeatable)")
    history.add_argument("--since", metavar="DURATION", help="only runs started within DURATION (e.g. 2d)")
    history.add_argument("--run", type=int, metavar="RUN", help="only this run")
    history.add_argument("--runs", action="store_true", help="list the runs: id, start, kind, counts")
    history.add_argument("--format", choices=("text", "json"), default="text")


def _test_arguments(parser: argparse.ArgumentParser) -> None:
    """The `test` subcommand's options (here, not in testcmd: building the parser must import nothing heavy)."""
    parser.add_argument("messages", nargs="*", metavar="MESSAGES",
                        help=".eml files, mbox files or Maildir folders (default: run the rules file's tests:)")
    parser.add_argument("--rule", action="append", metavar="NAME", help="only the named rules (repeatable)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: a JSON list, one object per message (MESSAGES only)")
    parser.add_argument("--against", metavar="ACCOUNT",
                        help="also check each rule's SEARCH on this account's server (scratch mailbox, deleted after)")
    parser.add_argument("--account", metavar="ACCOUNT",
                        help="MESSAGES arrive in this account (default: --against's, else the first)")
    parser.add_argument("--mailbox", metavar="MAILBOX", help="MESSAGES arrive in this mailbox (default INBOX)")


def setup_logging(verbose: int, quiet: bool, log_format: str = "text") -> None:
    """Log to stderr: bounded lines for people, or JSON lines (see mailrules.logformat).

    Default: actions, errors, warnings and summaries. -v: also each rule's search results,
    whole message lists and tracebacks (DEBUG). -vv: also the IMAP protocol (redacted),
    without imaplib's internal parse notes. On a terminal (text logs), lines are written
    through the console that draws the progress bars, so that they never mix.
    """
    from .logformat import HumanFormatter, JsonFormatter, ProtocolLines
    from .progress import TerminalHandler, attach_terminal, detach_terminal

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler: logging.Handler
    if log_format == "json":
        detach_terminal()  # machines read JSON: no bars among the lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        console = attach_terminal(sys.stderr)
        handler = TerminalHandler(console) if console is not None else logging.StreamHandler(sys.stderr)
        handler.setFormatter(HumanFormatter(verbose=verbose))
    handler.addFilter(ProtocolLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # IMAPClient's protocol log only at -vv (it is redacted by mailrules.connect either way).
    logging.getLogger("imapclient").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    # imapclient.util warns about every non-ASCII server reply; noise unless debugging
    logging.getLogger("imapclient.util").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)
    logging.getLogger("mailrules.imap").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.INFO if verbose else logging.WARNING)


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request and exit; do nothing on an ordinary run.

    The shell (after `eval "$(register-python-argcomplete mailrules)"`, see the README) runs
    `mailrules` with `_ARGCOMPLETE` set and the command line in `COMP_LINE`; argcomplete reads
    the parser and prints the subcommands and options that fit. Imported only then, so that an
    ordinary run does not pay for it.
    """
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:  # an installation without it: no completions rather than an error
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet, args.log_format)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _load_config(args: argparse.Namespace, registry: Registry) -> Config | None:
    """The rules file (-c, MAILRULES_CONFIG or the default), with the accounts' secrets protected;
    None after saying on stderr why it cannot be used (the caller exits 2).
    """
    from .config import ConfigError, ConfigWarning, load, rules_file_path

    path = rules_file_path(args.config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            config = load(path, registry=registry)
        for message in config.warnings:
            log.warning("%s", message)
        from .secrets import protect_accounts

        protect_accounts(config.accounts.values())  # out of every child's environment (plugins, commands)
    except ConfigError as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        from .init import no_rules_file_hint, rules_file_absent

        if rules_file_absent(path):
            print(no_rules_file_hint(path), file=sys.stderr)
        if args.command == "status":  # the progress is still worth showing; exit 2 all the same
            from .state import StateError
            from .status import print_status

            try:
                print_status(None, _state_dir(args), out=sys.stdout)
            except StateError as exc:
                print(f"mailrules: {exc}", file=sys.stderr)
        return None
    except FileNotFoundError:
        print(f"mailrules: no rules file at {path} (use -c FILE or set MAILRULES_CONFIG)", file=sys.stderr)
        return None
    except Exception as exc:  # noqa: BLE001 - e.g. a plugin's validator failing on odd arguments
        # load() turns every problem of the file into a ConfigError; anything else is a bug
        # (here or in a plugin), still a configuration that cannot be used: exit 2, no traceback
        # unless asked for (-v).
        log.debug("details", exc_info=True)
        print(f"mailrules: {path}: cannot load the rules file: {type(exc).__name__}: {exc} "
              "(a bug: please report it; -v shows the details)", file=sys.stderr)
        return None
    return config


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import demo_command

        return demo_command(args)
    if args.command == "init":
        from .init import init_command

        return init_command(args)
    if args.command == "import":  # offline, and needs no rules file
        from .importers.command import import_command

        return import_command(args)
    from .runcommand import early_pool

    early = early_pool(args)  # run --once: its first connection opens while the plugins and rules load
    try:
        return _configured(args, early)
    finally:
        if early is not None:
            early.close()  # not taken (the file or the lock refused the run); else already closed


def _configured(args: argparse.Namespace, early: SessionPool | None) -> int:
    """The commands that read the rules file (and the plugins) first."""
    from .plugins import PluginError, Registry

    try:
        registry = Registry.load()
    except PluginError as exc:
        print(f"mailrules: plugin error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "plugins":
        return cmd_plugins(registry)

    config = _load_config(args, registry)
    if config is None:
        return EXIT_CONFIG

    if args.command == "check":
        return cmd_check(config, registry, connect=args.connect)
    if args.command == "status":
        return cmd_status(config, _state_dir(args))
    if args.command == "login":
        if args.account not in config.accounts:
            print(f"mailrules: no account named {args.account!r} in {config.path}", file=sys.stderr)
            return EXIT_CONFIG
        from .secrets import login_command

        return login_command(config.accounts[args.account])
    if args.command == "test":
        from .testcmd import test_command

        return test_command(config, registry, args)
    if args.command == "explain":
        from .explain import explain_command

        return explain_command(config, registry, args.account, args.mailbox, args.uid)
    if args.command == "suggest":
        from .suggest import suggest_command

        return suggest_command(config, args)
    if args.command == "apply":
        from .apply import apply_command

        return apply_command(config, registry, _state_dir(args), args)
    if args.command == "undo":
        from .undo import undo_command

        return undo_command(config, registry, _state_dir(args), args)
    if args.command == "history":
        from .history import history_command

        return history_command(config, _state_dir(args), args)
    if args.command == "run":
        from .runcommand import run_command

        if args.rule:
            unknown = [n for n in args.rule if n not in {r.name for r in config.rules}]
            if unknown:
                print(f"mailrules: no rule named {', '.join(map(repr, unknown))} in {config.path}", file=sys.stderr)
                return EXIT_CONFIG
        return run_command(config, registry, _state_dir(args), args, early)
    raise AssertionError(args.command)


def _state_dir(args: argparse.Namespace) -> Path:
    """--state DIR, else the default (`mailrules.state.state_directory`)."""
    from .state import state_directory

    return state_directory(args.state)


def cmd_check(config: Config, registry, *, connect: bool) -> int:
    n_rules = len(config.rules)
    files = ", ".join(config.files) if config.files else config.path
    print(f"{config.path}: OK — {len(config.accounts)} account(s), {n_rules} rule(s) (files: {files})")
    if not connect:
        return EXIT_OK
    from .checks import check_accounts

    return check_accounts(config, registry, out=sys.stdout)


# ---------------------------------------------------------------------- status


def cmd_status(config: Config, directory: Path) -> int:
    from .state import StateError
    from .status import print_status

    try:
        return print_status(config, directory, out=sys.stdout)
    except StateError as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_FAILURE


# ---------------------------------------------------------------------- plugins


def cmd_plugins(registry) -> int:
    for line in registry.describe():
        print(line)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

