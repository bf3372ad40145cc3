"""A proof file checked as evidence on its own: ``exchange log check-proof --trust``.

A proof file from ``exchange log prove`` or ``log consistency`` carries its Merkle path, the
signed tree head(s) it leads to, their RFC 3161 time-stamp tokens and the signers' certificates.
:func:`check_proof_file` makes the Merkle checks (:func:`exchange.messagelog.proofs.checks_for`)
and then, for every tree head the file names, the checks of :func:`exchange.audit.headcheck.
check_head`: signed by a signing key of the log's owner (which the auditor gives, never the
file), issued through an approved CA of the trust folder, and time-stamped by an approved TSA.
Then the file proves that the record's leaf hash is in the owner's log under a head that
existed at the time-stamp's time (inclusion), or that the owner's log only grew between two
heads (consistency). It does not hold the record itself: the evidence bundle does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from exchange.audit.headcheck import check_head
from exchange.audit.trustdir import TrustMaterial
from exchange.identifiers import SecurityServerId
from exchange.messagelog.certs import CertLookup
from exchange.messagelog.proofs import CONSISTENCY, INCLUSION, Check, checks_for
from exchange.protocol.canonical import b64url_decode
from exchange.utc import iso_z


@dataclass(frozen=True, slots=True)
class ProofReport:
    """The checks made, and what the file proves when every one passed."""

    checks: list[Check]
    proves: str

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass(frozen=True, slots=True)
class _Head:
    token: object
    stamp: object
    certificates: object


def check_proof_file(
    document: object, trust: TrustMaterial, owner: SecurityServerId
) -> ProofReport:
    """Every check of the proof ``document`` (a proof file's JSON) as evidence of ``owner``'s
    log: the Merkle math, then each tree head it names and its time-stamp."""
    # (1) the Merkle path(s) lead to the roots inside the tree heads' JWS payloads
    checks = checks_for(document)
    heads: dict[str, _Head] = {}
    for proof in _proofs(document):
        for head in _heads_of(proof):
            if isinstance(head.token, str) and head.token not in heads:
                heads[head.token] = head
    stamped_at: dict[str, dt.datetime] = {}
    # (2) each tree head is signed by the owner, (3) and time-stamped by an approved TSA
    for token, head in heads.items():
        lookup = CertLookup(_pems(head.certificates).get, trust.cas, holder="the proof file")
        evidence = check_head(token, _stamp(head.stamp), lookup, trust, owner)
        size = str(evidence.stated.size) if evidence.stated is not None else "?"
        signer = evidence.head.signer.cert if evidence.head is not None else None
        by = f" (certificate {signer.subject.rfc4514_string()})" if signer is not None else ""
        checks.append(
            Check(
                f"the tree head of size {size} is signed by the log's owner {owner}{by}",
                evidence.head_problem is None,
                evidence.head_problem or "",
            )
        )
        when = evidence.stamp.gen_time if evidence.stamp is not None else None
        if when is not None:
            stamped_at[size] = when
        problem = evidence.stamp_problem
        if evidence.unstamped:
            problem = (
                "the proof file holds no time-stamp token for it: it proves no time (prove "
                "against a time-stamped tree head: `exchange log heads --stamped`)"
            )
        checks.append(
            Check(
                f"the tree head of size {size} is time-stamped by an approved TSA"
                + (f": it existed at {iso_z(when)}" if when else ""),
                problem is None,
                problem or "",
            )
        )
    return ProofReport(checks, _proves(document, owner, stamped_at))


def _proofs(document: object) -> Iterator[Mapping[str, Any]]:
    if isinstance(document, dict) and isinstance(document.get("proofs"), list):
        yield from (p for p in document["proofs"] if isinstance(p, dict))
    elif isinstance(document, dict):
        yield document


def _heads_of(proof: Mapping[str, Any]) -> list[_Head]:
    certificates = proof.get("certificates")
    if proof.get("kind") == INCLUSION:
        return [_Head(proof.get("tree_head_jws"), proof.get("timestamp_token"), certificates)]
    if proof.get("kind") == CONSISTENCY:
        return [
            _Head(
                proof.get(f"head_{end}_jws"), proof.get(f"head_{end}_timestamp_token"), certificates
            )
            for end in ("m", "n")
        ]
    return []


def _pems(certificates: object) -> dict[str, str]:
    if not isinstance(certificates, dict):
        return {}
    return {k: v for k, v in certificates.items() if isinstance(k, str) and isinstance(v, str)}


def _stamp(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return b64url_decode(value)
    except ValueError:
        return b""  # not base64url: a token that does not verify


def _proves(document: object, owner: SecurityServerId, stamped_at: dict[str, dt.datetime]) -> str:
    proofs = list(_proofs(document))

    def existed(size: object) -> str:
        when = stamped_at.get(str(size))
        return f", which existed at {iso_z(when)} (RFC 3161)" if when else ""

    if proofs and proofs[0].get("kind") == CONSISTENCY:
        m, n = proofs[0].get("m"), proofs[0].get("n")
        return (
            f"the log of {owner} only grew from its tree head of size {m}{existed(m)}, to its "
            f"tree head of size {n}{existed(n)}"
        )
    seqs = ", ".join(str(p.get("seq")) for p in proofs)
    size = proofs[0].get("tree_size") if proofs else None
    message_id = document.get("message_id") if isinstance(document, dict) else None
    of = f" of exchange {message_id}" if isinstance(message_id, str) else ""
    return f"record(s) {seqs}{of} are in the log of {owner} under its tree head of size {size}" + (
        existed(size)
    )
