"""Red team: what a record states that no signature binds (exchange/trustcore/records.py).

``verify_record`` checks a logged body against the signed digest only when the record says bodies
were logged. An insider who edits a genuine record to say ``digests-only`` and puts a made-up
body in it (the citizen's record with another address, a response the provider never released)
got a record that verified, with the made-up body in it for whoever reads the record or the
evidence bundle. A body a record holds is checked against its signed digest, whatever the
record says of its bodies.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from exchange.identifiers import MemberId
from exchange.trustcore.records import Proof, verify_record
from tests.test_trustcore_records import (
    MOF,
    MOI,
    OWNERS,
    REQUEST_BODY,
    RESPONSE_BODY,
    Keys,
    Member,
    _honest,
    _request,
)

# the fixtures of the records tests, for the same honest records
from tests.test_trustcore_records import keys as keys
from tests.test_trustcore_records import members as members


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("side", ["consumer", "provider"])
@pytest.mark.parametrize(
    ("which", "made_up"),
    [
        pytest.param("response_body", b'{"name":"Mallory"}', id="made-up-response-body"),
        pytest.param("request_body", b'{"query":"everyone"}', id="made-up-request-body"),
    ],
)
def test_a_made_up_body_in_a_record_that_says_digests_only_is_caught(
    members: dict[MemberId, Member], keys: Keys, side: str, which: str, made_up: bytes
) -> None:
    entry: dict[str, Any] = _honest(members, side, with_bodies=False)
    assert verify_record(entry, keys, owner=OWNERS[side]).ok
    entry[which] = _b64(made_up)
    verdict = verify_record(entry, keys, owner=OWNERS[side])
    assert not verdict.ok
    which_body = which.split("_")[0]
    assert any(
        f"{which_body} body does not match" in p and "signed digest" in p for p in verdict.problems
    ), verdict.problems


@pytest.mark.parametrize("side", ["consumer", "provider"])
def test_the_genuine_bodies_beside_digests_only_still_verify(
    members: dict[MemberId, Member], keys: Keys, side: str
) -> None:
    """A body that is the signed one proves no less for the flag: it is not a finding."""
    entry: dict[str, Any] = _honest(members, side, with_bodies=False)
    entry["request_body"], entry["response_body"] = _b64(REQUEST_BODY), _b64(RESPONSE_BODY)
    assert verify_record(entry, keys, owner=OWNERS[side]).ok


def test_a_body_that_is_not_base64_beside_digests_only_is_a_finding(
    members: dict[MemberId, Member], keys: Keys
) -> None:
    entry: dict[str, Any] = _honest(members, "consumer", with_bodies=False)
    entry["response_body"] = "not base64 at all!"
    problems = verify_record(entry, keys, owner=OWNERS["consumer"]).problems
    assert any("response body is not base64" in p for p in problems), problems


def test_the_request_is_still_checked_first(members: dict[MemberId, Member], keys: Keys) -> None:
    """(Regression) the made-up body of a record whose request is another member's is named
    beside that."""
    entry: dict[str, Any] = _honest(members, "consumer", with_bodies=False)
    forged = members[MOI].signer.sign(_request().canonical())
    entry["request_jws"] = forged
    problems = verify_record(entry, keys, owner=OWNERS["consumer"]).problems
    assert any(f"signed by member {MOI}" in p for p in problems), problems
    assert MOF != MOI


@pytest.mark.parametrize("side", ["consumer", "provider"])
@pytest.mark.parametrize("token", ["\x80", "eyJ\u00e9.e30.AA"], ids=["c1-control", "accented"])
def test_a_request_token_that_is_not_ascii_is_a_finding_not_a_crash(
    members: dict[MemberId, Member], keys: Keys, side: str, token: str
) -> None:
    """Found by the records' property test: a ``request_jws`` edited to hold a non-ASCII
    character raised UnicodeEncodeError out of ``verify_record`` (its request hash), so
    ``exchange log verify`` and ``audit verify`` ended in a traceback instead of naming the
    record. No server writes one (the provider refuses such a frame before logging it)."""
    entry: dict[str, Any] = _honest(members, side)
    entry["request_jws"] = token
    verdict = verify_record(entry, keys, owner=OWNERS[side])
    assert not verdict.ok and verdict.proof is Proof.NOTHING, verdict
    assert any("not a compact token" in p for p in verdict.problems), verdict.problems
