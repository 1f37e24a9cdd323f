"""Errors that mean "the user asked for something wrong": entry points print them on one line."""


class UserError(Exception):
    """A mistake in the user's input (config, path, name): printed without a traceback, exit 2."""


class RunInterrupted(Exception):
    """A run stopped by a signal (SIGTERM, Ctrl-C) after keeping what it could: printed on one
    line, exit code 128 + the signal's number, as a shell reports a process the signal killed."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
