"""`verify_log` checks the RFC 3161 time-stamp tokens stored for tree heads (docs/design.md §8).

Tokens come from the real TSA code (:func:`build_timestamp_response`) signing with a certificate
from :func:`issue_tsa_cert`; logs are real SQLite files, tampered with as an attacker with the
file would (dropping the append-only triggers first).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.identifiers import SecurityServerId, parse_member
from exchange.messagelog.store import MessageLog, TreeHead, tree_head_digest
from exchange.messagelog.verify import VerifyReport, verify_log
from exchange.protocol.jws import Signer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key
from exchange.trust.profiles import sign_template
from exchange.trust.timestamp import (
    build_timestamp_request,
    build_timestamp_response,
    issue_tsa_cert,
    token_of_response,
)

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")

TSA_NAME = "Test TSA"
SIZES = (5, 10, 15)
STAMPED_AT_SIZE = 10


@dataclass(frozen=True)
class Tsa:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def stamp(self, digest: bytes, now: dt.datetime) -> bytes:
        response = build_timestamp_response(
            build_timestamp_request(digest),
            tsa_key=self.key,
            tsa_cert=self.cert,
            serial=int(now.timestamp() * 1000),
            now=now,
        )
        return token_of_response(response)


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    signer: Signer
    tsa: Tsa
    rogue_tsa: Tsa


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    back = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca"), now=back)
    key = generate_key()
    signer = Signer(key, ca.issue(key.public_key(), sign_template(parse_member("PS/GOV/MOI"))))

    def tsa(name: str) -> Tsa:
        tsa_key = generate_key()
        return Tsa(tsa_key, issue_tsa_cert(ca, tsa_key.public_key(), name, now=back))

    return Pki(ca, signer, tsa(TSA_NAME), tsa("Rogue TSA"))


def entry(i: int) -> dict[str, Any]:
    return {"message_id": f"msg-{i}", "client": "PS/GOV/MOF/tax", "side": "consumer"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


Stamper = Callable[[Pki, TreeHead, dict[int, TreeHead]], tuple[bytes, dt.datetime]]


def good(pki: Pki, head: TreeHead, _: dict[int, TreeHead]) -> tuple[bytes, dt.datetime]:
    now = _now()
    return pki.tsa.stamp(tree_head_digest(head), now), now


async def build_log(path: Path, pki: Pki, stamper: Stamper = good) -> dict[int, TreeHead]:
    """A closed log with tree heads at SIZES, each time-stamped; ``stamper`` stamps size 10."""
    heads: dict[int, TreeHead] = {}
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for b in range(len(SIZES)):
            await log.append_many([entry(b * 5 + i) for i in range(5)])
            head = await log.sign_tree_head()
            assert head is not None
            heads[head.size] = head
        for size, head in heads.items():
            make = stamper if size == STAMPED_AT_SIZE else good
            token, gen_time = make(pki, head, heads)
            await log.add_timestamp(size, token, TSA_NAME, int(gen_time.timestamp() * 1000))
    assert tuple(heads) == SIZES
    return heads


def verify(path: Path, pki: Pki, **kwargs: Any) -> VerifyReport:
    return verify_log(path, owner=OWNER, check_records=False, trusted_cas=[pki.ca.cert], **kwargs)


def tamper(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table in ("records", "tree_heads", "timestamps"):
            for op in ("UPDATE", "DELETE"):
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op}")
        conn.execute(sql, params)
    finally:
        conn.close()


def stamp_problems(report: VerifyReport) -> list[tuple[int | None, str]]:
    return [(p.size, p.reason) for p in report.problems if p.kind == "timestamp"]


async def test_stamped_heads_all_verify(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    report = verify(path, pki, tsa_certs=[pki.tsa.cert])
    assert report.ok, report.to_dict()
    assert (report.timestamps, report.timestamps_verified, report.timestamps_unchecked) == (3, 3, 0)
    as_dict = report.to_dict()
    assert (as_dict["timestamps"], as_dict["timestamps_verified"]) == (3, 3)


async def test_without_tsa_certs_tokens_are_counted_unchecked(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki, stamper=_over_other_digest)
    report = verify(path, pki)
    assert report.ok, report.to_dict()
    assert (report.timestamps, report.timestamps_verified, report.timestamps_unchecked) == (3, 0, 3)
    assert report.to_dict()["timestamps_unchecked"] == 3


async def test_log_without_stamps_reports_none(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await log.append(entry(0))
    report = verify(path, pki, tsa_certs=[pki.tsa.cert])
    assert report.ok, report.to_dict()
    assert (report.timestamps, report.timestamps_verified, report.timestamps_unchecked) == (0, 0, 0)


def _over_other_digest(
    pki: Pki, _: TreeHead, heads: dict[int, TreeHead]
) -> tuple[bytes, dt.datetime]:
    now = _now()
    return pki.tsa.stamp(tree_head_digest(heads[5]), now), now


def _unapproved_tsa(pki: Pki, head: TreeHead, _: dict[int, TreeHead]) -> tuple[bytes, dt.datetime]:
    now = _now()
    return pki.rogue_tsa.stamp(tree_head_digest(head), now), now


def _predates_head(pki: Pki, head: TreeHead, _: dict[int, TreeHead]) -> tuple[bytes, dt.datetime]:
    early = dt.datetime.fromtimestamp(head.signed_at / 1000, dt.UTC) - dt.timedelta(minutes=3)
    return pki.tsa.stamp(tree_head_digest(head), early), early


def _other_gen_time(pki: Pki, head: TreeHead, _: dict[int, TreeHead]) -> tuple[bytes, dt.datetime]:
    token, now = good(pki, head, _)
    return token, now + dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("stamper", "reason"),
    [
        pytest.param(
            _over_other_digest,
            "time-stamp is over another hash than the tree head",
            id="token-over-another-hash",
        ),
        pytest.param(_unapproved_tsa, "not an approved TSA certificate", id="unapproved-tsa"),
        pytest.param(_predates_head, "precedes the tree head's signing time", id="predates-head"),
        pytest.param(_other_gen_time, "stored genTime differs", id="stored-gen-time-edited"),
    ],
)
async def test_bad_token_is_reported_at_its_size(
    tmp_path: Path, pki: Pki, stamper: Stamper, reason: str
) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki, stamper)
    report = verify(path, pki, tsa_certs=[pki.tsa.cert])
    assert not report.ok
    [(size, found)] = stamp_problems(report)
    assert size == STAMPED_AT_SIZE and reason in found, found
    assert (report.timestamps, report.timestamps_verified) == (3, 2)
    assert report.first_bad is None, "the records themselves are intact"


@pytest.mark.parametrize(
    ("sql", "reason", "size"),
    [
        pytest.param(
            "UPDATE timestamps SET size = 11 WHERE size = ?",
            "no tree head of this size",
            11,
            id="moved-to-unsigned-size",
        ),
        pytest.param(
            "UPDATE tree_heads SET signed_at = signed_at + 1 WHERE size = ?",
            "did not verify",
            STAMPED_AT_SIZE,
            id="tree-head-row-edited",
        ),
        pytest.param(
            "UPDATE timestamps SET token = 'not a token' WHERE size = ?",
            "malformed time-stamp row",
            STAMPED_AT_SIZE,
            id="token-not-bytes",
        ),
    ],
)
async def test_edited_rows_are_reported(
    tmp_path: Path, pki: Pki, sql: str, reason: str, size: int
) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    tamper(path, sql, (STAMPED_AT_SIZE,))
    report = verify(path, pki, tsa_certs=[pki.tsa.cert])
    assert not report.ok
    [(at, found)] = stamp_problems(report)
    assert at == size and reason in found, found
    assert report.timestamps_verified == 2


async def test_timestamp_moved_onto_another_head_is_over_another_hash(
    tmp_path: Path, pki: Pki
) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    tamper(path, "DELETE FROM timestamps WHERE size = 15")
    tamper(path, "UPDATE timestamps SET size = 15 WHERE size = 10")
    report = verify(path, pki, tsa_certs=[pki.tsa.cert])
    [(size, reason)] = stamp_problems(report)
    assert size == 15
    assert reason.startswith("time-stamp is over another hash than the tree head")


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(60, id="flipped-in-tstinfo"),
        pytest.param(-3, id="flipped-in-signature"),
    ],
)
async def test_flipped_token_bytes_are_reported(tmp_path: Path, pki: Pki, offset: int) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    conn = sqlite3.connect(path)
    try:
        (token,) = conn.execute("SELECT token FROM timestamps WHERE size = 10").fetchone()
    finally:
        conn.close()
    flipped = bytearray(token)
    flipped[offset] ^= 0xFF
    tamper(path, "UPDATE timestamps SET token = ? WHERE size = 10", (bytes(flipped),))
    report = verify(path, pki, tsa_certs=[pki.tsa.cert])
    [(size, reason)] = stamp_problems(report)
    assert size == STAMPED_AT_SIZE and reason.startswith("time-stamp "), reason
    assert report.timestamps_verified == 2
