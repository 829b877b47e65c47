"""Search commands (search, export, report); filled in by the search package."""


def add_commands(sub, common, positive) -> None:
    return None
