"""Who may sign a log's tree heads (exchange/trustcore/treeheads.py): its owner's member, with a
signing certificate, for this log and this owner, in the canonical form; nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import VerificationFailed
from exchange.identifiers import SecurityServerId, parse_member
from exchange.protocol.canonical import b64url, canonical_bytes
from exchange.protocol.jws import JwsError, Signer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trustcore.messages import SignerKey, certified_signer
from exchange.trustcore.treeheads import (
    StatedTreeHead,
    read_tree_head,
    stated_tree_head,
    tree_head_payload,
    verify_tree_head,
)

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")
ROOT = b"\x07" * 32


class Keys:
    """Every certificate known, each judged by ``certified_signer`` as the auditor's are."""

    def __init__(self, *signers: Signer) -> None:
        self.known = {s.thumbprint: s.cert for s in signers}

    def signer_key(self, thumbprint: str) -> SignerKey:
        if thumbprint not in self.known:
            raise JwsError("unknown certificate")
        return certified_signer(self.known[thumbprint])


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(Path(tmp_path_factory.mktemp("ca")))


def _signer(ca: CertificateAuthority, member: str) -> Signer:
    key = generate_key()
    return Signer(key, ca.issue_sign_cert(key.public_key(), parse_member(member)))


def _head(signer: Signer, owner: SecurityServerId = OWNER, log: str = "log-1") -> str:
    return signer.sign(tree_head_payload(log, owner, 5, ROOT, 1_700_000_000_000))


def test_a_head_of_the_owner_verifies(ca: CertificateAuthority) -> None:
    moi, rotated = _signer(ca, "PS/GOV/MOI"), _signer(ca, "PS/GOV/MOI")
    for signer in (moi, rotated):
        head = verify_tree_head(_head(signer), Keys(moi, rotated), owner=OWNER, log_id="log-1")
        assert (head.size, head.root, head.owner, head.signer.member) == (
            5,
            ROOT,
            OWNER,
            OWNER.owner,
        )


def test_another_members_signing_key(ca: CertificateAuthority) -> None:
    moh = _signer(ca, "PS/GOV/MOH")
    with pytest.raises(VerificationFailed, match="signed by member PS/GOV/MOH, not by the log"):
        verify_tree_head(_head(moh), Keys(moh), owner=OWNER, log_id=None)


def test_an_authentication_or_tsa_certificate(ca: CertificateAuthority) -> None:
    key = generate_key()
    auth = Signer(key, ca.issue_auth_cert(key.public_key(), OWNER))
    tsa = Signer(key, issue_tsa_cert(ca, key.public_key(), "TSA"))
    for signer in (auth, tsa):
        with pytest.raises(VerificationFailed, match="cannot sign messages"):
            verify_tree_head(_head(signer), Keys(signer), owner=OWNER, log_id=None)


def test_a_head_of_another_server_or_log(ca: CertificateAuthority) -> None:
    moi = _signer(ca, "PS/GOV/MOI")
    other = SecurityServerId("PS", "GOV", "MOI", "ss2")
    with pytest.raises(VerificationFailed, match="names owner 'PS/GOV/MOI/ss2'"):
        verify_tree_head(_head(moi, owner=other), Keys(moi), owner=OWNER, log_id=None)
    with pytest.raises(VerificationFailed, match="signed for log 'log-2'"):
        verify_tree_head(_head(moi, log="log-2"), Keys(moi), owner=OWNER, log_id="log-1")


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"extra": 1}, id="extra-field"),
        pytest.param({"size": True}, id="boolean-size"),
        pytest.param({"root": b64url(b"\x07" * 31)}, id="short-root"),
        pytest.param({"root": "!!"}, id="root-not-base64url"),
    ],
)
def test_payloads_that_are_not_canonical_heads(
    ca: CertificateAuthority, document: dict[str, object]
) -> None:
    moi = _signer(ca, "PS/GOV/MOI")
    base = {
        "log": "log-1",
        "owner": str(OWNER),
        "root": b64url(ROOT),
        "signed_at": 1_700_000_000_000,
        "size": 5,
    }
    token = moi.sign(canonical_bytes({**base, **document}))
    with pytest.raises(VerificationFailed, match="tree head"):
        verify_tree_head(token, Keys(moi), owner=OWNER, log_id="log-1")
    with pytest.raises(VerificationFailed, match="not JSON"):
        verify_tree_head(moi.sign(b"\xff"), Keys(moi), owner=OWNER, log_id=None)


def test_a_head_states_what_it_signs(ca: CertificateAuthority) -> None:
    token = _head(_signer(ca, "PS/GOV/MOI"))
    assert stated_tree_head(token) == StatedTreeHead(
        "log-1", str(OWNER), 5, ROOT, 1_700_000_000_000
    )


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"size": True}, id="boolean-size"),
        pytest.param({"signed_at": False}, id="boolean-signed-at"),
        pytest.param({"signed_at": "2026-01-01"}, id="text-signed-at"),
        pytest.param({"log": None}, id="no-log"),
        pytest.param({"owner": 7}, id="owner-not-text"),
        pytest.param({"root": b64url(ROOT)[:-1] + "d"}, id="root-not-canonical-base64url"),
        pytest.param({"root": b64url(b"\x07" * 31)}, id="short-root"),
    ],
)
def test_what_is_not_a_tree_head_payload(document: dict[str, object]) -> None:
    """The one reader of a head's payload, for proofs and evidence as for the signature check."""
    base = {"log": "log-1", "owner": str(OWNER), "root": b64url(ROOT), "signed_at": 1, "size": 5}
    with pytest.raises(VerificationFailed, match="not a tree head"):
        read_tree_head(canonical_bytes({**base, **document}))


@pytest.mark.parametrize("token", [None, 5, "a.b", "a.!!.c", "é.e.e"])
def test_what_is_not_a_tree_head_jws(token: object) -> None:
    with pytest.raises(VerificationFailed, match="not a compact JWS"):
        stated_tree_head(token)


@given(st.binary(max_size=200))
def test_a_payload_reads_or_is_refused(payload: bytes) -> None:
    """Any bytes either read as a tree head or raise VerificationFailed, nothing else."""
    try:
        head = read_tree_head(payload)
    except VerificationFailed:
        return
    assert isinstance(head, StatedTreeHead)
