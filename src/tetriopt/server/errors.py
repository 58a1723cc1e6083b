"""API errors in the OpenAI error shape: {"error": {"message", "type", "param", "code"}}.

OpenAI clients read `error.message` and map the status code to an exception class, so every
refusal (bad field, auth, overload, drain) goes through this one type.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(param: str, value: Any, reason: str, code: str = "invalid_value", status: int = 400) -> ApiError:
    """A 400 naming the field and the value it got."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ApiError(status, f"{param}: {reason} (got {shown})", param=param, code=code)
