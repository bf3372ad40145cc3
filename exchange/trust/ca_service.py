"""The CA as an HTTP service that issues certificates from PKCS#10 requests, and its client.

- :func:`create_ca_app`: an aiohttp application with ``POST /certificates`` (JSON
  ``{"profile": "auth"|"sign", "identifier": ..., "csr": "<PEM>", "token": "exe1...."}`` in,
  ``201`` JSON ``{"certificate", "serial", "not_after"}`` out), ``GET /ca.pem`` (the CA
  certificate) and ``GET /health``. A request that is not well-formed JSON, names an unknown
  profile, carries a malformed identifier, or a CSR that does not verify or whose key the
  profile does not allow is answered 400 with the X-Road error body
  ``{"type", "message", "detail"}``, never 500; one without a valid enrolment token for exactly
  this profile and identifier is answered 403 (``Client.EnrolmentTokenRequired``,
  ``...InvalidEnrolmentToken``, ``...EnrolmentTokenExpired``, ``...EnrolmentTokenRevoked``,
  ``...EnrolmentTokenMismatch``, ``...EnrolmentTokenUsed``; see ``exchange.trust.enrolment``).
  Every issued certificate is recorded in the CA directory's register
  (:func:`~exchange.trust.revocation.record_in_ca_dir`), so the OCSP responder answers "good".
- :func:`issue_enrolled`: what the service issues: a certificate only against an enrolment
  token's unused grant for that profile and identifier, bound to the CSR's key.
- :func:`issue_requested`: the checks and issuance shared by :func:`issue_enrolled` and
  ``exchange ca sign-csr`` (the CA's operator, offline, who needs no token).
- :func:`check_certificate_for`: what an operator checks before installing a certificate: its
  profile, its identifier, its key and its validity.
- :func:`request_certificate`: the client; it checks what the CA returns with
  :func:`check_certificate_for` before handing it back.

Who may ask for which identifier is decided by the CA's operator, who issues the enrolment
tokens (``exchange ca token issue``) to the operators of the servers and members it has
checked; the service checks a token without trusting the requester (its secret's hash, its
expiry, single use, recorded in the CA directory). The registration workflow at the central
server still decides whether a certificate is of any use. The service listens on loopback by
default. Subject and extensions come from the profile (``exchange.trust.profiles``), never from
the CSR, of which only the public key is used (RFC 2986 §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

import aiohttp
import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from exchange.errors import (
    BadRequest,
    ConfigurationError,
    ExchangeError,
    RequestTooLarge,
)
from exchange.identifiers import MemberId, SecurityServerId, parse_member, parse_security_server
from exchange.trust.ca import CertificateAuthority, InvalidCertificateRequest, csr_public_key
from exchange.trust.enrolment import EnrolmentStore, EnrolmentTokenRequired, parse_token
from exchange.trust.keys import cert_from_pem, cert_pem, fingerprint
from exchange.trust.profiles import (
    AUTH_PROFILE,
    SIGN_PROFILE,
    ProfileName,
    check_auth_profile,
    check_sign_profile,
    member_id_of_signing_cert,
    server_id_of_auth_cert,
)
from exchange.trust.revocation import record_in_ca_dir
from exchange.trust.validation import CertificateError, check_validity, describe
from exchange.utc import utc

__all__ = [
    "CertificateMismatch",
    "CertificateRequest",
    "CertificateRequestFailed",
    "CertificateRequestRefused",
    "Identifier",
    "InvalidCertificateRequest",
    "check_certificate_for",
    "create_ca_app",
    "csr_public_key",
    "issue_enrolled",
    "issue_requested",
    "parse_certificate_request",
    "parse_identifier",
    "request_certificate",
    "running_ca_service",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Identifier = SecurityServerId | MemberId

MAX_REQUEST_BYTES: Final = 64 * 1024
"""A P-256 CSR in PEM is under 1 KiB; this leaves room for other key types to be refused."""
MAX_RESPONSE_BYTES: Final = 64 * 1024
PEM_TYPE: Final = "application/x-pem-file"
_FIELDS: Final = frozenset({"profile", "identifier", "csr"})
_OPTIONAL: Final = frozenset({"token"})
_TITLES: Final[dict[str, str]] = {"auth": AUTH_PROFILE.title, "sign": SIGN_PROFILE.title}


class CertificateRequestFailed(ExchangeError):
    """No certificate came back from the CA service: unreachable, slow, or a bad answer."""

    code = "Server.CertificateRequestFailed"
    status = 502


class CertificateRequestRefused(CertificateRequestFailed):
    """The CA service answered the request with an error; ``remote_type`` is its error type."""

    code = "Server.CertificateRequestRefused"

    def __init__(self, message: str, *, remote_type: str) -> None:
        super().__init__(message)
        self.remote_type = remote_type


class CertificateMismatch(ConfigurationError):
    """A certificate is not the one wanted: other profile, identifier or key, or not valid now."""

    code = "Server.CertificateMismatch"


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """A parsed request: which profile, for which identifier, the PEM PKCS#10 request, and the
    enrolment token that allows it (None from the CA's own operator, offline)."""

    profile: ProfileName
    identifier: Identifier
    csr_pem: bytes
    token: str | None = None


# --- the sans-IO part: parsing, issuing, checking ----------------------------------------------


def parse_identifier(profile: str, text: str) -> Identifier:
    """The identifier a ``profile`` certificate is issued to: a security server id for ``auth``,
    a member id for ``sign``. :class:`InvalidCertificateRequest` for an unknown profile,
    :class:`~exchange.errors.InvalidIdentifier` for a malformed identifier."""
    if profile == "auth":
        return parse_security_server(text)
    if profile == "sign":
        return parse_member(text)
    known = ", ".join(get_args(ProfileName))
    raise InvalidCertificateRequest(f"unknown certificate profile {profile!r}; use one of {known}")


def parse_certificate_request(body: bytes) -> CertificateRequest:
    """Parse the JSON body of ``POST /certificates``; any input parses or raises a ClientError."""
    # (1) a JSON object with the three fields and the token, nothing else
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    if unknown := sorted(set(doc) - _FIELDS - _OPTIONAL):
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}")
    for name in sorted(_FIELDS | (_OPTIONAL & set(doc))):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise BadRequest(f"field {name!r} must be a non-empty string")
    # (2) a known profile and an identifier of the kind that profile is issued to
    identifier = parse_identifier(doc["profile"], doc["identifier"])
    profile: ProfileName = "auth" if doc["profile"] == "auth" else "sign"
    # (3) the CSR itself is checked when issuing (ca.issue_from_csr, RFC 2986 §3), the token
    # when it is redeemed (issue_enrolled)
    return CertificateRequest(profile, identifier, doc["csr"].encode("utf-8"), doc.get("token"))


def issue_requested(
    ca: CertificateAuthority,
    ca_dir: str | Path,
    request: CertificateRequest,
    *,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """Issue the certificate ``request`` asks for and record it in ``ca_dir``'s register.

    The CSR must parse, its self-signature verify and its key be an EC key (P-256 for ``sign``),
    else :class:`InvalidCertificateRequest`. Blocking (SQLite).
    """
    cert = ca.issue_from_csr(
        request.csr_pem, request.profile, request.identifier, days=days, now=now
    )
    record_in_ca_dir(ca_dir, cert, request.profile)
    return cert


def issue_enrolled(
    ca: CertificateAuthority,
    ca_dir: str | Path,
    request: CertificateRequest,
    *,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """Issue what ``request`` asks for only against its enrolment token (``exchange.trust.
    enrolment``): a grant for this profile and identifier, unused or used by this same key.

    :class:`~exchange.trust.enrolment.EnrolmentRefused` subclasses say why not. Blocking.
    """
    # (1) a token at all
    if request.token is None:
        raise EnrolmentTokenRequired(
            f"an enrolment token is required for a {request.profile} certificate for "
            f"{request.identifier}; the CA's operator issues one with 'exchange ca token issue'"
        )
    # (2) the key the certificate will be for (the CSR's self-signature verifies)
    public_key = csr_public_key(request.csr_pem)
    # (3) the token allows it; issued and recorded with the grant in one transaction
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        return store.redeem(
            request.token,
            request.profile,
            request.identifier,
            public_key,
            now=now,
            issue=lambda: issue_requested(ca, ca_dir, request, days=days, now=now),
        )


def check_certificate_for(
    cert: x509.Certificate,
    profile: ProfileName,
    identifier: Identifier,
    public_key: CertificatePublicKeyTypes,
    now: dt.datetime,
) -> None:
    """Raise :class:`CertificateMismatch` unless ``cert`` is a ``profile`` certificate issued to
    ``identifier`` for ``public_key`` and valid at ``now``. The issuer is not checked here."""
    what = f"{describe(cert)} (serial {cert.serial_number:x})"
    try:
        # (1) the profile: an auth cert is never taken for signing, nor a signing cert for TLS
        holder = _holder(cert, profile)
        # (2) valid now (RFC 5280 §4.1.2.5)
        check_validity(cert, now)
    except CertificateError as exc:
        raise CertificateMismatch(f"{what}: {exc.message}") from None
    # (3) issued to this identifier (the SAN URI, exchange.trust.profiles)
    if holder != identifier:
        raise CertificateMismatch(f"{what} was issued to {holder}, not to {identifier}")
    # (4) for this key: whoever holds the private key is who the certificate names
    if cert.public_key() != public_key:
        raise CertificateMismatch(f"{what} is for another key than {_TITLES[profile]}'s key here")


def _holder(cert: x509.Certificate, profile: ProfileName) -> Identifier:
    if profile == "auth":
        check_auth_profile(cert)
        return server_id_of_auth_cert(cert)
    check_sign_profile(cert)
    return member_id_of_signing_cert(cert)


# --- the service -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Issuer:
    ca: CertificateAuthority
    ca_dir: Path
    days_auth: int
    days_sign: int
    clock: Clock

    def issue(self, request: CertificateRequest) -> x509.Certificate:
        days = self.days_auth if request.profile == "auth" else self.days_sign
        return issue_enrolled(self.ca, self.ca_dir, request, days=days, now=utc(self.clock()))


ISSUER_KEY: Final = web.AppKey("ca_issuer", _Issuer)
EXECUTOR_KEY: Final = web.AppKey("ca_executor", ThreadPoolExecutor)


def create_ca_app(
    ca: CertificateAuthority,
    ca_dir: str | Path,
    *,
    days_auth: int = 365,
    days_sign: int = 365,
    clock: Clock = time.time,
) -> web.Application:
    """The CA service for ``ca``, recording what it issues in ``ca_dir``'s register."""
    if days_auth < 1 or days_sign < 1:
        raise ConfigurationError("certificates must be valid for at least one day")
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_error_middleware])
    app[ISSUER_KEY] = _Issuer(ca, Path(ca_dir), days_auth, days_sign, clock)
    app.cleanup_ctx.append(_executor_ctx)
    app.router.add_post("/certificates", handle_issue)
    app.router.add_get("/ca.pem", handle_ca_pem)
    app.router.add_get("/health", handle_health)
    return app


async def _executor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Issuing and recording (SQLite) run on one worker thread, off the event loop."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ca-service")
    app[EXECUTOR_KEY] = executor
    try:
        yield
    finally:
        executor.shutdown(wait=True)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ExchangeErrors become X-Road error bodies; anything unexpected is logged and a 500."""
    try:
        return await handler(request)
    except ExchangeError as exc:
        level = logging.ERROR if exc.status >= 500 else logging.INFO
        logger.log(level, "certificate request refused: %s (detail %s)", exc.internal, exc.detail)
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException:
        raise
    except Exception:
        failure = ExchangeError("the CA failed to issue the certificate; see its log")
        logger.exception("CA service failed (detail %s)", failure.detail)
        return web.json_response(failure.body(), status=500)


async def handle_issue(request: web.Request) -> web.Response:
    """``POST /certificates``: issue from a CSR; 201 with the certificate."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(f"the request exceeds {MAX_REQUEST_BYTES} bytes") from None
    parsed = parse_certificate_request(body)
    issuer = request.app[ISSUER_KEY]
    loop = asyncio.get_running_loop()
    cert = await loop.run_in_executor(request.app[EXECUTOR_KEY], issuer.issue, parsed)
    assert parsed.token is not None
    logger.info(
        "issued %s certificate serial %x to %s (sha256 %s) against enrolment token %s",
        parsed.profile,
        cert.serial_number,
        parsed.identifier,
        fingerprint(cert),
        parse_token(parsed.token)[0],
    )
    return web.json_response(
        {
            "certificate": cert_pem(cert),
            "serial": f"{cert.serial_number:x}",
            "not_after": cert.not_valid_after_utc.isoformat(),
        },
        status=201,
    )


async def handle_ca_pem(request: web.Request) -> web.Response:
    """``GET /ca.pem``: the CA certificate that issued (and will issue) the certificates."""
    return web.Response(text=cert_pem(request.app[ISSUER_KEY].ca.cert), content_type=PEM_TYPE)


async def handle_health(request: web.Request) -> web.Response:
    ca = request.app[ISSUER_KEY].ca.cert
    return web.json_response({"status": "ok", "ca": describe(ca), "ca_sha256": fingerprint(ca)})


@contextlib.asynccontextmanager
async def running_ca_service(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[int]:
    """Serve ``app`` on ``host``:``port`` (``0``: a free port) while in the block; yields the
    bound port, and cleans up (closing the worker thread) on leaving."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
        logger.info("CA service listening on %s:%d", host, bound)
        yield bound
    finally:
        await runner.cleanup()


# --- the client --------------------------------------------------------------------------------


async def request_certificate(
    url: str,
    profile: ProfileName,
    identifier: Identifier,
    csr_pem: bytes,
    *,
    token: str | None,
    timeout: float = 10.0,
) -> x509.Certificate:
    """Ask the CA service at ``url`` for a ``profile`` certificate for the key in ``csr_pem``,
    showing the enrolment ``token`` the CA's operator issued for it.

    The certificate returned is checked with :func:`check_certificate_for` against the request
    (profile, identifier, the CSR's key, valid now). :class:`CertificateRequestRefused` if the CA
    refuses, :class:`CertificateRequestFailed` for anything else that gives no such certificate.
    """
    public_key = csr_public_key(csr_pem)
    endpoint = url.rstrip("/") + "/certificates"
    payload = {"profile": profile, "identifier": str(identifier), "csr": csr_pem.decode("ascii")}
    if token is not None:
        payload["token"] = token
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(endpoint, json=payload) as response,
        ):
            status, body = response.status, await _read_bounded(response, endpoint)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise CertificateRequestFailed(
            f"the CA service at {endpoint} could not be reached ({type(exc).__name__}: {exc}); "
            "check the URL and that 'exchange ca serve' is running there"
        ) from None
    cert = _certificate_of(status, body, endpoint, f"{profile} certificate for {identifier}")
    try:
        check_certificate_for(cert, profile, identifier, public_key, dt.datetime.now(dt.UTC))
    except CertificateMismatch as exc:
        raise CertificateRequestFailed(
            f"the CA at {endpoint} sent a wrong certificate: {exc.message}"
        ) from None
    return cert


async def _read_bounded(response: aiohttp.ClientResponse, endpoint: str) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(8192):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise CertificateRequestFailed(f"{endpoint} sent more than {MAX_RESPONSE_BYTES} bytes")
    return bytes(body)


def _certificate_of(status: int, body: bytes, endpoint: str, wanted: str) -> x509.Certificate:
    doc = _json_object(body)
    if status != 201:
        remote_type = str(doc.get("type", f"HTTP {status}"))
        message = str(doc.get("message", "no reason given"))
        raise CertificateRequestRefused(
            f"the CA at {endpoint} refused the {wanted}: {message} ({remote_type})",
            remote_type=remote_type,
        )
    try:
        return cert_from_pem(str(doc["certificate"]))
    except (KeyError, ValueError):
        raise CertificateRequestFailed(
            f"the CA at {endpoint} answered 201 without a PEM certificate for the {wanted}"
        ) from None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
