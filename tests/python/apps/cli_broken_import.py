"""A module whose import fails: the CLI must report it in one line."""

raise ValueError("boom at import")
