"""User-facing errors: one line naming the field and the fix; the CLI turns them into exit code 2."""


class UserError(Exception):
    """Bad input from the user (a flag, a file, a config field). The message is one line and says how to fix it."""

    exit_code = 2


def require(cond: bool, message: str) -> None:
    """Raise UserError(message) unless cond."""
    if not cond:
        raise UserError(message)
