"""The checks every document a security server signs for the central server shares.

Two kinds exist: registration requests (:mod:`exchange.central.registration`) and service
declarations (:mod:`exchange.central.catalogue`). Both arrive as a JSON object of compact JWS
(RFC 7515 §7.1) that carry the signer's certificate in the document, are fresh within
:data:`MAX_AGE_SECONDS`, and are signed with an authentication key whose certificate must chain to
an approved CA, have the authentication profile and name the security server the document speaks
for. The functions here make those checks once; each takes the kind's ``refuse`` (its error class),
so a refusal keeps the kind's code, and the words that differ between kinds are the caller's.

Sans-IO: bytes, certificates and an explicit ``now``. This module does not parse the documents,
check what only one kind needs (the member signature of a registration, the registered
fingerprint and subsystems of a declaration), nor store anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from exchange.errors import ClientError, ExchangeError
from exchange.identifiers import SecurityServerId
from exchange.protocol.canonical import loads
from exchange.protocol.jws import JwsError, verify_by_cert
from exchange.trust.profiles import check_auth_profile, server_id_of_auth_cert
from exchange.trust.validation import CertificateError, verify_chain

MAX_AGE_SECONDS: Final = 600
"""How far a document's signing time may be from the central server's clock, either way."""

Refuse = Callable[[str], ClientError]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The HTTP body of one kind of signed document: a JSON object of exactly ``fields``, each a
    compact JWS, at most ``max_bytes`` long; and the words of each refusal."""

    fields: tuple[str, ...]
    max_bytes: int
    too_large: str
    not_json: str
    wrong_fields: str
    not_strings: str

    def tokens(self, body: bytes, refuse: Refuse) -> tuple[str, ...]:
        """The JWS of ``fields``, in their order; a body that is not such an object is refused."""
        if len(body) > self.max_bytes:
            raise refuse(self.too_large)
        try:
            envelope = loads(body)
        except ExchangeError:
            raise refuse(self.not_json) from None
        if not isinstance(envelope, dict) or set(envelope) != set(self.fields):
            raise refuse(self.wrong_fields)
        tokens = tuple(envelope[field] for field in self.fields)
        if not all(isinstance(token, str) for token in tokens):
            raise refuse(self.not_strings)
        return tokens


def check_signature(
    token: str, cert: x509.Certificate, *, cert_name: str, label: str, refuse: Refuse
) -> None:
    """The key of ``cert`` (named ``cert_name`` in the reason) signed ``token``; a refusal reads
    ``<label>: <reason>``. Whether ``cert`` is trusted is :func:`check_certificate`'s."""
    try:
        verify_by_cert(token, cert, cert_name)
    except JwsError as exc:
        raise refuse(f"{label}: {exc.message}") from None


def is_fresh(signed_at: int, now: int, *, per_second: int = 1) -> bool:
    """``signed_at`` (in 1/``per_second`` s) is within :data:`MAX_AGE_SECONDS` of ``now`` (s)."""
    return abs(now * per_second - signed_at) <= MAX_AGE_SECONDS * per_second


def check_certificate(
    cert: x509.Certificate,
    trusted_cas: Sequence[x509.Certificate],
    now: int,
    *,
    what: str,
    profile_check: Callable[[x509.Certificate], None],
    refuse: Refuse,
) -> None:
    """``cert`` chains to an approved CA, is valid at ``now`` and has the profile; a refusal
    reads ``<what> certificate: <reason>``."""
    try:
        verify_chain(cert, trusted_cas, dt.datetime.fromtimestamp(now, dt.UTC))
        profile_check(cert)
    except CertificateError as exc:
        raise refuse(f"{what} certificate: {exc.message}") from None


def check_auth_cert(
    cert: x509.Certificate,
    server: SecurityServerId,
    trusted_cas: Sequence[x509.Certificate],
    now: int,
    *,
    refuse: Refuse,
    refuse_other_server: Refuse,
) -> None:
    """``cert`` is an authentication certificate of an approved CA, valid at ``now``, issued to
    ``server``. A certificate of another server is refused with ``refuse_other_server``."""
    # (1) chains to an approved CA, valid now, the authentication profile
    check_certificate(
        cert,
        trusted_cas,
        now,
        what="authentication",
        profile_check=check_auth_profile,
        refuse=refuse,
    )
    # (2) names this server (the profile check made sure it names exactly one)
    named = server_id_of_auth_cert(cert)
    if named != server:
        raise refuse_other_server(
            f"the authentication certificate is issued to {named}, not {server}"
        )
