"""Errors a person reads: one line each, never a traceback.

A leaf module, so that every command-line front end (``smdp.cli`` and
``smdp.client.cli``) raises the same error without importing the other.
"""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""
