"""The one error tree of Exchange.

Every failure the exchange layer reports is an :class:`ExchangeError`. Subclasses are split by who
is at fault (the caller, the consumer security server, the provider security server, the local
configuration, a verification), each with its X-Road error code (classic dotted form) and HTTP
status. One middleware on each server turns them into responses; the CLI turns them into exit
codes. Peers get the code and a short message; the ``internal`` text goes only to the operator's
log, next to the ``detail`` id.

This module does no IO.
"""

from __future__ import annotations

import uuid
from typing import ClassVar


class ExchangeError(Exception):
    """Base of all errors the exchange layer raises on purpose."""

    code: ClassVar[str] = "Server.ServerProxy.InternalError"
    status: ClassVar[int] = 500

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


# --- the caller's fault (information system on the consumer side) ------------------------------


class ClientError(ExchangeError):
    code = "Client.BadRequest"
    status = 400


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


class UnknownMember(ConsumerServerError):
    code = "Server.ClientProxy.UnknownMember"
    status = 404


class NetworkError(ConsumerServerError):
    code = "Server.ClientProxy.NetworkError"
    status = 502


class ConsumerTimeout(ConsumerServerError):
    code = "Server.ClientProxy.Timeout"
    status = 504


class InconsistentResponse(ConsumerServerError):
    code = "Server.ClientProxy.InconsistentResponse"
    status = 502


class ConsumerSslAuthenticationFailed(ConsumerServerError):
    code = "Server.ClientProxy.SslAuthenticationFailed"
    status = 502


class ConsumerInvalidSignature(ConsumerServerError):
    code = "Server.ClientProxy.InvalidSignatureValue"
    status = 502


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


class RateLimited(ProviderServerError):
    code = "Server.ServerProxy.RateLimited"
    status = 429


class UnknownService(ProviderServerError):
    code = "Server.ServerProxy.UnknownService"
    status = 404


class ServiceFailed(ProviderServerError):
    code = "Server.ServerProxy.ServiceFailed"
    status = 502


class ServiceTimeout(ProviderServerError):
    code = "Server.ServerProxy.ServiceTimeout"
    status = 504


class SslAuthenticationFailed(ProviderServerError):
    code = "Server.ServerProxy.SslAuthenticationFailed"
    status = 403


class TooManyConnections(ProviderServerError):
    """A peer security server already holds as many connections as this provider allows."""

    code = "Server.ServerProxy.TooManyConnections"
    status = 503


class InvalidSignatureValue(ProviderServerError):
    code = "Server.ServerProxy.InvalidSignatureValue"
    status = 400


class InvalidMessage(ProviderServerError):
    code = "Server.ServerProxy.InvalidMessage"
    status = 400


class ReplayedMessage(ProviderServerError):
    code = "Server.ServerProxy.ReplayedMessage"
    status = 409


class StaleMessage(ProviderServerError):
    code = "Server.ServerProxy.StaleMessage"
    status = 400


class ProviderOutdatedGlobalConf(ProviderServerError):
    code = "Server.ServerProxy.OutdatedGlobalConf"
    status = 500


class ProviderLogFailed(ProviderServerError):
    code = "Server.ServerProxy.MessageLogFailed"
    status = 500


class ProviderTimestampingFailed(ProviderServerError):
    """Tree heads have not been time-stamped for longer than the configured limit."""

    code = "Server.ServerProxy.TimestampingFailed"
    status = 500


# --- local configuration and verification (CLI-facing) ------------------------------------------


class ConfigurationError(ExchangeError):
    """A configuration file, key or anchor is missing or wrong (CLI exit status 2)."""

    code = "Server.ConfigurationError"
    status = 500


class VerificationFailed(ExchangeError):
    """A check over stored evidence failed (CLI exit status 1)."""

    code = "Verification.Failed"
    status = 500


class GlobalConfError(ExchangeError):
    """A global configuration was refused (bad signature, wrong instance, rollback, expired)."""

    code = "Server.ClientProxy.InvalidGlobalConf"
    status = 500
