"""The command line's exit codes (the rules-format spec's): the same for every command."""

EXIT_OK = 0  # done
EXIT_FAILURE = 1  # a failure at run time (a connection, an action, the state)
EXIT_CONFIG = 2  # unusable input: the rules file, an option, a plugin
