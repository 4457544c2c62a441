"""Migration into mailrules: `mailrules import sieve FILE` and `mailrules import gmail FILE`.

Each importer reads its format into plain rule mappings (`emit.Rule`), the same keys a person
writes in a rules file, and `emit` writes them as commented YAML. What has no equivalent is
collected as `emit.Skipped` (with its line) and listed on stderr; `command` turns that into the
exit status (1 when anything was skipped). docs/switching.md describes the conversions.
"""
