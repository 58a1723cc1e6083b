"""One error type for bad input, so every entry point can name the field and value."""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """Bad user input: carries the offending field and value for a one-line message."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {value!r})")
