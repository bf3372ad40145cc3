"""The message log: group commit, durability, tamper detection, failures, queries.

Real SQLite files in tmp_path and a throwaway CA; every tampering test edits the file the way an
attacker with write access would (dropping the append-only triggers first).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exchange.errors import ConfigurationError, ExchangeError
from exchange.identifiers import MemberId, SecurityServerId, parse_member
from exchange.messagelog.certs import CertLookup, certificates_of_log, signer_certificates
from exchange.messagelog.heads import iter_heads
from exchange.messagelog.merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    leaf_hash,
    root,
    verify_inclusion,
)
from exchange.messagelog.query import query_records
from exchange.messagelog.store import MessageLog, MessageLogError, open_readonly
from exchange.messagelog.verify import verify_log
from exchange.protocol.canonical import canonical_bytes
from exchange.protocol.jws import JwsError, Signer
from exchange.trust.keys import cert_pem
from exchange.trust.profiles import CertificateTemplate, auth_template, sign_template
from exchange.trustcore.treeheads import tree_head_payload

# --- a throwaway PKI ----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def issue(self, cn: str, *, digital_signature: bool = True) -> Signer:
        """A certificate without a profile (CN only): fit for no signature of the log."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign=digital_signature, ca=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return Signer(key, cert)

    def issue_profile(self, template: CertificateTemplate) -> Signer:
        """A certificate of one of our profiles (a member's signing key, a server's auth key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(template.subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        for extension, critical in template.extensions:
            builder = builder.add_extension(extension, critical=critical)
        return Signer(key, builder.sign(self.key, hashes.SHA256()))

    def member(self, member: str) -> Signer:
        return self.issue_profile(sign_template(parse_member(member)))


def make_ca(cn: str) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=False, ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Ca(key, cert)


@dataclass(frozen=True)
class Pki:
    ca: Ca
    signer: Signer
    """A signing key of PS/GOV/MOI, the member owning :data:`OWNER`, the log's server."""
    rotated: Signer
    """Another signing key of PS/GOV/MOI (key rotation)."""
    member: Signer
    """A signing key of another member, PS/GOV/MOF (its requests are logged too)."""
    auth: Signer
    """The authentication (TLS) key of the owner's server: not a signing key."""
    rogue_ca: Ca
    rogue: Signer
    no_usage: Signer


OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, rogue_ca = make_ca("Test Root CA"), make_ca("Rogue CA")
    return Pki(
        ca=ca,
        signer=ca.member("PS/GOV/MOI"),
        rotated=ca.member("PS/GOV/MOI"),
        member=ca.member("PS/GOV/MOF"),
        auth=ca.issue_profile(auth_template(OWNER)),
        rogue_ca=rogue_ca,
        rogue=rogue_ca.member("PS/GOV/MOI"),
        no_usage=ca.issue("no digitalSignature", digital_signature=False),
    )


def entry(i: int, **overrides: Any) -> dict[str, Any]:
    return {
        "message_id": f"msg-{i}",
        "client": "PS/GOV/MOF/tax" if i % 2 else "PS/GOV/MOJ/courts",
        "service": "PS/GOV/MOI/population-registry/persons",
        "side": "consumer" if i % 3 else "provider",
        "status": "200",
        "user_id": "clerk-7",
        "purpose": "citizen-service",
        "decision": {"effect": "allow", "grant": "tax-persons", "policy_version": 3},
        "released_fields": ["name", "birth_date"],
        "request_body_digest": "x" * 43,
        "timings_us": {"backend": 800, "total": 1200},
        **overrides,
    }


def verify(path: Path, pki: Pki, **kwargs: Any) -> Any:
    """The log as the log of OWNER; its entries are not exchange records (see test_records)."""
    return verify_log(
        path, trusted_cas=[pki.ca.cert], owner=OWNER, **{"check_records": False, **kwargs}
    )


async def build_log(path: Path, pki: Pki, batches: int = 4, per_batch: int = 5) -> None:
    """A closed log whose tree heads sit at sizes per_batch, 2*per_batch, ..."""
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for b in range(batches):
            await log.append_many([entry(b * per_batch + i) for i in range(per_batch)])


def tamper(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table in ("records", "tree_heads"):
            for op in ("UPDATE", "DELETE"):
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op}")
        conn.execute("BEGIN")
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("COMMIT")
    finally:
        conn.close()


def read_one(path: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchone()
    finally:
        conn.close()


def stored_leaves(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT leaf_hash FROM records ORDER BY seq")]
    finally:
        conn.close()


# --- appending ----------------------------------------------------------------------------------


async def test_concurrent_appends_are_contiguous_and_signed(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        seqs = await asyncio.gather(*(log.append(entry(i)) for i in range(2000)))
        assert sorted(seqs) == list(range(2000))
        assert log.size == 2000
        head = await log.sign_tree_head()
        assert head is not None and head.size == 2000
        assert head.root == root(stored_leaves(path))
    (heads,) = read_one(path, "SELECT count(*) FROM tree_heads")
    assert 1 <= heads < 2000, "group commit: one tree head per batch, not per record"
    report = verify(path, pki)
    assert report.ok, report.to_dict()
    assert (report.records, report.tree_heads_verified, report.unsigned_records) == (2000, heads, 0)


async def test_append_many_is_one_contiguous_group(tmp_path: Path, pki: Pki) -> None:
    with MessageLog(tmp_path / "log.db", pki.signer, owner=OWNER) as log:
        results = await asyncio.gather(
            log.append_many([entry(i) for i in range(50)]),
            *(log.append(entry(100 + i)) for i in range(20)),
            log.append_many([entry(200 + i) for i in range(30)]),
        )
        groups = [r for r in results if isinstance(r, list)]
        for group in groups:
            assert group == list(range(group[0], group[0] + len(group)))
        assert await log.append_many([]) == []
        assert log.size == 100


async def test_each_batch_is_committed_with_its_tree_head(tmp_path: Path, pki: Pki) -> None:
    """A record is answered only once its batch and the signed tree head over it are committed
    in one transaction: right after each append, the file holds a head of that size."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for i in range(3):
            assert await log.append(entry(i)) == i
            assert read_one(path, "SELECT count(*), max(size) FROM tree_heads") == (i + 1, i + 1)
            head = log.latest_tree_head()
            assert head is not None and head.size == i + 1
        assert await log.sign_tree_head() == head, "no new head without new records"
    report = verify(path, pki)
    assert report.ok and report.tree_heads_verified == 3 and report.unsigned_records == 0


async def test_a_batch_whose_tree_head_cannot_be_stored_is_not_committed(
    tmp_path: Path, pki: Pki
) -> None:
    """The head is part of the batch's transaction: if it cannot be stored, the records are not
    durable either and their callers get MessageLogError (nothing is answered unlogged); the
    next batch commits with a head over what is committed."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await log.append(entry(0))
        block = sqlite3.connect(path)
        try:
            block.execute(
                "CREATE TRIGGER block_heads BEFORE INSERT ON tree_heads "
                "BEGIN SELECT RAISE(ABORT, 'no tree heads now'); END"
            )
            block.commit()
            with pytest.raises(MessageLogError):
                await log.append(entry(1))
            assert read_one(path, "SELECT count(*) FROM records") == (1,)
            block.execute("DROP TRIGGER block_heads")
            block.commit()
        finally:
            block.close()
        assert await log.append(entry(2)) == 1
    report = verify(path, pki)
    assert report.ok and report.records == 2 and report.unsigned_records == 0


async def test_a_failed_batch_leaves_the_committed_ones_signed(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        assert await log.append(entry(0)) == 0
        block = sqlite3.connect(path)
        block.execute(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON records WHEN NEW.message_id = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        block.commit()
        block.close()
        with pytest.raises(MessageLogError):
            await log.append(entry(1, message_id="bad"))
        assert await log.append(entry(2)) == 1
    assert read_one(path, "SELECT count(*), max(size) FROM tree_heads") == (2, 2)
    report = verify(path, pki)
    assert report.ok and report.records == 2 and report.unsigned_records == 0


async def test_an_entry_that_cannot_be_encoded_fails_alone(tmp_path: Path, pki: Pki) -> None:
    """An untyped entry nested too deep for the encoder fails its own append; the others of its
    batch are logged and the tree stays that of the stored records (found in review)."""
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        results = await asyncio.gather(
            log.append(entry(0)), log.append({**entry(1), "extra": deep}), return_exceptions=True
        )
        assert results[0] == 0 and isinstance(results[1], MessageLogError)
        assert await log.append(entry(2)) == 1
    report = verify(path, pki)
    assert report.ok and report.records == 2 and report.unsigned_records == 0


async def test_a_new_signing_key_signs_only_after_its_certificate_is_stored(
    tmp_path: Path, pki: Pki
) -> None:
    """Key rotation: the swap is queued after the new certificate, so every tree head the new
    key signs (stored with a batch or alone) finds its certificate in the file."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await log.append(entry(0))
        log.set_signer(pki.rotated)
        head = await log.sign_tree_head()  # nothing new committed: the old key's head stands
        await log.append(entry(1))
        rotated = await log.sign_tree_head()
    assert head.size == 1 and rotated.size == 2
    assert jwt.api_jws.get_unverified_header(rotated.jws)["x5t#S256"] == pki.rotated.thumbprint
    (stored,) = read_one(
        path, "SELECT count(*) FROM certs WHERE thumbprint = ?", (pki.rotated.thumbprint,)
    )
    assert stored == 1
    report = verify(path, pki)
    assert report.ok and report.tree_heads_verified == report.tree_heads == 2


async def test_appends_of_one_loop_iteration_are_one_batch(tmp_path: Path, pki: Pki) -> None:
    """Appends made during one event-loop iteration reach the writer together: one commit and
    one tree head for all of them (group commit without waiting for a busy writer)."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        seqs = await asyncio.gather(*(log.append(entry(i)) for i in range(20)))
        assert sorted(seqs) == list(range(20))
    assert read_one(path, "SELECT count(*), max(size) FROM tree_heads") == (1, 20)


async def test_close_commits_appends_not_yet_handed_to_the_writer(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    log = MessageLog(path, pki.signer, owner=OWNER)
    log.open()
    tasks = [asyncio.create_task(log.append(entry(i))) for i in range(5)]
    await asyncio.sleep(0)  # the appends are queued on the loop side, not yet handed over
    log.close()
    # (a guard against a hang if they were lost, not a timing assertion)
    assert sorted(await asyncio.wait_for(asyncio.gather(*tasks), 30)) == list(range(5))
    assert log.size == 5
    report = verify(path, pki)
    assert report.ok and report.records == 5


async def test_entry_carries_seq_and_logged_at(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    fixed = time.time()
    original = entry(0)
    with MessageLog(path, pki.signer, owner=OWNER, now=lambda: fixed) as log:
        assert await log.append(original) == 0
    assert "seq" not in original, "the caller's dict is not changed"
    data, stored_leaf, logged_at = read_one(
        path, "SELECT entry, leaf_hash, logged_at FROM records WHERE seq = 0"
    )
    ms = int(fixed * 1000)
    assert logged_at == ms
    assert data == canonical_bytes({**original, "seq": 0, "logged_at": ms})
    assert stored_leaf == leaf_hash(data)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        pytest.param({"amount": 1.5}, TypeError, id="float-not-canonical"),
        pytest.param({"seq": 4}, ValueError, id="caller-sets-seq"),
        pytest.param({"logged_at": 4}, ValueError, id="caller-sets-logged-at"),
        pytest.param({"side": "sideways"}, ValueError, id="unknown-side"),
        pytest.param({"client": ["PS/GOV/MOF/tax"]}, TypeError, id="non-string-column"),
    ],
)
async def test_bad_entry_fails_alone(
    tmp_path: Path, pki: Pki, bad: dict[str, Any], error: type[Exception]
) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        results = await asyncio.gather(
            log.append(entry(0)),
            log.append({**entry(1), **bad}),
            log.append(entry(2)),
            log.append_many([entry(3), {**entry(4), **bad}]),
            return_exceptions=True,
        )
        assert isinstance(results[1], error) and isinstance(results[3], error)
        assert sorted(r for r in results if isinstance(r, int)) == [0, 1]
        assert log.size == 2
    assert verify(path, pki).ok


async def test_tree_head_is_a_standard_jws(tmp_path: Path, pki: Pki) -> None:
    with MessageLog(tmp_path / "log.db", pki.signer, owner=OWNER, log_id="PS/GOV/MOI/ss1") as log:
        await log.append(entry(0))
        head = await log.sign_tree_head()
    assert head is not None
    public_key = pki.signer.cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    decoded = jwt.api_jws.decode_complete(head.jws, public_key, algorithms=["ES256"])
    assert decoded["payload"] == tree_head_payload(
        "PS/GOV/MOI/ss1", OWNER, 1, head.root, head.signed_at
    )
    assert orjson.loads(decoded["payload"])["log"] == "PS/GOV/MOI/ss1"


async def test_inclusion_proof_against_signed_head(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    leaves = stored_leaves(path)
    size, head_root = read_one(path, "SELECT size, root FROM tree_heads WHERE size = 20")
    for seq in (0, 7, 19):
        proof = inclusion_proof(seq, leaves[:size])
        assert verify_inclusion(seq, size, leaves[seq], proof, head_root)


# --- durability and lifecycle -------------------------------------------------------------------


async def test_reopen_restores_size_root_and_frontier(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await asyncio.gather(*(log.append(entry(i)) for i in range(300)))
        first = await log.sign_tree_head()
        log_id = log.log_id
    assert log.size == 300 and log.latest_tree_head() == first
    with MessageLog(path, pki.signer, owner=OWNER) as again:
        assert again.size == 300 and again.log_id == log_id
        assert again.latest_tree_head() == first
        assert await again.append(entry(300)) == 300
        head = await again.sign_tree_head()
        assert head is not None and head.root == root(stored_leaves(path))
    assert verify(path, pki).ok


async def test_log_id_is_fixed_at_creation(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER, log_id="PS/GOV/MOI/ss1"):
        pass
    with pytest.raises(MessageLogError, match="is the log"):
        MessageLog(path, pki.signer, owner=OWNER, log_id="PS/GOV/MOI/ss2").open()


async def test_second_writer_is_refused(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with (
        MessageLog(path, pki.signer, owner=OWNER),
        pytest.raises(MessageLogError, match="already open"),
    ):
        MessageLog(path, pki.signer, owner=OWNER).open()


async def test_append_when_not_open(tmp_path: Path, pki: Pki) -> None:
    log = MessageLog(tmp_path / "log.db", pki.signer, owner=OWNER)
    with pytest.raises(MessageLogError, match="not open"):
        await log.append(entry(0))
    log.open()
    await log.append(entry(0))
    log.close()
    log.close()
    with pytest.raises(MessageLogError, match="not open"):
        await log.append(entry(1))
    assert isinstance(MessageLogError("x"), ExchangeError)


async def test_an_inserted_record_is_never_signed(tmp_path: Path, pki: Pki) -> None:
    """Issue 13 (2): a made-up record INSERTed into the file (the append-only triggers allow
    inserts) lies past the last signed tree head. The store never leaves one there, so it
    refuses to open the log instead of signing over it, naming the record, and ``verify`` fails
    (unless a crash is being examined)."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for i in range(3):
            await log.append(entry(i))
    logged_at = int(time.time() * 1000)
    fields = {**entry(3, message_id="mallory-1", user_id="mallory", path="/family")}
    made_up = canonical_bytes({**fields, "seq": 3, "logged_at": logged_at})
    columns = tuple(fields[k] for k in ("message_id", "client", "service", "side", "status"))
    tamper(
        path,
        (
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (3, logged_at, *columns, made_up, leaf_hash(made_up)),
        ),
    )
    with pytest.raises(MessageLogError, match=r"1 record\(s\) past its last signed tree head"):
        MessageLog(path, pki.signer, owner=OWNER).open()
    try:
        MessageLog(path, pki.signer, owner=OWNER).open()
    except MessageLogError as exc:
        assert "seq 3 (message id mallory-1)" in exc.message
    assert read_one(path, "SELECT count(*), max(size) FROM tree_heads") == (3, 3)
    report = verify(path, pki)
    assert not report.ok and report.unsigned_records == 1
    assert report.first_bad is not None and report.first_bad.seq == 3
    assert report.first_bad.message_id == "mallory-1"
    assert "past the last signed tree head" in report.first_bad.reason
    examined = verify(path, pki, crash=True)
    assert examined.ok and examined.unsigned_records == 1


def _forged_head_row(path: Path, size: int, token: str) -> tuple[str, tuple[Any, ...]]:
    """A tree head row over the first ``size`` stored leaves, with ``token`` as its JWS: what
    someone who can write the file but not sign adds beside an inserted record."""
    signed_at = int(time.time() * 1000)
    forged_root = root(stored_leaves(path)[:size])
    return ("INSERT INTO tree_heads VALUES (?, ?, ?, ?)", (size, forged_root, signed_at, token))


async def _insert_made_up_record(path: Path, seq: int) -> None:
    logged_at = int(time.time() * 1000)
    fields = {**entry(seq, message_id="mallory-1", user_id="mallory", path="/family")}
    made_up = canonical_bytes({**fields, "seq": seq, "logged_at": logged_at})
    columns = tuple(fields[k] for k in ("message_id", "client", "service", "side", "status"))
    tamper(
        path,
        (
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, logged_at, *columns, made_up, leaf_hash(made_up)),
        ),
    )


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda path, pki, genuine: genuine, id="genuine-head-copied"),
        pytest.param(lambda path, pki, genuine: "x.y.z", id="garbage-jws"),
        pytest.param(
            lambda path, pki, genuine: pki.rogue.sign(
                tree_head_payload(
                    read_one(path, "SELECT value FROM meta WHERE key = 'log_id'")[0],
                    OWNER,
                    4,
                    root(stored_leaves(path)[:4]),
                    int(time.time() * 1000),
                )
            ),
            id="signed-by-a-key-of-a-rogue-ca-naming-the-owner",
        ),
    ],
)
async def test_an_inserted_record_under_a_forged_head_row_is_never_signed(
    tmp_path: Path, pki: Pki, forge: Callable[[Path, Pki, str], str]
) -> None:
    """Red team, issue 13 (2) again: besides the made-up record, whoever can write the file
    but not sign adds a tree head row over it (the triggers allow inserts too), its JWS copied
    from a genuine head, garbage, or signed by a key of its own. The store took the latest row's
    stored root for the truth and signed over the record at its next start; deleting the forged
    row afterwards left a log that verified. The latest head must verify as the owner's before
    the store appends: else it refuses to open, naming it."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for i in range(3):
            await log.append(entry(i))
    (genuine,) = read_one(path, "SELECT jws FROM tree_heads WHERE size = 3")
    await _insert_made_up_record(path, 3)
    tamper(path, _forged_head_row(path, 4, forge(path, pki, genuine)), _with_cert(pki.rogue))
    with pytest.raises(MessageLogError, match=r"last tree head .*size 4.* does not verify"):
        MessageLog(path, pki.signer, owner=OWNER).open()
    assert read_one(path, "SELECT count(*), max(size) FROM tree_heads") == (4, 4)
    report = verify(path, pki)
    assert not report.ok and [p.size for p in report.problems if p.kind == "tree_head"] == [4]


async def test_a_log_whose_latest_head_a_rotated_key_signed_opens(tmp_path: Path, pki: Pki) -> None:
    """The check above does not stop key rotation: a head signed by an earlier key of the owner
    opens when its certificate is in the log and a CA the caller trusts issued it; without the
    CAs, only the store's own key is trusted."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.rotated, owner=OWNER) as log:
        await log.append(entry(0))
    with pytest.raises(MessageLogError, match="does not verify"):
        MessageLog(path, pki.signer, owner=OWNER).open()
    with pytest.raises(MessageLogError, match="does not verify"):
        MessageLog(path, pki.signer, owner=OWNER).open(trusted_cas=[pki.rogue_ca.cert])
    log = MessageLog(path, pki.signer, owner=OWNER)
    log.open(trusted_cas=[pki.ca.cert])
    try:
        await log.append(entry(1))
    finally:
        log.close()
    assert verify(path, pki).ok


async def test_a_log_of_another_server_is_refused(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await log.append(entry(0))
    other = SecurityServerId("PS", "GOV", "MOI", "ss2")
    with pytest.raises(MessageLogError, match="is the message log of PS/GOV/MOI/ss1"):
        MessageLog(path, pki.signer, owner=other).open()


async def test_empty_log(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        pass
    assert verify(path, pki).ok and verify(path, pki).records == 0
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        head = await log.sign_tree_head()
        assert (head.size, head.root) == (0, EMPTY_ROOT)
    report = verify(path, pki)
    assert report.ok and report.tree_heads_verified == 1


async def test_cancelled_append_still_leaves_a_consistent_log(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        cancelled = asyncio.create_task(log.append(entry(0)))
        await asyncio.sleep(0)
        cancelled.cancel()
        seqs = await asyncio.gather(*(log.append(entry(i)) for i in range(1, 10)))
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert sorted(seqs) == list(range(1, 10)), "the queued record was still logged"
    report = verify(path, pki)
    assert report.ok and report.records == 10


# --- write failures -----------------------------------------------------------------------------


async def test_locked_database_fails_the_batch_and_recovers(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER, busy_timeout=0.05) as log:
        await log.append_many([entry(i) for i in range(3)])
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            results = await asyncio.gather(
                *(log.append(entry(10 + i)) for i in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, MessageLogError) for r in results), results
            assert log.size == 3
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert await log.append(entry(3)) == 3, "the failed batch consumed no seqs"
    report = verify(path, pki)
    assert report.ok and report.records == 4


async def test_write_failure_error_is_exchange_error(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER, busy_timeout=0.01) as log:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(MessageLogError) as caught:
                await log.append(entry(0))
        finally:
            blocker.close()
    assert caught.value.code == "Server.MessageLogFailed"
    assert "locked" in caught.value.internal
    assert verify(path, pki).ok


async def test_unwritable_location(tmp_path: Path, pki: Pki) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(MessageLogError, match="cannot open"):
        MessageLog(blocker / "log.db", pki.signer, owner=OWNER).open()


# --- tampering ----------------------------------------------------------------------------------


def _edit_entry(path: Path, seq: int, *, with_leaf: bool) -> list[tuple[str, tuple[Any, ...]]]:
    (data,) = read_one(path, "SELECT entry FROM records WHERE seq = ?", (seq,))
    forged = data.replace(b"clerk-7", b"clerk-9")
    statements = [("UPDATE records SET entry = ? WHERE seq = ?", (forged, seq))]
    if with_leaf:
        statements.append(
            ("UPDATE records SET leaf_hash = ? WHERE seq = ?", (leaf_hash(forged), seq))
        )
    return statements


def _resigned_head(
    path: Path, size: int, signer: Signer, owner: SecurityServerId = OWNER
) -> list[tuple[str, tuple[Any, ...]]]:
    (log_id,) = read_one(path, "SELECT value FROM meta WHERE key = 'log_id'")
    signed_at = int(time.time() * 1000)
    fake_root = b"\x42" * 32
    token = signer.sign(tree_head_payload(log_id, owner, size, fake_root, signed_at))
    return [
        ("DELETE FROM tree_heads WHERE size = ?", (size,)),
        ("INSERT INTO tree_heads VALUES (?, ?, ?, ?)", (size, fake_root, signed_at, token)),
    ]


def _bad_signature(path: Path, size: int) -> list[tuple[str, tuple[Any, ...]]]:
    (token,) = read_one(path, "SELECT jws FROM tree_heads WHERE size = ?", (size,))
    (other,) = read_one(path, "SELECT jws FROM tree_heads WHERE size = ?", (size - 5,))
    forged = token.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]
    return [("UPDATE tree_heads SET jws = ? WHERE size = ?", (forged, size))]


def _with_cert(signer: Signer) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO certs VALUES (?, ?)",
        (signer.thumbprint, cert_pem(signer.cert)),
    )


Tamper = Callable[[Path, Pki], list[tuple[str, tuple[Any, ...]]]]

RECORD_TAMPERING = [
    pytest.param(
        lambda p, k: _edit_entry(p, 7, with_leaf=False),
        (7, "msg-7", "do not match the stored leaf hash", None),
        False,
        id="edit-entry-bytes-only",
    ),
    pytest.param(
        lambda p, k: _edit_entry(p, 7, with_leaf=True),
        (5, "msg-5", "altered together with its stored leaf hash", (5, 10)),
        True,
        id="edit-entry-and-leaf-hash",
    ),
    pytest.param(
        lambda p, k: [("UPDATE records SET leaf_hash = ? WHERE seq = 7", (b"\x00" * 32,))],
        (7, "msg-7", "do not match the stored leaf hash", None),
        True,
        id="edit-leaf-hash-only",
    ),
    pytest.param(
        lambda p, k: [("DELETE FROM records WHERE seq = 12", ())],
        (12, None, "record 12 is missing (deleted)", None),
        True,
        id="delete-middle-record",
    ),
    pytest.param(
        lambda p, k: [("DELETE FROM records WHERE seq = 0", ())],
        (0, None, "record 0 is missing (deleted)", None),
        True,
        id="delete-first-record",
    ),
    pytest.param(
        lambda p, k: [
            ("UPDATE records SET seq = -1 WHERE seq = 3", ()),
            ("UPDATE records SET seq = 3 WHERE seq = 8", ()),
            ("UPDATE records SET seq = 8 WHERE seq = -1", ()),
        ],
        (3, "msg-8", "was logged as seq 8 (records reordered)", None),
        True,
        id="reorder-two-records",
    ),
    pytest.param(
        lambda p, k: [("DELETE FROM records WHERE seq >= 17", ())],
        (17, None, "records 17..19 are missing: the log was truncated", None),
        True,
        id="truncate-below-last-tree-head",
    ),
    pytest.param(
        lambda p, k: [("UPDATE records SET client = 'PS/GOV/X/y' WHERE seq = 9", ())],
        (9, "msg-9", "client column differs from the entry", None),
        False,
        id="edit-indexed-column",
    ),
    pytest.param(
        lambda p, k: [("UPDATE records SET entry = x'00ff' WHERE seq = 4", ())],
        (4, "msg-4", "not a JSON object", None),
        False,
        id="garbage-entry",
    ),
]


@pytest.mark.parametrize(("mutate", "expected", "refuses_open"), RECORD_TAMPERING)
async def test_record_tampering_is_pinpointed(
    tmp_path: Path,
    pki: Pki,
    mutate: Tamper,
    expected: tuple[int, str | None, str, tuple[int, int] | None],
    refuses_open: bool,
) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    assert verify(path, pki).ok
    tamper(path, *mutate(path, pki))
    report = verify(path, pki)
    assert not report.ok
    bad = report.first_bad
    assert bad is not None, report.to_dict()
    seq, message_id, reason, span = expected
    if message_id is None:
        assert bad.seq == seq and reason in bad.reason, bad
    else:
        assert (bad.seq, bad.message_id) == (seq, message_id), bad
        assert reason in bad.reason and bad.range == span, bad
    orjson.dumps(report.to_dict())
    if refuses_open:
        with pytest.raises(MessageLogError, match="exchange log verify"):
            MessageLog(path, pki.signer, owner=OWNER).open()


async def test_range_pinpoints_exactly_with_per_record_heads(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for i in range(10):
            await log.append(entry(i))
    tamper(path, *_edit_entry(path, 6, with_leaf=True))
    bad = verify(path, pki).first_bad
    assert bad is not None and (bad.seq, bad.message_id, bad.range) == (6, "msg-6", (6, 7))


HEAD_FORGERIES = [
    pytest.param(
        lambda p, k: [("UPDATE tree_heads SET root = ? WHERE size = 10", (b"\x42" * 32,))],
        "stored root differs from the signed root",
        id="head-wrong-root",
    ),
    pytest.param(
        lambda p, k: _bad_signature(p, 10),
        "signature does not verify",
        id="head-bad-signature",
    ),
    pytest.param(
        lambda p, k: _resigned_head(p, 10, k.rogue),
        "is not in the log",
        id="head-unknown-cert",
    ),
    pytest.param(
        lambda p, k: [_with_cert(k.rogue), *_resigned_head(p, 10, k.rogue)],
        "not issued by a trusted CA",
        id="head-untrusted-cert",
    ),
    pytest.param(
        lambda p, k: [_with_cert(k.no_usage), *_resigned_head(p, 10, k.no_usage)],
        "lacks digitalSignature",
        id="head-cert-without-signing-usage",
    ),
    pytest.param(
        lambda p, k: [_with_cert(k.rogue), *_resigned_head(p, 40, k.rogue)],
        "not issued by a trusted CA",
        id="head-forged-beyond-end",
    ),
    pytest.param(
        lambda p, k: [_with_cert(k.member), *_resigned_head(p, 10, k.member)],
        "signed by member PS/GOV/MOF, not by the log's owner PS/GOV/MOI",
        id="head-signed-by-another-members-signing-key",
    ),
    pytest.param(
        lambda p, k: [_with_cert(k.auth), *_resigned_head(p, 10, k.auth)],
        "cannot sign messages",
        id="head-signed-by-an-authentication-key",
    ),
    pytest.param(
        lambda p, k: _resigned_head(p, 10, k.signer, SecurityServerId("PS", "GOV", "MOI", "ss2")),
        "names owner 'PS/GOV/MOI/ss2'",
        id="head-of-another-server-of-the-owner",
    ),
    pytest.param(
        lambda p, k: [("UPDATE meta SET value = 'PS/GOV/MOF/ss1' WHERE key = 'owner'", ())],
        "",
        id="meta-owner-edited-changes-nothing",
    ),
    pytest.param(
        lambda p, k: [("UPDATE tree_heads SET signed_at = signed_at + 1 WHERE size = 15", ())],
        "signing time differs",
        id="head-edited-time",
    ),
    pytest.param(
        lambda p, k: [("UPDATE meta SET value = 'another-log' WHERE key = 'log_id'", ())],
        "was signed for log",
        id="head-from-another-log",
    ),
]


@pytest.mark.parametrize(("mutate", "reason"), HEAD_FORGERIES)
async def test_forged_tree_heads_are_reported(
    tmp_path: Path, pki: Pki, mutate: Tamper, reason: str
) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    tamper(path, *mutate(path, pki))
    report = verify(path, pki)
    if not reason:  # the file's word about its owner is not what the heads are checked against
        assert report.ok and report.stated_owner == "PS/GOV/MOF/ss1" and report.owner == str(OWNER)
        return
    assert not report.ok
    assert report.first_bad is None, "a forged head says nothing against the records"
    heads = [p for p in report.problems if p.kind == "tree_head"]
    assert heads and reason in heads[0].reason, report.to_dict()


async def test_untrusted_ca_fails_every_head(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    await build_log(path, pki)
    report = verify_log(path, trusted_cas=[pki.rogue_ca.cert], owner=OWNER, check_records=False)
    assert not report.ok and report.tree_heads_verified == 0 and len(report.problems) == 4


async def test_heads_verify_only_as_the_log_of_their_owner(tmp_path: Path, pki: Pki) -> None:
    """The expected owner comes from the caller: the same genuine log checked as the log of
    another server fails at every head."""
    path = tmp_path / "log.db"
    await build_log(path, pki)
    for other in (
        SecurityServerId("PS", "GOV", "MOF", "ss1"),
        SecurityServerId(*OWNER.owner.parts, "ss2"),
    ):
        report = verify_log(path, trusted_cas=[pki.ca.cert], owner=other, check_records=False)
        assert not report.ok and report.tree_heads_verified == 0 and report.owner == str(other)


# --- verification while running, progress, entry checks -----------------------------------------


async def test_verify_while_the_writer_runs(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    seen: list[tuple[int, int]] = []
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await asyncio.gather(*(log.append(entry(i)) for i in range(5000)))
        report = await asyncio.to_thread(
            verify, path, pki, progress=lambda done, total: seen.append((done, total))
        )
        await log.append(entry(5000))
    assert report.ok and report.records == 5000
    assert seen[-1] == (5000, 5000) and (4096, 5000) in seen


async def test_the_logs_certificates_are_the_verifiers_keys(tmp_path: Path, pki: Pki) -> None:
    """Registered certificates are what records and heads are checked with: a signing key is
    found with its member; one the log does not hold, or of an untrusted CA, or that is no
    signing certificate, is refused with the reason."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        assert log.register_cert(pki.member.cert) == pki.member.thumbprint
        log.register_cert(pki.member.cert)
        log.register_cert(pki.auth.cert)
        await log.append(entry(0))
    conn = open_readonly(path)
    try:
        lookup = CertLookup(certificates_of_log(conn), [pki.ca.cert])
        assert lookup.signer_key(pki.member.thumbprint).member == MemberId("PS", "GOV", "MOF")
        assert lookup.signer_key(pki.signer.thumbprint).member == OWNER.owner
        with pytest.raises(JwsError, match="not in the log"):
            lookup.signer_key(pki.rogue.thumbprint)
        with pytest.raises(JwsError, match="cannot sign messages"):
            lookup.signer_key(pki.auth.thumbprint)
        with pytest.raises(JwsError, match="not issued by a trusted CA"):
            CertLookup(certificates_of_log(conn), [pki.rogue_ca.cert]).signer_key(
                pki.signer.thumbprint
            )
    finally:
        conn.close()


async def test_a_certificate_stored_in_anothers_place_is_not_taken_out(
    tmp_path: Path, pki: Pki
) -> None:
    """What is taken out of a log's ``certs`` table (for a proof file, an evidence bundle, the
    signer ``log heads`` shows) is only the certificate its thumbprint names."""
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        log.register_cert(pki.member.cert)
        await log.append(entry(0))
    head = next(iter(iter_heads(path)))
    request = pki.member.sign(b"{}")
    conn = open_readonly(path)
    try:
        assert signer_certificates(conn, [head.jws, request, "not a token"]) == {
            pki.signer.thumbprint: cert_pem(pki.signer.cert),
            pki.member.thumbprint: cert_pem(pki.member.cert),
        }
    finally:
        conn.close()
    swap = sqlite3.connect(path)
    with swap:
        swap.execute(
            "UPDATE certs SET pem = ? WHERE thumbprint = ?",
            (cert_pem(pki.member.cert), pki.signer.thumbprint),
        )
    swap.close()
    conn = open_readonly(path)
    try:
        assert signer_certificates(conn, [head.jws, request]) == {
            pki.member.thumbprint: cert_pem(pki.member.cert)
        }
    finally:
        conn.close()
    assert next(iter(iter_heads(path))).signer is None


async def test_entries_that_are_not_exchange_records_are_findings(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        await log.append(entry(0))
    report = verify(path, pki, check_records=True)
    assert report.first_bad is not None and report.first_bad.seq == 0
    assert report.tree_heads_verified == report.tree_heads == 1


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param(None, ConfigurationError, id="missing-file"),
        pytest.param(b"not sqlite at all" * 100, ConfigurationError, id="not-a-database"),
        pytest.param("empty-db", ConfigurationError, id="database-without-log-tables"),
    ],
)
def test_verify_refuses_what_is_not_a_log(
    tmp_path: Path, pki: Pki, content: bytes | str | None, error: type[Exception]
) -> None:
    path = tmp_path / "log.db"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "empty-db":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE x(y)")
        conn.close()
    with pytest.raises(error):
        verify(path, pki)
    with pytest.raises(error):
        query_records(path)


# --- queries ------------------------------------------------------------------------------------


async def test_query_filters(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "log.db"
    clock = [1_700_000_000.0]
    with MessageLog(path, pki.signer, owner=OWNER, now=lambda: clock[0]) as log:
        for i in range(30):
            clock[0] += 1
            await log.append(entry(i))

    (view,) = query_records(path, message_id="msg-7")
    assert (view.seq, view.client, view.side, view.status) == (
        7,
        "PS/GOV/MOF/tax",
        "consumer",
        "200",
    )
    assert view.logged_at == "2023-11-14T22:13:28.000+00:00"
    assert view.decision == "effect=allow, grant=tax-persons, policy_version=3"
    assert view.released_fields == ("name", "birth_date")
    assert view.entry["seq"] == 7 and view.entry["purpose"] == "citizen-service"
    assert orjson.dumps(view.to_dict())

    tax = query_records(path, client="PS/GOV/MOF/tax")
    assert [v.seq for v in tax] == list(range(1, 30, 2))
    providers = query_records(path, side="provider", client="PS/GOV/MOF/tax")
    assert [v.seq for v in providers] == [3, 9, 15, 21, 27]
    since = dt.datetime.fromtimestamp(1_700_000_011, dt.UTC)
    until = dt.datetime.fromtimestamp(1_700_000_014, dt.UTC)
    assert [v.seq for v in query_records(path, since=since, until=until)] == [10, 11, 12]
    assert [v.seq for v in query_records(path, limit=5, offset=20)] == [20, 21, 22, 23, 24]
    assert query_records(path, service="PS/GOV/MOI/other/x") == []
    with pytest.raises(ValueError):
        query_records(path, since=dt.datetime(2023, 1, 1))
    with pytest.raises(ValueError):
        query_records(path, limit=0)
