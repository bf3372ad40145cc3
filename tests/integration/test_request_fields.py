"""The provider validates what the consumer validates (issue 13, finding 5).

A registered peer with its own valid keys signs requests whose X-Road fields no consumer
security server would send: a 100,000-character message id, an empty one, a user id with
U+2028 or a terminal escape sequence, control characters in the purpose, a lower-case method.
Before, the provider accepted, logged and forwarded them, and its replay cache held the id for
its whole window. Now each is refused with ``Server.ServerProxy.InvalidMessage`` before anything
is cached, forwarded or logged as the request's own fields; the refusal is signed and logged.
"""

from __future__ import annotations

from typing import Any

import pytest

from exchange.identifiers import parse_security_server
from tests.integration.conftest import MOI, PALPOST, WINDOW, Net, service
from tests.integration.rogue import read_signed_response, sign_request
from tests.integration.support import (
    as_registered_peer,
    assert_serving,
    new_id,
    record_of_response,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOI_SS = parse_security_server(f"{MOI}/ss1")
INVALID = "Server.ServerProxy.InvalidMessage"


def _signed(net: Net, **fields: Any) -> str:
    token, _ = sign_request(
        net.servers["palpost"].signers[PALPOST],
        client=WINDOW,
        service=service("echo"),
        security_server=MOI_SS,
        path="/fields",
        **fields,
    )
    return token


BAD = [
    pytest.param({"message_id": "x" * 100_000}, id="id-100000-chars"),
    pytest.param({"message_id": ""}, id="id-empty"),
    pytest.param({"message_id": "m\x1b[2J\x1b[H"}, id="id-escape-sequence"),
    pytest.param({"user_id": "clerk\u2028Approved by: minister"}, id="user-id-u2028"),
    pytest.param({"user_id": "clerk\x1b]8;;http://evil/\x07here"}, id="user-id-osc-8"),
    pytest.param({"user_id": "\u202eklerc"}, id="user-id-bidi-override"),
    pytest.param({"purpose": "care\x00\x07"}, id="purpose-control-characters"),
    pytest.param({"purpose": "care\x85"}, id="purpose-c1"),
    pytest.param({"issue": "x" * 1025}, id="issue-too-long"),
    pytest.param({"represented_party": "COM//42"}, id="party-empty-part"),
    pytest.param({"method": "get"}, id="method-lower-case"),
]


@pytest.mark.parametrize("fields", BAD)
async def test_the_provider_refuses_fields_no_consumer_sends(
    net: Net, fields: dict[str, Any]
) -> None:
    moi = net.servers["moi"]
    peer = as_registered_peer(net, moi)
    try:
        frame, conn = await peer.send(_signed(net, **fields))
        response, body = read_signed_response(frame, conn)
        assert (response.error_type, response.status, body["type"]) == (INVALID, 400, INVALID)
        record = record_of_response(moi, frame.meta["jws"])
        assert record["error"]["type"] == INVALID
        # the refusal is logged without the fields it refused, and the backend was never called
        if "message_id" in fields:
            assert record["message_id"] is None
        assert (record["user_id"], record["purpose"], record["issue"]) == (None, None, None)
        assert "backend" not in record["timings_us"]
    finally:
        peer.close()
    await assert_serving(net)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"user_id": "clerk\u2028x"}, id="bad-user-id"),
        pytest.param({"method": "get"}, id="bad-method"),
    ],
)
async def test_a_refused_request_does_not_hold_its_id_in_the_replay_cache(
    net: Net, fields: dict[str, Any]
) -> None:
    """The refusal comes before the replay check: the same id in a valid request is accepted,
    where before the bad request was accepted and its id held for the whole window."""
    moi = net.servers["moi"]
    mid = new_id("replay-after-refusal")
    peer = as_registered_peer(net, moi)
    try:
        refused, conn = await peer.send(_signed(net, message_id=mid, **fields))
        assert read_signed_response(refused, conn)[0].error_type == INVALID
        frame, conn = await peer.send(_signed(net, message_id=mid))
        response, body = read_signed_response(frame, conn)
        assert (response.status, response.error_type) == (200, None), body
    finally:
        peer.close()
