"""Message log entries as the security server writes them (docs/design.md §8).

One entry per exchange per side, including refused and failed ones. The entry holds the signed
request and response (compact JWS), so an auditor can check both signatures; with bodies
logged, the bodies too (base64), so the digests inside the signatures can be checked.

No IO, but for :func:`guarded`'s line in the operator's log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from exchange.errors import ExchangeError
from exchange.protocol.canonical import b64
from exchange.protocol.messages import SignedRequest

log = logging.getLogger("exchange.server")

T = TypeVar("T")


def internal_failure(
    logger: logging.Logger, kind: type[ExchangeError], what: str, exc: BaseException
) -> ExchangeError:
    """A bug of ours (an exception that is not an :class:`ExchangeError`) as the ``kind`` error a
    caller gets: a fixed message, the reason kept as ``internal``; logged for the operator with
    its traceback, the reason and the error's detail id, ``internal error <what>: ...``."""
    err = kind("internal error of the security server", internal=repr(exc))
    logger.error("internal error %s: %s [%s]", what, err.internal, err.detail, exc_info=exc)
    return err


async def guarded(
    rec: ExchangeRecord, exchange: Awaitable[T], internal_error: type[ExchangeError]
) -> T:
    """``exchange``, with any failure that is not an :class:`ExchangeError` (a bug of ours) logged
    with its traceback for the operator and raised as ``internal_error``, without its text, so
    that the caller answers, signs and logs it like every other refusal."""
    try:
        return await exchange
    except ExchangeError:
        raise
    except Exception as exc:
        what = f"in {rec.side} {rec.protocol} exchange {rec.message_id}"
        raise internal_failure(log, internal_error, what, exc) from exc


@dataclass(slots=True)
class ExchangeRecord:
    """Mutable while an exchange is processed; frozen into a dict when logged."""

    side: str
    protocol: str = "rest"
    message_id: str | None = None
    client: str | None = None
    service: str | None = None
    peer_server: str | None = None
    method: str | None = None
    path: str | None = None
    user_id: str | None = None
    purpose: str | None = None
    issue: str | None = None
    represented_party: str | None = None
    request_jws: str | None = None
    response_jws: str | None = None
    request_hash: str | None = None
    request_body: bytes | None = None
    response_body: bytes | None = None
    http_status: int | None = None
    error: ExchangeError | None = None
    decision: dict[str, Any] | None = None
    released_fields: list[str] | None = None
    started_ns: int = 0
    timings: dict[str, int] = field(default_factory=dict)

    def describe(self, request: SignedRequest) -> None:
        """State the request as it was signed (every field an auditor checks against it)."""
        self.protocol = request.protocol
        self.message_id = request.message_id
        self.client = str(request.client)
        self.service = str(request.service)
        self.method = request.method
        self.path = request.path + ("?" + request.query if request.query else "")
        self.user_id = request.user_id
        self.purpose = request.purpose
        self.issue = request.issue
        self.represented_party = request.represented_party

    def mark(self, name: str) -> None:
        """Note the time since the start of the exchange, in µs (logged with the record)."""
        self.timings[name] = (time.perf_counter_ns() - self.started_ns) // 1000

    def fail(self, err: ExchangeError) -> None:
        self.error = err
        self.http_status = err.status

    def to_entry(self, *, with_bodies: bool) -> dict[str, Any]:
        err = self.error
        entry: dict[str, Any] = {
            "side": self.side,
            "message_id": self.message_id,
            "client": self.client,
            "service": self.service,
            "peer_server": self.peer_server,
            "method": self.method,
            "path": self.path,
            "user_id": self.user_id,
            "purpose": self.purpose,
            "issue": self.issue,
            "represented_party": self.represented_party,
            "status": "ok" if err is None else "error",
            "http_status": self.http_status,
            "error": None
            if err is None
            else {
                "type": err.code,
                "message": err.message,
                "detail": err.detail,
                "internal": err.internal,
            },
            "request_jws": self.request_jws,
            "response_jws": self.response_jws,
            "request_hash": self.request_hash,
            "decision": self.decision,
            "released_fields": self.released_fields,
            "timings_us": self.timings,
            "bodies": "logged" if with_bodies else "digests-only",
        }
        if self.protocol != "rest":
            entry["protocol"] = self.protocol
        if with_bodies:
            entry["request_body"] = None if self.request_body is None else b64(self.request_body)
            entry["response_body"] = None if self.response_body is None else b64(self.response_body)
        return entry
