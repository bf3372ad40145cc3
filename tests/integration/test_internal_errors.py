"""A bug of ours inside a running security server tells the caller nothing about itself.

THREAT_MODEL.md §6, "Internal details leak to the caller". A genuinely unexpected exception (a
``RuntimeError`` with a distinctive secret message, raised by a piece that is neither crypto nor
storage nor network: the helper that builds the signed request on the consumer, the access
policy's evaluation on the provider, the ``/health`` and ``/listClients`` answers) is made to
happen inside the real in-process servers of :mod:`tests.integration.conftest`. For each, the
caller gets the exact code and status, a body in the X-Road error format (JSON for REST, a SOAP
Fault for ``POST /``) with no traceback, no exception class, no file path and not the secret;
the ``detail`` id of that body is in the operator's log next to the real reason; the exchange is
in the message log when it is an exchange; and once the fault is gone, a normal exchange of the
same kind succeeds.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

import exchange
from exchange.errors import ExchangeError
from exchange.identifiers import SecurityServerId, parse_subsystem
from exchange.server import consumer as consumer_side
from exchange.server import metadata, soap_consumer
from exchange.server import provider as provider_side
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.support import (
    PERSONS,
    as_registered_peer,
    assert_serving,
    assert_xroad_error,
    launch,
    logged,
    new_id,
)
from tests.integration.test_soap import Soap, assert_fault, envelope, response_element

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "s3cret-internal-reason-7f3a91"
PACKAGE_DIR = str(Path(exchange.__file__).resolve().parent)

SUB = parse_subsystem(f"{MOI}/internal-errors")
SERVER = SecurityServerId(*MOI.parts, "ss-internal")
POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-get-person"
client = "{WINDOW}"
service = "{SUB}/getPerson"
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def soap(net: Net) -> AsyncIterator[Soap]:
    """A provider of one SOAP service of its own (the shared ``moi`` provides REST only)."""
    services = [{"id": f"{SUB}/getPerson", "url": f"{net.backend_url}/soap", "type": "soap"}]
    provider = await launch(
        net, "moi-internal", SERVER, clients=[SUB], policy=POLICY, extra={"services": services}
    )
    yield Soap(provider=provider, consumer=net.servers["palpost"], net=net)


def fail(*args: object, **kwargs: object) -> object:
    """The bug: an exception the exchange layer does not expect, with a message to keep."""
    raise RuntimeError(SECRET)


@pytest.fixture
def operator_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The servers' own log (``exchange.*``), down to the INFO lines that carry detail ids."""
    caplog.set_level(logging.INFO, logger="exchange")
    return caplog


def assert_no_leak(headers: Mapping[str, str], body: bytes) -> None:
    """Nothing of the failure but its code and a short message reaches the caller."""
    seen = body.decode("utf-8", "replace") + "\n".join(f"{k}: {v}" for k, v in headers.items())
    for leak in (SECRET, "RuntimeError", "Traceback", 'File "', ".py", PACKAGE_DIR, "exchange/"):
        assert leak not in seen, f"{leak!r} reaches the caller: {seen[:800]}"


def assert_reason_logged(caplog: pytest.LogCaptureFixture, logger: str, detail: str) -> None:
    """The operator can go from the caller's ``detail`` id to the real reason: one line of
    ``logger`` names both, and the traceback of the very exception is in the log too."""
    uuid.UUID(detail)
    lines = [r.getMessage() for r in caplog.records if r.name == logger]
    assert any(detail in line and SECRET in line for line in lines), lines
    tracebacks = [
        r.exc_info[1]
        for r in caplog.records
        if r.name.startswith("exchange") and r.exc_info is not None
    ]
    assert any(isinstance(e, RuntimeError) and str(e) == SECRET for e in tracebacks), lines


def assert_not_in(record: Mapping[str, object], texts: Iterable[str]) -> None:
    dumped = orjson.dumps(record).decode()
    for text in texts:
        assert text not in dumped, f"{text!r} in {dumped[:800]}"


async def assert_soap_serving(soap: Soap) -> None:
    data, _ = envelope(subsystem=SUB)
    status, headers, body = await soap.post(data)
    assert status == 200, body[:800]
    assert "X-Road-Error" not in headers
    assert response_element(body).findtext("nationalId") == "123456782"


async def rest_internal_error(net: Net, message_id: str, code: str) -> dict[str, Any]:
    """The window's REST call under ``message_id``, refused with ``code`` (500): the fixed
    message, its message id, nothing of the reason; returns the error body."""
    status, headers, body = await net.call(
        "palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": message_id}
    )
    doc = assert_xroad_error(status, headers, body, code, 500)
    assert doc["message"] == "internal error of the security server"
    assert headers["X-Road-Id"] == message_id
    assert_no_leak(headers, body)
    return doc


def fault_detail(body: bytes) -> str:
    fault = response_element(body)
    assert fault.findtext("faultstring") == "internal error of the security server"
    return fault.findtext("detail/faultDetail") or ""


# --- the consumer port -------------------------------------------------------------------------


async def test_rest_internal_failure_on_the_consumer_leaks_nothing(
    net: Net, monkeypatch: pytest.MonkeyPatch, operator_log: pytest.LogCaptureFixture
) -> None:
    """REST r1: the helper that builds the signed request fails. ``Server.ClientProxy
    .InternalError`` (500) with the message id; the detail id leads to the reason in the
    operator's log and in the message log; nothing of the reason reaches the caller."""
    palpost = net.servers["palpost"]
    monkeypatch.setattr(consumer_side, "request_document", fail)
    message_id = new_id("internal-rest")
    doc = await rest_internal_error(net, message_id, "Server.ClientProxy.InternalError")
    assert_reason_logged(operator_log, "exchange.server.consumer", doc["detail"])
    error = logged(palpost, message_id, "consumer", "Server.ClientProxy.InternalError").entry[
        "error"
    ]
    assert (error["detail"], error["message"]) == (doc["detail"], doc["message"])
    assert SECRET in error["internal"]
    monkeypatch.undo()
    await assert_serving(net)


async def test_soap_internal_failure_on_the_consumer_leaks_nothing(
    soap: Soap, monkeypatch: pytest.MonkeyPatch, operator_log: pytest.LogCaptureFixture
) -> None:
    """SOAP on ``POST /``: the same fault gives a SOAP Fault (500) with the same code, the detail
    id in ``faultDetail``, the same log lines, and no trace of the reason."""
    monkeypatch.setattr(soap_consumer, "request_document", fail)
    data, message_id = envelope(subsystem=SUB)
    _, headers, body = result = await soap.post(data)
    assert_fault(result, "Server.ClientProxy.InternalError")
    assert_no_leak(headers, body)
    detail = fault_detail(body)
    assert_reason_logged(operator_log, "exchange.server.consumer", detail)
    view = logged(soap.consumer, message_id, "consumer", "Server.ClientProxy.InternalError")
    assert view.entry["protocol"] == "soap"
    assert view.entry["error"]["detail"] == detail
    assert SECRET in view.entry["error"]["internal"]
    monkeypatch.undo()
    await assert_soap_serving(soap)


@pytest.mark.parametrize(
    ("module", "name", "path", "accept"),
    [
        pytest.param(consumer_side, "health", "/health", None, id="health"),
        pytest.param(
            metadata, "client_list_json", "/listClients", "application/json", id="listClients"
        ),
    ],
)
async def test_failure_outside_an_exchange_is_answered_by_the_port(
    net: Net,
    monkeypatch: pytest.MonkeyPatch,
    operator_log: pytest.LogCaptureFixture,
    module: object,
    name: str,
    path: str,
    accept: str | None,
) -> None:
    """An exception that escapes a handler of the consumer port (here ``/health`` and
    ``/listClients``, which are not exchanges and so not in the message log) is answered by
    ``consumer_handler`` as ``Server.ClientProxy.InternalError`` in the X-Road format, not as
    aiohttp's bare 500, and its detail id is in the operator's log with the reason."""
    monkeypatch.setattr(module, name, fail)
    headers = {"Accept": accept} if accept else None
    status, got, body = await net.call("palpost", path, client=None, headers=headers)
    doc = assert_xroad_error(status, got, body, "Server.ClientProxy.InternalError", 500)
    assert doc["message"] == "internal error of the security server"
    assert got["Server"] == "Exchange"
    assert_no_leak(got, body)
    assert_reason_logged(operator_log, "exchange.server.consumer", doc["detail"])
    monkeypatch.undo()
    status, _, body = await net.call("palpost", path, client=None, headers=headers)
    assert status == 200, body[:500]
    await assert_serving(net)


# --- the provider, seen through a real consumer ------------------------------------------------


async def test_rest_internal_failure_on_the_provider_leaks_nothing(
    net: Net, monkeypatch: pytest.MonkeyPatch, operator_log: pytest.LogCaptureFixture
) -> None:
    """The provider's access-policy evaluation fails while it handles a peer's REST request: the
    provider signs ``Server.ServerProxy.InternalError`` (500), the consumer passes it on; the
    detail id the caller gets is the provider's, next to the reason in the provider's log; the
    reason stays on the provider (not in the answer, not in the consumer's message log)."""
    moi, palpost = net.servers["moi"], net.servers["palpost"]
    monkeypatch.setattr(provider_side, "evaluate", fail)
    message_id = new_id("internal-provider")
    doc = await rest_internal_error(net, message_id, "Server.ServerProxy.InternalError")
    assert_reason_logged(operator_log, "exchange.server.provider", doc["detail"])
    provider_error = logged(moi, message_id, "provider", "Server.ServerProxy.InternalError").entry[
        "error"
    ]
    assert provider_error["detail"] == doc["detail"]
    assert SECRET in provider_error["internal"]
    consumer = logged(palpost, message_id, "consumer", "Server.ServerProxy.InternalError")
    assert_not_in(consumer.entry, (SECRET, "RuntimeError", "Traceback"))
    monkeypatch.undo()
    await assert_serving(net)


async def test_soap_internal_failure_on_the_provider_leaks_nothing(
    soap: Soap, monkeypatch: pytest.MonkeyPatch, operator_log: pytest.LogCaptureFixture
) -> None:
    """The same on the SOAP path: the provider signs a SOAP Fault with the code, its detail id
    and a short message; the consumer passes it on with ``X-Road-Error``."""
    monkeypatch.setattr(provider_side, "evaluate", fail)
    data, message_id = envelope(subsystem=SUB)
    _, headers, body = result = await soap.post(data)
    assert_fault(result, "Server.ServerProxy.InternalError")
    assert_no_leak(headers, body)
    detail = fault_detail(body)
    assert_reason_logged(operator_log, "exchange.server.provider", detail)
    view = logged(soap.provider, message_id, "provider", "Server.ServerProxy.InternalError")
    assert view.entry["protocol"] == "soap"
    assert view.entry["error"]["detail"] == detail
    assert SECRET in view.entry["error"]["internal"]
    consumer = logged(soap.consumer, message_id, "consumer", "Server.ServerProxy.InternalError")
    assert_not_in(consumer.entry, (SECRET, "RuntimeError", "Traceback"))
    monkeypatch.undo()
    await assert_soap_serving(soap)


async def test_failure_while_the_provider_builds_its_answer_is_refused_at_once(
    net: Net, monkeypatch: pytest.MonkeyPatch, operator_log: pytest.LogCaptureFixture
) -> None:
    """A bug in what the provider does after the request's own checks (here: building the
    signed response) cannot be signed, but it is still answered, with an unsigned refusal
    ``Server.ServerProxy.InternalError``, rather than leaving the consumer to wait for its
    response timeout; the provider logs the reason with the refusal's detail id, and the
    consumer answers the caller and logs the exchange. (The consumer's timeout is shortened
    for this test only, so that a regression fails with ``Server.ClientProxy.Timeout`` soon.)"""
    palpost = net.servers["palpost"]
    monkeypatch.setattr(palpost, "response_timeout", 10.0)
    monkeypatch.setattr(provider_side, "SignedResponse", fail)
    message_id = new_id("internal-answer")
    doc = await rest_internal_error(net, message_id, "Server.ServerProxy.InternalError")
    assert_reason_logged(operator_log, "exchange.server.provider", _provider_detail(operator_log))
    # the caller's detail id is the consumer's, in the consumer's log with the refusal
    assert any(
        r.name == "exchange.server.consumer" and doc["detail"] in r.getMessage()
        for r in operator_log.records
    )
    consumer = logged(palpost, message_id, "consumer", "Server.ServerProxy.InternalError")
    assert consumer.entry["error"]["detail"] == doc["detail"]
    assert_not_in(consumer.entry, (SECRET, "RuntimeError", "Traceback"))
    # and the consumer's record leads the operator to the provider's log line
    provider_detail = _provider_detail(operator_log)
    assert f"the provider's detail id {provider_detail}" in consumer.entry["error"]["internal"]
    monkeypatch.undo()
    await assert_serving(net)


def _provider_detail(caplog: pytest.LogCaptureFixture) -> str:
    """The detail id of the provider's one line about an internal error while answering."""
    [line] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "exchange.server.provider" and "internal error" in r.getMessage()
    ]
    return line.rsplit("[", 1)[1].rstrip("]")


async def test_a_failure_reading_a_peers_hello_refuses_that_connection_only(
    net: Net, monkeypatch: pytest.MonkeyPatch, operator_log: pytest.LogCaptureFixture
) -> None:
    """A bug of ours while the provider reads a new connection's HELLO (before, it escaped our
    code into asyncio's transport): that connection is refused with
    ``Server.ServerProxy.InternalError``, the reason and a detail id are in the operator's log,
    nothing of it reaches the peer, and the provider port serves on."""
    moi = net.servers["moi"]
    monkeypatch.setattr(provider_side.PeerTrust, "admit", fail)
    client = as_registered_peer(net, moi)
    try:
        with pytest.raises(ExchangeError) as refused:
            await client.pool.connection()
    finally:
        client.close()
    assert refused.value.code == "Server.ServerProxy.InternalError", refused.value
    assert SECRET not in f"{refused.value.message} {refused.value.detail}"
    [line] = [r for r in operator_log.records if "internal error reading frames" in r.getMessage()]
    assert SECRET in line.getMessage() and line.exc_info is not None
    monkeypatch.undo()
    await assert_serving(net)
