"""The exchange layer's SOAP Faults, as each side answers them (SOAP 1.1 §6.2, PR-MESS §2.5).

The provider's fault goes into its signed response: HTTP 500 and only the SOAP content type, in
the lower case of every signed header; the code travels as the signed ``error_type``, not as a
header. The consumer's fault goes to the information system: HTTP 500, ``Content-Type`` and
``X-Road-Error``. Both carry the same envelope.
"""

from __future__ import annotations

import pytest

from exchange.errors import AccessDenied, ExchangeError, RequestTooLarge
from exchange.protocol import soap
from exchange.server.soap_consumer import fault_response
from exchange.server.soap_provider import fault_answer

ERRORS = [
    pytest.param(AccessDenied("no grant for this client"), id="access-denied"),
    pytest.param(RequestTooLarge("request body of 9 bytes exceeds 8"), id="too-large"),
    pytest.param(
        ExchangeError("bad \x00 text", code="Server.ServerProxy.ServiceFailed", status=502),
        id="not-xml-text",
    ),
]


@pytest.mark.parametrize("err", ERRORS)
def test_the_providers_fault_is_500_with_only_the_soap_content_type(err: ExchangeError) -> None:
    envelope = soap.fault_envelope(err.code, err.message, err.detail)
    assert fault_answer(err) == (500, [("content-type", "text/xml; charset=utf-8")], envelope)


@pytest.mark.parametrize("err", ERRORS)
def test_the_consumers_fault_is_500_with_x_road_error(err: ExchangeError) -> None:
    response = fault_response(err)
    assert response.status == 500
    assert list(response.headers.items()) == [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("X-Road-Error", err.code),
    ]
    assert response.body == soap.fault_envelope(err.code, err.message, err.detail)
