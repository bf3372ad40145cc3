"""Errors say whose fault they are (exchange/errors.py), independently of their X-Road code, and
the operator's log line about a refusal is as loud as that fault."""

from __future__ import annotations

import logging

import pytest

from exchange import errors
from exchange.errors import ExchangeError, Fault, log_refusal
from exchange.protocol.frames import FrameError
from exchange.trust.ocsp import CertificateRevoked
from exchange.trust.validation import CertificateError

FAULTS = [
    # the caller: what it sent, what it may not do, that it went away
    pytest.param(errors.MissingHeader, Fault.CALLER, "Client.MissingHeader", id="missing-header"),
    pytest.param(
        errors.CallerDisconnected, Fault.CALLER, "Client.IncompleteRequest", id="caller-gone"
    ),
    pytest.param(
        errors.AccessDenied, Fault.CALLER, "Server.ServerProxy.AccessDenied", id="no-grant"
    ),
    # the peer security server, whichever side reports it
    pytest.param(
        errors.InvalidSignatureValue,
        Fault.PEER,
        "Server.ServerProxy.InvalidSignatureValue",
        id="request-signature",
    ),
    pytest.param(
        errors.ConsumerInvalidSignature,
        Fault.PEER,
        "Server.ClientProxy.InvalidSignatureValue",
        id="response-signature",
    ),
    pytest.param(
        errors.InconsistentResponse,
        Fault.PEER,
        "Server.ClientProxy.InconsistentResponse",
        id="unbound-response",
    ),
    pytest.param(FrameError, Fault.PEER, "Server.ProtocolError", id="framing"),
    pytest.param(
        CertificateError, Fault.PEER, "Server.ServerProxy.InvalidCertificate", id="certificate"
    ),
    # ours
    pytest.param(
        errors.ConsumerLogFailed, Fault.OURS, "Server.ClientProxy.MessageLogFailed", id="log"
    ),
    pytest.param(
        errors.ServiceFailed, Fault.OURS, "Server.ServerProxy.ServiceFailed", id="backend"
    ),
    pytest.param(
        errors.ProviderServerError, Fault.OURS, "Server.ServerProxy.InternalError", id="bug"
    ),
    # the configuration
    pytest.param(
        errors.OutdatedGlobalConf,
        Fault.CONFIGURATION,
        "Server.ClientProxy.OutdatedGlobalConf",
        id="outdated",
    ),
    pytest.param(
        errors.UnknownMember, Fault.CONFIGURATION, "Server.ClientProxy.UnknownMember", id="nobody"
    ),
]


@pytest.mark.parametrize(("cls", "fault", "code"), FAULTS)
def test_each_error_says_whose_fault_it_is_and_keeps_its_code(
    cls: type[ExchangeError], fault: Fault, code: str
) -> None:
    err = cls("m")
    assert (err.fault, err.code) == (fault, code)


def test_an_ocsp_refusal_is_the_peers_on_both_sides() -> None:
    import datetime as dt

    err = CertificateRevoked("revoked", revoked_at=dt.datetime.now(dt.UTC), reason=None)
    consumer_side = err.for_consumer()
    assert (err.fault, consumer_side.fault) == (Fault.PEER, Fault.PEER)
    assert consumer_side.code == "Server.ClientProxy.CertificateRevoked"


@pytest.mark.parametrize(
    ("err", "level"),
    [
        pytest.param(errors.CallerDisconnected("gone"), logging.INFO, id="caller-info"),
        pytest.param(errors.InconsistentResponse("forged"), logging.WARNING, id="peer-warning"),
        pytest.param(errors.ConsumerLogFailed("disk"), logging.ERROR, id="ours-error"),
        pytest.param(errors.OutdatedGlobalConf("old"), logging.ERROR, id="configuration-error"),
    ],
)
def test_a_refusal_is_logged_as_loud_as_its_fault(
    caplog: pytest.LogCaptureFixture, err: ExchangeError, level: int
) -> None:
    logger = logging.getLogger("exchange.test.faults")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        log_refusal(logger, "exchange m-1", err)
    [record] = caplog.records
    assert record.levelno == level and record.exc_info is None
    message = record.getMessage()
    assert f"({err.fault.value}'s fault)" in message
    assert err.detail in message and "exchange m-1 refused" in message
