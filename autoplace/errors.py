"""One exception type for everything a user can get wrong, so the CLI can print it as one line."""


class AutoplaceError(Exception):
    """Bad input or an unusable environment; the message is shown to the user verbatim."""
