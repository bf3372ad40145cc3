"""The consumer-side REST protocol, X-Road message protocol for REST r1 (PR-REST §4; docs/design.md
§4).

Parses the request line and headers an information system sends to its security server, and says
which headers travel end to end. The path after the service code and the query are kept exactly
as received (percent-encoded): the provider appends them to the backend base URL unchanged, and
the provider's policy works on its own normalised copy.

No IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

import uuid_utils

from exchange.errors import BadRequest, InvalidIdentifier, MissingHeader
from exchange.identifiers import (
    ClientId,
    SecurityServerId,
    ServiceId,
    parse_client,
    parse_security_server,
    parse_service,
)
from exchange.protocol import fields, forwarding
from exchange.protocol.fields import FieldError
from exchange.protocol.syntax import is_path, is_query

PROTOCOL_VERSION: Final = "r1"
MAX_URI_LENGTH: Final = 8192

H_CLIENT: Final = "x-road-client"
H_SERVICE: Final = "x-road-service"
H_ID: Final = "x-road-id"
H_USER_ID: Final = "x-road-userid"
H_ISSUE: Final = "x-road-issue"
H_REPRESENTED_PARTY: Final = "x-road-represented-party"
H_SECURITY_SERVER: Final = "x-road-security-server"
H_PURPOSE: Final = "x-road-purpose"
H_REQUEST_ID: Final = "x-road-request-id"
H_REQUEST_HASH: Final = "x-road-request-hash"
H_ERROR: Final = "x-road-error"

_XROAD_PREFIX: Final = "x-road-"


@dataclass(frozen=True, slots=True)
class RestRequestTarget:
    """What the request line names: the service, and the rest of the path and query, raw."""

    service: ServiceId
    path: str
    query: str


class XRoadHeaders(NamedTuple):
    client: ClientId
    message_id: str
    message_id_generated: bool
    user_id: str | None
    issue: str | None
    represented_party: str | None
    security_server: SecurityServerId | None
    purpose: str | None


def new_message_id() -> str:
    """A message id for a request whose information system sent no ``X-Road-Id``: a UUIDv7.

    RFC 9562 §5.7: 48 bits of Unix milliseconds, then 74 random bits, so ids are unique without
    coordination as version 4 ids are, but sort by creation time. Both message logs index
    ``message_id``; a time-ordered id lands at the end of that index instead of on a random
    page, so each group commit writes and syncs fewer pages (RFC 9562 §2.1 names the "poor
    database index locality" of random ids). The time it reveals is in the signed request too.
    """
    return str(uuid_utils.uuid7())


def parse_target(raw_path: str, query: str) -> RestRequestTarget:
    """Split ``/r1/INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/path]`` (raw, percent-encoded)."""
    if len(raw_path) + len(query) > MAX_URI_LENGTH:
        raise BadRequest(f"request URI longer than {MAX_URI_LENGTH} characters", status=414)
    parts = raw_path.split("/")
    if len(parts) < 2 or parts[0] != "" or parts[1] != PROTOCOL_VERSION:
        raise BadRequest(
            f"unsupported protocol: the path must start with /{PROTOCOL_VERSION}/",
            code="Client.InvalidProtocolVersion",
        )
    if len(parts) < 7:
        raise InvalidIdentifier(
            "the path must name a service: /r1/INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE[/path]",
            code="Client.InvalidServiceIdentifier",
        )
    service = parse_service(
        "/".join(parts[2:7]), encoded=True, code="Client.InvalidServiceIdentifier"
    )
    rest = parts[7:]
    path = "/" + "/".join(rest) if rest else ""
    if not is_path(path) or not is_query(query):
        raise BadRequest(
            "the path or query holds characters that must be percent-encoded "
            "(spaces, controls, '#', non-ASCII)",
            code="Client.BadRequest",
        )
    return RestRequestTarget(service=service, path=path, query=query)


def parse_method(method: str) -> str:
    """The request's method, by the same rule the provider applies (``Client.BadRequest``)."""
    try:
        return fields.method(method)
    except FieldError as exc:
        raise BadRequest(str(exc), code="Client.BadRequest") from None


def parse_xroad_headers(headers: Iterable[tuple[str, str]]) -> XRoadHeaders:
    """Read the X-Road headers (names case-insensitive; if repeated, the last wins).

    Each field passes the rule of :mod:`exchange.protocol.fields` that the provider applies to
    the signed request; an empty ``X-Road-Id`` is replaced by a new id, any other empty header
    counts as absent.
    """
    seen: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if lname.startswith(_XROAD_PREFIX):
            seen[lname] = value
    raw_client = seen.get(H_CLIENT)
    if raw_client is None or not raw_client.strip():
        raise MissingHeader("the X-Road-Client header is required", code="Client.MissingHeader")
    client = parse_client(raw_client.strip(), encoded=True, code="Client.InvalidClientIdentifier")
    # an absent or empty header is no value; a broken field rule is the caller's error,
    # Client.InvalidHeader, naming the header (``header``: the one being read)
    raw_id = seen.get(H_ID) or None
    header = "X-Road-Id"
    try:
        message_id = fields.message_id(raw_id) if raw_id is not None else new_message_id()
        header = "X-Road-UserId"
        user_id = fields.optional_text(seen.get(H_USER_ID) or None, "user id")
        header = "X-Road-Issue"
        issue = fields.optional_text(seen.get(H_ISSUE) or None, "issue")
        header = "X-Road-Represented-Party"
        represented = fields.optional_represented_party(seen.get(H_REPRESENTED_PARTY) or None)
        header = "X-Road-Purpose"
        purpose = fields.optional_text(seen.get(H_PURPOSE) or None, "purpose")
    except FieldError as exc:
        raise BadRequest(f"invalid {header} header: {exc}", code="Client.InvalidHeader") from None
    server = seen.get(H_SECURITY_SERVER)
    return XRoadHeaders(
        client=client,
        message_id=message_id,
        message_id_generated=raw_id is None,
        user_id=user_id,
        issue=issue,
        represented_party=represented,
        security_server=(
            parse_security_server(server, encoded=True, code="Client.InvalidHeader")
            if server
            else None
        ),
        purpose=purpose,
    )


def end_to_end_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers that travel unchanged (:func:`exchange.protocol.forwarding.end_to_end`), as
    ``(name, value)`` pairs; a header that is not text is ``Client.InvalidHeader``."""
    try:
        return forwarding.end_to_end(headers)
    except FieldError as exc:
        raise BadRequest(str(exc), code="Client.InvalidHeader") from None
