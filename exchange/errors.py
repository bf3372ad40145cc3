"""The one error tree of Exchange.

Every failure the exchange layer reports is an :class:`ExchangeError`. The classes are grouped by
the side that raises them, as X-Road's codes are (``Client.*`` for the caller's request,
``Server.ClientProxy.*`` raised by the consumer security server, ``Server.ServerProxy.*`` by the
provider security server), each with its X-Road error code (classic dotted form) and HTTP status.
Each class also says who is at fault (:class:`Fault`: the caller, the peer security server, our
own server, the configuration), which decides how loudly the operator is told
(:func:`log_refusal`) and is independent of the code: an invalid signature is the peer's fault
on both sides, but ``Server.ServerProxy.InvalidSignatureValue`` at the provider and
``Server.ClientProxy.InvalidSignatureValue`` at the consumer.

One handler on each port turns them into responses; the CLI turns them into exit codes. Peers get
the code and a short message; the ``internal`` text goes only to the operator's log, next to the
``detail`` id.

No IO but :func:`log_refusal`'s line in the operator's log.
"""

from __future__ import annotations

import enum
import logging
import uuid
from typing import ClassVar


class Fault(enum.Enum):
    """Who has to act so that the request can succeed."""

    CALLER = "caller"
    """The party asking: an information system, or the client subsystem it calls as (bad
    input, no grant, a closed connection)."""
    PEER = "peer"
    """The other security server: its certificates, signatures, framing or answers."""
    OURS = "ours"
    """This server or its own services: a bug, the message log, the backend behind it."""
    CONFIGURATION = "configuration"
    """The local configuration or the global configuration (outdated, no provider, no key)."""


_LEVELS = {
    Fault.CALLER: logging.INFO,
    Fault.PEER: logging.WARNING,
    Fault.OURS: logging.ERROR,
    Fault.CONFIGURATION: logging.ERROR,
}


class ExchangeError(Exception):
    """Base of all errors the exchange layer raises on purpose."""

    code: ClassVar[str] = "Server.ServerProxy.InternalError"
    status: ClassVar[int] = 500
    fault: ClassVar[Fault] = Fault.OURS

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        internal: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        self.internal = internal or message
        self.detail = str(uuid.uuid4())

    def body(self) -> dict[str, str]:
        """The X-Road REST error body: ``{"type", "message", "detail"}``."""
        return {"type": self.code, "message": self.message, "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def log_refusal(logger: logging.Logger, what: str, err: ExchangeError) -> None:
    """One line for the operator about a refused or failed ``what``, as loud as its fault: the
    caller's at INFO, the peer's at WARNING, ours and the configuration's at ERROR; with the
    ``internal`` reason and the ``detail`` id the caller was given."""
    logger.log(
        _LEVELS[err.fault],
        "%s refused (%s's fault): %s [%s]",
        what,
        err.fault.value,
        err.internal,
        err.detail,
    )


# --- the caller's fault (information system on the consumer side) ------------------------------


class ClientError(ExchangeError):
    code = "Client.BadRequest"
    status = 400
    fault = Fault.CALLER


class InvalidIdentifier(ClientError):
    code = "Client.InvalidIdentifier"


class MissingHeader(ClientError):
    code = "Client.MissingHeader"


class BadRequest(ClientError):
    code = "Client.BadRequest"


class RequestTooLarge(ClientError):
    code = "Client.RequestTooLarge"
    status = 413


class UnknownClient(ClientError):
    """The request names a client subsystem this security server does not host."""

    code = "Client.UnknownClient"
    status = 403


class CallerDisconnected(ClientError):
    """The information system closed its connection before its request body was read whole
    (nobody is left to answer; the refusal is logged)."""

    code = "Client.IncompleteRequest"


class ClientAuthenticationFailed(ClientError):
    """The information system is not registered for the client subsystem it names."""

    code = "Client.SslAuthenticationFailed"
    status = 403


# --- raised by the consumer security server ----------------------------------------------------


class ConsumerServerError(ExchangeError):
    code = "Server.ClientProxy.InternalError"
    status = 500


class OutdatedGlobalConf(ConsumerServerError):
    code = "Server.ClientProxy.OutdatedGlobalConf"
    status = 500
    fault = Fault.CONFIGURATION


class UnknownMember(ConsumerServerError):
    code = "Server.ClientProxy.UnknownMember"
    status = 404
    fault = Fault.CONFIGURATION


class NetworkError(ConsumerServerError):
    code = "Server.ClientProxy.NetworkError"
    status = 502
    fault = Fault.PEER


class ConsumerTimeout(ConsumerServerError):
    code = "Server.ClientProxy.Timeout"
    status = 504
    fault = Fault.PEER


class PeerRefusal(ConsumerServerError):
    """A provider's unsigned refusal, passed on under the provider's ``Server.ServerProxy.*``
    code (see :func:`exchange.server.peer.unsigned_refusal`)."""

    fault = Fault.PEER


class InconsistentResponse(ConsumerServerError):
    code = "Server.ClientProxy.InconsistentResponse"
    status = 502
    fault = Fault.PEER


class ConsumerSslAuthenticationFailed(ConsumerServerError):
    code = "Server.ClientProxy.SslAuthenticationFailed"
    status = 502
    fault = Fault.PEER


class ConsumerInvalidSignature(ConsumerServerError):
    code = "Server.ClientProxy.InvalidSignatureValue"
    status = 502
    fault = Fault.PEER


class ConsumerLogFailed(ConsumerServerError):
    code = "Server.ClientProxy.MessageLogFailed"
    status = 500


class ConsumerTimestampingFailed(ConsumerServerError):
    """Tree heads have not been time-stamped for longer than the configured limit."""

    code = "Server.ClientProxy.TimestampingFailed"
    status = 500


# --- raised by the provider security server ----------------------------------------------------


class ProviderServerError(ExchangeError):
    code = "Server.ServerProxy.InternalError"
    status = 500


class AccessDenied(ProviderServerError):
    code = "Server.ServerProxy.AccessDenied"
    status = 403
    fault = Fault.CALLER


class RateLimited(ProviderServerError):
    code = "Server.ServerProxy.RateLimited"
    status = 429
    fault = Fault.CALLER


class UnknownService(ProviderServerError):
    code = "Server.ServerProxy.UnknownService"
    status = 404
    fault = Fault.CALLER


class ServiceFailed(ProviderServerError):
    code = "Server.ServerProxy.ServiceFailed"
    status = 502


class ServiceTimeout(ProviderServerError):
    code = "Server.ServerProxy.ServiceTimeout"
    status = 504


class SslAuthenticationFailed(ProviderServerError):
    code = "Server.ServerProxy.SslAuthenticationFailed"
    status = 403
    fault = Fault.PEER


class TooManyConnections(ProviderServerError):
    """A peer security server already holds as many connections as this provider allows."""

    code = "Server.ServerProxy.TooManyConnections"
    status = 503
    fault = Fault.PEER


class FrameTimeout(ProviderServerError):
    """A peer security server began an EXM/1 frame and did not send the rest in time."""

    code = "Server.ServerProxy.Timeout"
    status = 408
    fault = Fault.PEER


class InvalidSignatureValue(ProviderServerError):
    code = "Server.ServerProxy.InvalidSignatureValue"
    status = 400
    fault = Fault.PEER


class InvalidMessage(ProviderServerError):
    code = "Server.ServerProxy.InvalidMessage"
    status = 400
    fault = Fault.PEER


class ReplayedMessage(ProviderServerError):
    code = "Server.ServerProxy.ReplayedMessage"
    status = 409
    fault = Fault.CALLER


class StaleMessage(ProviderServerError):
    code = "Server.ServerProxy.StaleMessage"
    status = 400
    fault = Fault.PEER


class ProviderOutdatedGlobalConf(ProviderServerError):
    code = "Server.ServerProxy.OutdatedGlobalConf"
    status = 500
    fault = Fault.CONFIGURATION


class ProviderLogFailed(ProviderServerError):
    code = "Server.ServerProxy.MessageLogFailed"
    status = 500


class ProviderTimestampingFailed(ProviderServerError):
    """Tree heads have not been time-stamped for longer than the configured limit."""

    code = "Server.ServerProxy.TimestampingFailed"
    status = 500


class ShuttingDown(ProviderServerError):
    """The provider security server is stopping and did not process the request (an unsigned
    refusal of a request that crossed its GOAWAY): another provider of the service may take
    it."""

    code = "Server.ServerProxy.ShuttingDown"
    status = 503
    fault = Fault.OURS


# --- local configuration and verification (CLI-facing) ------------------------------------------


class ConfigurationError(ExchangeError):
    """A configuration file, key or anchor is missing or wrong (CLI exit status 2)."""

    code = "Server.ConfigurationError"
    status = 500
    fault = Fault.CONFIGURATION


class VerificationFailed(ExchangeError):
    """A check over stored evidence failed (CLI exit status 1)."""

    code = "Verification.Failed"
    status = 500


class GlobalConfError(ExchangeError):
    """A global configuration was refused (bad signature, wrong instance, rollback, expired)."""

    code = "Server.ClientProxy.InvalidGlobalConf"
    status = 500
    fault = Fault.CONFIGURATION
