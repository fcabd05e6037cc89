"""Errors a user can cause. The CLIs print these as one line and exit non-zero."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (name, file, option), not a bug in the toolkit."""

    exit_code = 2


class ExportFailed(UserError):
    """The model could not be exported or the written graph failed verification."""

    exit_code = 3
