"""The window's one way out: X-Road REST (r1) calls to the post office's own security server.

Every exchange goes through :meth:`ConsumerClient.call`, which sets the headers the contract
asks for (``X-Road-Client``, ``X-Road-UserId`` = the clerk, ``X-Road-Purpose``, a fresh
UUIDv7 ``X-Road-Id``, and an ``Idempotency-Key`` where the operation has one) and writes the
exchange into the clerk's history before the answer is used. It never talks to a ministry:
its only address is the consumer URL it was given.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import uuid_utils
from yarl import URL

from examples.window.records import ExchangeRecord

UNREACHABLE: Final = "Window.SecurityServerUnreachable"
"""Our own code (not X-Road's) for "the post office's security server did not answer"."""
MAX_ANSWER_BYTES: Final = 1 * 2**20

Recorder = Callable[[str, ExchangeRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Request:
    """One call: a service (``INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE``) and what follows it."""

    service: str
    method: str = "GET"
    path: tuple[str, ...] = ()
    query: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    national_id: str | None = None

    def target(self) -> str:
        parts = "".join("/" + quote(part, safe="") for part in self.path)
        query = "?" + urlencode(self.query) if self.query else ""
        return f"/r1/{self.service}{parts}{query}"


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back. ``status`` is None when our security server could not be reached."""

    status: int | None
    body: Any
    message_id: str
    error_code: str | None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error_code is None

    @property
    def uncertain(self) -> bool:
        """No definite answer: the ministry may or may not have acted (retry with the same key)."""
        return self.status is None or self.status >= 500


class ConsumerClient:
    """Calls through the consumer port at ``base_url`` as client subsystem ``client``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        client: str,
        purpose: str,
        record: Recorder,
        timeout: float,
        clock: Callable[[], float] = time.time,
        services: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._client = client
        self._purpose = purpose
        self._record = record
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._services = dict(services or {})

    async def call(self, clerk: str, request: Request) -> Answer:
        """One exchange, recorded in ``clerk``'s history whatever its outcome."""
        service = self._services.get(request.service, request.service)
        request = dataclasses.replace(request, service=service)
        message_id = str(uuid_utils.uuid7())
        headers = {
            "X-Road-Client": self._client,
            "X-Road-UserId": clerk,
            "X-Road-Purpose": self._purpose,
            "X-Road-Id": message_id,
            "Accept": "application/json",
        }
        if request.idempotency_key is not None:
            headers["Idempotency-Key"] = request.idempotency_key
        data = None
        if request.body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(dict(request.body))
        started = self._clock()
        answer = await self._send(request, headers, data, message_id)
        await self._record(
            clerk,
            ExchangeRecord(
                at=started,
                message_id=answer.message_id,
                service=request.service,
                method=request.method,
                status=answer.status,
                error_code=answer.error_code,
                national_id=request.national_id,
            ),
        )
        return answer

    async def call_until_certain(self, clerk: str, request: Request, retries: int) -> Answer:
        """``call``, again up to ``retries`` times while the outcome is uncertain (each time a
        new message id, the same body and ``Idempotency-Key``)."""
        answer = await self.call(clerk, request)
        for _ in range(retries):
            if not answer.uncertain:
                break
            answer = await self.call(clerk, request)
        return answer

    async def _send(
        self, request: Request, headers: dict[str, str], data: bytes | None, message_id: str
    ) -> Answer:
        url = URL(self._base + request.target(), encoded=True)
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=data, timeout=self._timeout,
                allow_redirects=False,
            ) as resp:  # fmt: skip
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                return Answer(
                    status=resp.status,
                    body=_json(raw, resp.content_type) if len(raw) <= MAX_ANSWER_BYTES else None,
                    message_id=message_id,
                    error_code=resp.headers.get("X-Road-Error"),
                    retry_after=resp.headers.get("Retry-After"),
                )
        except (TimeoutError, aiohttp.ClientError, OSError):
            return Answer(status=None, body=None, message_id=message_id, error_code=UNREACHABLE)


def _json(raw: bytes, content_type: str) -> Any:
    if content_type != "application/json" and not content_type.endswith("+json"):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
