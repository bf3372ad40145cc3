"""Why an exchange did not give the clerk an answer, in words a clerk can tell a citizen.

Each message names what happened and what to do; the X-Road error code (or the HTTP status
when the ministry's own service refused) and the message id go with it for the help desk.
Messages are English source strings, translated where they are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from examples.window.i18n import N_
from examples.window.xroad import UNREACHABLE, Answer

_BY_CODE: Final = {
    "Server.ServerProxy.AccessDenied": N_(
        "The ministry has not allowed this window to use this service. Nothing was done."
    ),
    "Server.ServerProxy.AccessDenied.PurposeNotAllowed": N_(
        "The ministry does not accept this purpose of use from this window. Nothing was done."
    ),
    "Server.ServerProxy.AccessDenied.GrantExpired": N_(
        "The agreement with the ministry for this service has expired. Nothing was done."
    ),
    "Server.ServerProxy.AccessDenied.GrantNotYetValid": N_(
        "The agreement with the ministry for this service is not in force yet. Nothing was done."
    ),
    "Server.ServerProxy.RateLimited": N_(
        "The ministry's limit of requests from this window is reached for now. "
        "Please try again in a minute."
    ),
    "Server.ServerProxy.UnknownService": N_(
        "The ministry does not offer this service (any more). Nothing was done."
    ),
    "Server.ClientProxy.UnknownMember": N_(
        "The ministry's service cannot be found in the exchange. Please call the help desk."
    ),
    "Server.ClientProxy.OutdatedGlobalConf": N_(
        "The post office's security server is not up to date. Please call the help desk."
    ),
    UNREACHABLE: N_(
        "The post office's security server does not answer. Please call the help desk."
    ),
}
_UNAVAILABLE: Final = N_("The ministry's service is not available now. Please try again later.")
_UNCERTAIN: Final = N_(
    "No answer came from the ministry, so it is not known whether this was done. Press the "
    "same button again: the same request is sent with the same key and is never done twice."
)
_EXCHANGE: Final = N_("The exchange failed. Please call the help desk.")
_BY_STATUS: Final = {
    400: N_("The ministry could not accept these details. Please check them."),
    404: N_("The ministry has no record for this."),
    409: N_("The ministry refused: this was done already."),
    422: N_("This request was already made with different details. Send the first details again."),
}


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal to show: message (an English source string), code, message id, and the
    ministry's own explanation where its service gave one (shown as text)."""

    message: str
    code: str
    message_id: str | None = None
    detail: str | None = None
    retry_after: str | None = None


def explain(answer: Answer, *, changes_something: bool = False) -> Problem:
    """The problem an answer that is not ``ok`` stands for."""
    code = answer.error_code
    if changes_something and answer.uncertain:
        return Problem(_UNCERTAIN, code or f"HTTP {answer.status}", answer.message_id,
                       _backend_message(answer.body), answer.retry_after)  # fmt: skip
    if code is not None:
        message = _BY_CODE.get(code) or _by_family(code)
        return Problem(message, code, answer.message_id, None, answer.retry_after)
    status = answer.status or 0
    detail = _backend_message(answer.body)
    message = _UNAVAILABLE if status >= 500 else _BY_STATUS.get(status, _BY_STATUS[400])
    return Problem(message, f"HTTP {status}", answer.message_id, detail)


def _by_family(code: str) -> str:
    if code.startswith("Server.ServerProxy.AccessDenied"):
        return _BY_CODE["Server.ServerProxy.AccessDenied"]
    if code.startswith(("Server.ServerProxy.Service", "Server.ClientProxy.Network",
                        "Server.ClientProxy.Timeout")):  # fmt: skip
        return _UNAVAILABLE
    return _EXCHANGE


def _backend_message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return None
