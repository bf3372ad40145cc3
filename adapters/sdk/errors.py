"""The errors an adapter's handler raises; the SDK answers each as JSON or as a SOAP Fault.

REST: ``{"error": code, "message": message}`` with the error's HTTP status. SOAP: a Fault whose
``faultcode`` is ``Client`` for 4xx and ``Server`` for 5xx errors, ``faultstring`` the message
and ``detail/faultDetail`` the code. Anything else a handler raises is logged with an incident id
and answered 500 ``internal_error`` without any detail of what went wrong.
"""

from __future__ import annotations


class AdapterError(Exception):
    """An answer other than success: HTTP ``status``, a stable ``code`` and a ``message``."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(AdapterError):
    """The caller's input is wrong (400)."""

    status = 400
    code = "invalid_input"


class NotFound(AdapterError):
    """The thing asked for does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(AdapterError):
    """The request conflicts with the current state (409)."""

    status = 409
    code = "conflict"
