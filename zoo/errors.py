"""Errors that mean "the user asked for something wrong": entry points print them on one line."""


class UserError(Exception):
    """A mistake in the user's input (config, path, name): printed without a traceback, exit 2."""
