"""What every part of the web app raises to refuse a request."""

from __future__ import annotations


class ApiError(Exception):
    """A refusal the client is told about: an HTTP status and one sentence
    (docs/api.md, "Conventions")."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
