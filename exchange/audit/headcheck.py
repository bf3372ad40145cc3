"""A signed tree head and its RFC 3161 time-stamp, checked offline as evidence: the one check
behind ``exchange audit verify`` (the head of a bundle) and ``exchange log check-proof --trust``
(the heads a proof file names).

:func:`check_head` answers two questions, each on its own: (1) is the head signed by a signing
key of the log's owner (:func:`~exchange.trustcore.treeheads.verify_tree_head`: a certificate
the caller's lookup holds, issued through an approved CA, valid when the head was signed, of the
owner's member), and (2) does an approved TSA's token say the head's JWS existed at its genTime
(:func:`~exchange.trustcore.treeheads.verify_head_timestamp`)? A head without a token proves no
time. The certificates come with the evidence (a bundle's ``certs/``, a proof file's
``certificates``); the trust is the auditor's (:mod:`exchange.audit.trustdir`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from exchange.audit.trustdir import TrustMaterial
from exchange.errors import VerificationFailed
from exchange.identifiers import SecurityServerId
from exchange.messagelog.certs import CertLookup
from exchange.trust.timestamp import TimestampInfo
from exchange.trustcore.treeheads import (
    StatedTreeHead,
    VerifiedTreeHead,
    stated_tree_head,
    verify_head_timestamp,
    verify_tree_head,
)

NOT_STAMPED = "the tree head is not time-stamped: it proves no time"


@dataclass(frozen=True, slots=True)
class HeadEvidence:
    """What :func:`check_head` found: what the head states, the verified head and time-stamp,
    or why not."""

    stated: StatedTreeHead | None
    """What the head's payload states (not verified), to name it; None when it is no tree head."""
    head: VerifiedTreeHead | None
    head_problem: str | None
    stamp: TimestampInfo | None
    stamp_problem: str | None
    unstamped: bool = False
    """No time-stamp token came with the tree head: it proves no time (``stamp_problem`` is
    :data:`NOT_STAMPED`, for the caller to say in its own words)."""


def check_head(
    token: str,
    stamp: bytes | None,
    lookup: CertLookup,
    trust: TrustMaterial,
    owner: SecurityServerId,
) -> HeadEvidence:
    """The tree head ``token`` (compact JWS) of ``owner``'s log and its RFC 3161 ``stamp``."""
    try:
        stated = stated_tree_head(token)
    except VerificationFailed:
        problem = "the tree head JWS payload is not a tree head"
        return HeadEvidence(
            None, None, problem, None, "the time-stamp's tree head is not a tree head"
        )
    signed_at = stated.signed_at
    # (1) signed by a signing key of the owner's member, valid when it signed
    head: VerifiedTreeHead | None = None
    head_problem = None
    try:
        at = dt.datetime.fromtimestamp(signed_at / 1000, dt.UTC)
        head = verify_tree_head(token, lookup.at(at), owner=owner, log_id=None)
    except VerificationFailed as exc:
        head_problem = f"tree head: {exc.message}"
    except (OverflowError, ValueError, OSError):
        head_problem = "the tree head's signing time is out of range"
    # (2) an approved TSA stamped SHA-256 of the head's JWS, not before the head was signed
    if stamp is None:
        return HeadEvidence(stated, head, head_problem, None, NOT_STAMPED, unstamped=True)
    try:
        info = verify_head_timestamp(
            stamp, token, signed_at, tsa_certs=trust.tsas, ca_certs=trust.cas
        )
    except VerificationFailed as exc:
        return HeadEvidence(stated, head, head_problem, None, exc.message)
    return HeadEvidence(stated, head, head_problem, info, None)
