"""The envelope both kinds of signed document arrive in (registration requests, service
declarations): each refusal keeps its kind's code and its exact words."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from exchange.central import catalogue, registration
from exchange.errors import ClientError
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import parse_member


def _declaration(body: bytes) -> object:
    return catalogue.verify_declaration(body, registry=GlobalConf("PS", 1, 0, 600), now=1000)


def _registration(body: bytes) -> object:
    members = [parse_member("PS/GOV/MOI")]
    return registration.verify_registration(body, trusted_cas=[], members=members, now=0)


DECLARATION = "Client.InvalidServiceDeclaration"
REGISTRATION = "Client.InvalidRegistrationRequest"


@pytest.mark.parametrize(
    ("verify", "body", "code", "reason"),
    [
        pytest.param(
            _declaration,
            b" " * (catalogue.MAX_BODY_BYTES + 1),
            DECLARATION,
            f"the declaration is larger than {catalogue.MAX_BODY_BYTES} bytes",
            id="decl-too-large",
        ),
        pytest.param(_declaration, b"{", DECLARATION, "the body is not JSON", id="decl-json"),
        pytest.param(
            _declaration,
            b'{"signature": "a.b.c", "more": 1}',
            DECLARATION,
            "the body must hold exactly 'signature'",
            id="decl-other-fields",
        ),
        pytest.param(
            _declaration,
            b'{"signature": 1}',
            DECLARATION,
            "signature must be a compact JWS string",
            id="decl-not-a-jws",
        ),
        pytest.param(
            _registration,
            b" " * (registration.MAX_BODY_BYTES + 1),
            REGISTRATION,
            f"the request is larger than {registration.MAX_BODY_BYTES} bytes",
            id="reg-too-large",
        ),
        pytest.param(
            _registration,
            b"{",
            REGISTRATION,
            "the request body is not JSON",
            id="reg-json",
        ),
        pytest.param(
            _registration,
            b'{"auth_signature": "a.b.c"}',
            REGISTRATION,
            "the request body must hold exactly auth_signature and member_signature",
            id="reg-one-signature",
        ),
        pytest.param(
            _registration,
            b'{"auth_signature": "a.b.c", "member_signature": 1}',
            REGISTRATION,
            "auth_signature and member_signature must be compact JWS strings",
            id="reg-not-a-jws",
        ),
    ],
)
def test_bad_envelopes_are_refused_with_their_exact_reason(
    verify: Callable[[bytes], object], body: bytes, code: str, reason: str
) -> None:
    with pytest.raises(ClientError) as refused:
        verify(body)
    assert (refused.value.code, refused.value.message) == (code, reason)
