"""What the user is told: one exception type for everything a user can get wrong, so the CLI can print it as one
line, and `say`, for the notes a run prints on its way."""
import sys
import time

LAST_SAID = [0.0]  # when a line last reached the user (time.monotonic): a search's ticker fills long silences


class AutoplaceError(Exception):
    """Bad input or an unusable environment; the message is shown to the user verbatim."""


def say(message: str) -> None:
    """One line to the user on stderr (stdout carries the search's JSON)."""
    print(f"autoplace: {message}", file=sys.stderr, flush=True)
    LAST_SAID[0] = time.monotonic()
