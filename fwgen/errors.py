"""The one error type fwgen raises for bad input: a message with a source location."""

from __future__ import annotations

from typing import NamedTuple


class Location(NamedTuple):
    """A place in a source file; line and column are 1-based, as editors count."""

    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


class PolicyError(Exception):
    """Bad input. The CLI prints ``str(error)`` as one line and exits 1."""

    def __init__(self, location: Location | None, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message
        # the include entries that reached the file of ``location``, innermost first
        self.via: tuple[Location, ...] = ()

    def __str__(self) -> str:
        # One line, always: values echoed from a policy may hold newlines or escapes.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.message)
        if self.location is None:
            return message
        chain = "".join(f", from {where}" if k else f" (included from {where}" for k, where in enumerate(self.via))
        return f"{self.location}: {message}{chain}{')' if chain else ''}"


def shorten(value: str, limit: int = 60) -> str:
    """A policy value as echoed in an error message: long ones are cut."""
    return value if len(value) <= limit else value[: limit - 3] + "..."
