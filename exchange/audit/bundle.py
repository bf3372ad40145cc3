"""Evidence bundles: one exchange as a server logged it, in a zip an auditor verifies offline.

:func:`export_bundle` writes, for one X-Road-Id, each record of it (the entry bytes exactly as
stored, so they hash to the Merkle leaf, RFC 9162 §2.1.1), the signed request and response
(compact JWS), the signers' and the tree head signer's certificates with their issuing CA (PEM),
the inclusion proof of each record (RFC 9162 §2.1.3), the signed tree head (compact JWS) and its
RFC 3161 token (DER, over SHA-256 of the head's JWS), and a ``manifest.json`` naming each part and
what it proves. :func:`verify_bundle` checks such a zip with only the public trust material of a
trust folder (:mod:`exchange.audit.trustdir`: approved CA and TSA certificates, the anchor) and
the security server whose log it claims to come from (the *owner*, which the auditor gives:
never taken from the bundle); the tree head and its time-stamp go through
:mod:`exchange.audit.headcheck`, each record through
:func:`~exchange.trustcore.records.verify_record`. The zip is read within bounds
(:mod:`exchange.audit.zipread`).

This package reads no server configuration: the command line passes paths and certificates.

Records archived out of the live log are read from their archive files. Bundles of records
logged without bodies prove the signed digests only; :func:`bundle_notes` says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509

from exchange.audit.headcheck import HeadEvidence, check_head
from exchange.audit.trustdir import TrustMaterial
from exchange.audit.zipread import read_members
from exchange.errors import ExchangeError
from exchange.identifiers import SecurityServerId
from exchange.messagelog import merkle
from exchange.messagelog.archive import ArchiveReader
from exchange.messagelog.certs import CertLookup, signer_certificates
from exchange.messagelog.proofs import (
    InclusionProof,
    inclusion_checks,
    inclusion_for_message,
    stamped_size_covering,
)
from exchange.messagelog.store import open_readonly, query_if_table
from exchange.protocol import jws
from exchange.protocol.canonical import b64url
from exchange.trust.keys import cert_from_pem, cert_pem
from exchange.trust.validation import find_issuer, issuers
from exchange.trustcore.records import Proof, RecordVerdict, verify_record
from exchange.trustcore.treeheads import stated_tree_head

FORMAT = "exchange-evidence-bundle/1"
MANIFEST = "manifest.json"
# the default freshness of the global configuration (docs/design.md §12): a response this old or
# younger at the time of the record shows the status then
OCSP_MAX_AGE = 3600
TREE_HEAD = "tree-head.jws"
TOKEN = "tree-head.tsr"
REQUEST = "request.jws"
RESPONSE = "response.jws"
_RECORD = re.compile(r"record-(\d+)\.json")

Stamp = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Check:
    """One numbered check :func:`verify_bundle` made; ``reason`` says why it failed."""

    number: int
    what: str
    ok: bool
    reason: str = ""

    def line(self) -> str:
        mark = "ok" if self.ok else "FAILED"
        tail = f": {self.reason}" if self.reason else ""
        return f"({self.number}) {self.what} ... {mark}{tail}"


# --- export ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFiles:
    """Where a security server keeps its message log: the plain values export needs."""

    log_path: Path
    archive_dir: Path


async def export_bundle(
    log: LogFiles,
    message_id: str,
    out: Path,
    *,
    cas: Sequence[x509.Certificate],
    stamp: Stamp | None = None,
) -> Path:
    """Write the evidence bundle of ``message_id`` to ``out`` (a zip) and return its path.

    The records are proved against the latest time-stamped tree head that covers them; when
    there is none, ``stamp`` (if given) is awaited to sign and stamp a fresh one first. Each
    archive file is read once: one reader serves the record search, the proof and the entries.
    ``cas`` are the approved CAs, whose certificates go in beside the signers'.
    """
    archives = ArchiveReader(log.log_path, log.archive_dir, message_id=message_id)
    size = stamped_size_covering(log.log_path, message_id, archives)
    if size is None and stamp is not None:
        await stamp()
        size = stamped_size_covering(log.log_path, message_id, archives)
    proofs = inclusion_for_message(log.log_path, message_id, size=size, reader=archives)
    entries = _entries(log.log_path, message_id, [p.seq for p in proofs], archives)
    tokens = [
        t
        for e in entries.values()
        for t in (_loads(e).get("request_jws"), _loads(e).get("response_jws"))
        if isinstance(t, str)
    ]
    certs = _certs_for(log.log_path, proofs[0].certificates, tokens, cas)
    _write_zip(out, message_id, proofs, entries, certs, _ocsp_for(log.log_path, tokens))
    return out


def _ocsp_for(log_path: Path, tokens: Sequence[str]) -> dict[str, bytes]:
    """OCSP responses the server verified for the request and response signers (DER), by name
    ``ocsp/<x5t#S256>-<digest>.der``; none when the issuing CA publishes no responder."""
    thumbs = {str(jws.unverified_header(t).get("x5t#S256")) for t in tokens}
    conn = open_readonly(log_path)
    try:
        cursor = query_if_table(conn, "SELECT thumbprint, digest, der FROM ocsp_responses")
        rows = [] if cursor is None else cursor.fetchall()
    finally:
        conn.close()
    return {f"ocsp/{t}-{d[:16]}.der": bytes(der) for t, d, der in rows if t in thumbs}


def _entries(
    log_path: Path, message_id: str, seqs: Sequence[int], archives: ArchiveReader
) -> dict[int, bytes]:
    """The entries exactly as logged, from the database or, once archived, their archive."""
    conn = open_readonly(log_path)
    try:
        entries = {
            s: bytes(row[0])
            for s in seqs
            if (row := conn.execute("SELECT entry FROM records WHERE seq = ?", (s,)).fetchone())
        }
    finally:
        conn.close()
    if len(entries) < len(seqs):
        entries.update(archives.find(message_id))
    return entries


def _loads(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _certs_for(
    log_path: Path,
    head_certs: Mapping[str, str],
    tokens: Sequence[str],
    cas: Sequence[x509.Certificate],
) -> dict[str, str]:
    """PEM by x5t#S256: the tree head's signer (``head_certs``, which its proof carries), the
    signers of ``tokens`` (from the log) and the CAs that issued them."""
    conn = open_readonly(log_path)
    try:
        pems = {**head_certs, **signer_certificates(conn, tokens)}
    finally:
        conn.close()
    for pem in list(pems.values()):
        for ca in issuers(cert_from_pem(pem), cas) or ():
            pems[jws.cert_thumbprint(ca)] = cert_pem(ca)
    return pems


def _write_zip(
    out: Path,
    message_id: str,
    proofs: Sequence[InclusionProof],
    entries: dict[int, bytes],
    certs: dict[str, str],
    ocsp: dict[str, bytes],
) -> None:
    first = _loads(entries[proofs[0].seq])
    head = stated_tree_head(proofs[0].tree_head_jws)
    token = proofs[0].timestamp_token
    parts: dict[str, str] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in proofs:
            z.writestr(f"record-{p.seq}.json", entries[p.seq])
            parts[f"record-{p.seq}.json"] = "the log entry exactly as stored: its leaf hash"
            z.writestr(f"inclusion-{p.seq}.json", orjson.dumps(p.to_dict()))
            parts[f"inclusion-{p.seq}.json"] = "RFC 9162 inclusion of the record under the head"
        for name, field, proves in (
            (REQUEST, "request_jws", "what the client signed (compact JWS)"),
            (RESPONSE, "response_jws", "what the provider signed, bound to the request"),
        ):
            if isinstance(first.get(field), str):
                z.writestr(name, first[field])
                parts[name] = proves
        for thumb, pem in sorted(certs.items()):
            z.writestr(f"certs/{thumb}.pem", pem)
            parts[f"certs/{thumb}.pem"] = "a signer's certificate or its issuing CA (PEM)"
        for name, der in sorted(ocsp.items()):
            z.writestr(name, der)
            parts[name] = "OCSP response (RFC 6960, DER) the server verified for a signer"
        z.writestr(TREE_HEAD, proofs[0].tree_head_jws)
        parts[TREE_HEAD] = "the log's signed size and Merkle root (compact JWS)"
        if token is not None:
            z.writestr(TOKEN, token)
            parts[TOKEN] = "RFC 3161 token (DER) over SHA-256 of tree-head.jws: when it existed"
        manifest = {
            "format": FORMAT,
            "message_id": message_id,
            "log": head.log_id,
            "owner": head.owner,
            "records": [p.seq for p in proofs],
            "tree_size": proofs[0].tree_size,
            "time_stamped": token is not None,
            "parts": parts,
            "ocsp_responses": len(ocsp),
        }
        if token is None:
            manifest["note"] = "the tree head is not time-stamped: it proves no time"
        z.writestr(MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


# --- offline verification ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bundle:
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: Path) -> _Bundle:
        return cls(read_members(path))

    def text(self, name: str) -> str | None:
        data = self.files.get(name)
        return data.decode("ascii", "replace") if data is not None else None

    def seqs(self) -> list[int]:
        return sorted(int(m[1]) for n in self.files if (m := _RECORD.fullmatch(n)))

    def entry(self, seq: int) -> dict[str, Any] | None:
        try:
            value = orjson.loads(self.files[f"record-{seq}.json"])
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def manifest(self) -> dict[str, Any] | None:
        data = self.files.get(MANIFEST)
        return None if data is None else _loads(data) or None

    def lookup(self, cas: Sequence[x509.Certificate]) -> CertLookup:
        """A :class:`CertLookup` over the bundle's certificates (``certs/<x5t#S256>.pem``)."""
        pems = {
            name[len("certs/") : -len(".pem")]: data.decode("ascii", "replace")
            for name, data in self.files.items()
            if name.startswith("certs/") and name.endswith(".pem")
        }
        return CertLookup(pems.get, cas, holder="the bundle")


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What :func:`examine_bundle` found: the numbered checks, what each record proves, and
    the bundle's tree head and time-stamp as far as they verified."""

    checks: list[Check]
    verdicts: dict[int, RecordVerdict]
    entries: dict[int, dict[str, Any]]
    head: HeadEvidence | None
    included: frozenset[int] = frozenset()
    """The records that hash to their proof's leaf, whose path leads to the head's root."""
    notes: tuple[str, ...] = ()
    """What the bundle cannot show (:func:`bundle_notes`)."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def in_log(self, seq: int) -> bool:
        """Record ``seq`` is proven in the owner's log: it hashes to its leaf, its path leads
        to the head's root, and the head is the owner's (checks (2)–(4))."""
        return seq in self.included and self.head is not None and self.head.head is not None


def verify_bundle(path: Path, trust_dir: Path, owner: SecurityServerId) -> list[Check]:
    """Verify an evidence bundle offline against the trust folder, as a bundle of the log of
    ``owner``; every check, numbered."""
    return examine_bundle(path, trust_dir, owner).checks


def examine_bundle(path: Path, trust_dir: Path, owner: SecurityServerId) -> BundleReport:
    """:func:`verify_bundle`, with what the verified parts say (for the auditor's summary), the
    bundle read once."""
    bundle = _Bundle.read(path)
    report = _verified(bundle, TrustMaterial.load(trust_dir), owner)
    return dataclasses.replace(report, notes=_notes(bundle))


def _verified(bundle: _Bundle, trust: TrustMaterial, owner: SecurityServerId) -> BundleReport:
    seqs = bundle.seqs()
    head = bundle.text(TREE_HEAD)
    if not seqs or head is None:
        missing = Check(1, "the bundle holds a record and a tree head", False, "parts missing")
        return BundleReport([missing], {}, {}, None)
    lookup = bundle.lookup(trust.cas)
    verdicts: dict[int, RecordVerdict] = {}
    # (1) the manifest describes these records of this exchange
    checks: list[tuple[str, str | None]] = [
        ("the manifest names this exchange and its records", _manifest(bundle, seqs))
    ]
    # (2) each record hashes to its proof's leaf, (3) whose path leads to the head's root
    included = set()
    for seq in seqs:
        found = _record_checks(bundle, seq, head)
        checks += found
        if all(reason is None for _, reason in found):
            included.add(seq)
    # (4) the tree head is signed by the owner's signing key, for the owner's log; (5) the RFC
    # 3161 token stamps SHA-256 of the tree head JWS, signed by an approved TSA
    evidence = check_head(head, bundle.files.get(TOKEN), lookup, trust, owner)
    checks.append((f"the tree head is signed by the log's owner {owner}", evidence.head_problem))
    stamp_problem = evidence.stamp_problem
    if evidence.unstamped:
        stamp_problem = "the bundle holds no time-stamp token: the tree head is not time-stamped"
    checks.append(("the tree head is time-stamped by an approved TSA", stamp_problem))
    # (6) what each record states is what its signed request and response say
    for seq in seqs:
        verdict, reason = _entry(bundle, seq, lookup, owner)
        if verdict is not None:
            verdicts[seq] = verdict
        what = verdict.proof.value if verdict is not None else "nothing"
        checks.append((f"record {seq} is evidence of {what}", reason))
    # (7) where the bundle holds OCSP responses, each signer was "good" when it signed
    for seq in seqs:
        checks += _ocsp_checks(bundle, seq, lookup, trust.cas)
    numbered = [
        Check(i, what, reason is None, reason or "") for i, (what, reason) in enumerate(checks, 1)
    ]
    entries = {seq: entry for seq in seqs if (entry := bundle.entry(seq)) is not None}
    return BundleReport(numbered, verdicts, entries, evidence, frozenset(included))


def _manifest(bundle: _Bundle, seqs: list[int]) -> str | None:
    manifest = bundle.manifest()
    if manifest is None:
        return "manifest.json is missing or not a JSON object"
    if manifest.get("format") != FORMAT:
        return f"manifest.json is not of format {FORMAT}"
    if manifest.get("records") != seqs:
        return f"manifest.json names records {manifest.get('records')!r}, the bundle holds {seqs}"
    message_id = manifest.get("message_id")
    for seq in seqs:
        entry = bundle.entry(seq)
        if entry is None or entry.get("message_id") != message_id:
            return f"manifest.json names message id {message_id!r}, record {seq} another"
    return None


def bundle_notes(path: Path) -> list[str]:
    """What the bundle cannot show, for the auditor: records logged without bodies."""
    return list(_notes(_Bundle.read(path)))


def _notes(bundle: _Bundle) -> tuple[str, ...]:
    notes = []
    for seq in bundle.seqs():
        entry = bundle.entry(seq) or {}
        if entry.get("bodies") == "digests-only":
            notes.append(
                f"record {seq} was logged without bodies (metadata-only logging): the signatures "
                "prove who asked what of whom and when, and the SHA-256 digests of the request "
                "and response bodies, but not their content; only someone holding a body can "
                "show that it matches"
            )
    return tuple(notes)


def _record_checks(bundle: _Bundle, seq: int, head: str) -> list[tuple[str, str | None]]:
    entry = bundle.files[f"record-{seq}.json"]
    try:
        proof = orjson.loads(bundle.files[f"inclusion-{seq}.json"])
    except (KeyError, orjson.JSONDecodeError):
        return [(f"record {seq} has an inclusion proof", "inclusion proof missing or not JSON")]
    if not isinstance(proof, dict):
        return [(f"record {seq} has an inclusion proof", "inclusion proof is not an object")]
    # (1) the record hashes to the proof's leaf, and the proof is for this record
    leaf = merkle.leaf_hash(entry)
    if proof.get("seq") != seq:
        leaf_reason: str | None = f"the inclusion proof is for record {proof.get('seq')}, not {seq}"
    elif proof.get("leaf_hash") != b64url(leaf):
        leaf_reason = "the record does not hash to the proof's leaf (record edited)"
    else:
        leaf_reason = None
    # (2) the audit path leads to the root the bundled tree head signs
    failed = [c.what for c in inclusion_checks(proof) if not c.ok]
    if proof.get("tree_head_jws") != head:
        failed.append("the proof names another tree head than tree-head.jws")
    path_reason = "; ".join(f"failed: {f}" for f in failed) or None
    return [
        (f"record {seq} hashes to the inclusion proof's leaf", leaf_reason),
        (f"record {seq}'s inclusion proof leads to the tree head's root", path_reason),
    ]


def _entry(
    bundle: _Bundle, seq: int, lookup: CertLookup, owner: SecurityServerId
) -> tuple[RecordVerdict | None, str | None]:
    entry = bundle.entry(seq)
    if entry is None:
        return None, "the record is not a JSON object"
    logged_at = entry.get("logged_at")
    at = (
        dt.datetime.fromtimestamp(logged_at / 1000, dt.UTC)
        if isinstance(logged_at, int) and not isinstance(logged_at, bool)
        else None
    )
    verdict = verify_record(entry, lookup.at(at), owner=owner)
    problems = list(verdict.problems)
    if verdict.proof is Proof.NOTHING and not problems:
        problems.append(
            "not evidence: the record carries no signed request, so only the log's owner states it"
        )
    for name, field in ((REQUEST, "request_jws"), (RESPONSE, "response_jws")):
        if name in bundle.files and bundle.text(name) != entry.get(field):
            problems.append(f"{name} differs from the record's {field}")
    return verdict, "; ".join(problems) or None


def _ocsp_checks(
    bundle: _Bundle, seq: int, lookup: CertLookup, cas: Sequence[x509.Certificate]
) -> list[tuple[str, str | None]]:
    from exchange.trust.ocsp import OcspError, verify_ocsp_response

    responses = {n: d for n, d in bundle.files.items() if n.startswith("ocsp/")}
    if not responses:
        return []
    entry = bundle.entry(seq) or {}
    stamp = entry.get("logged_at")
    logged_at = dt.datetime.fromtimestamp(
        (stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else 0) / 1000, dt.UTC
    )
    checks: list[tuple[str, str | None]] = []
    for field in ("request_jws", "response_jws"):
        token = entry.get(field)
        if not isinstance(token, str):
            continue
        try:
            thumb = str(jws.unverified_header(token).get("x5t#S256"))
        except ExchangeError:
            continue  # a malformed token: the record's own check reports it
        cert = lookup.get(thumb)
        mine = [d for n, d in responses.items() if n.startswith(f"ocsp/{thumb}-")]
        issuer = find_issuer(cert, cas) if cert is not None else None
        what = f"record {seq}: the {field[:-4]} signer's certificate was good (OCSP) when it signed"
        if cert is None or issuer is None or not mine:
            checks.append((what, "no OCSP response for this signer in the bundle"))
            continue
        reasons = []
        for der in mine:
            try:
                verify_ocsp_response(
                    der, cert=cert, issuer=issuer, now=logged_at, max_age_seconds=OCSP_MAX_AGE
                )
            except OcspError as exc:
                reasons.append(exc.message)
            else:
                reasons = []
                break
        checks.append((what, "; ".join(reasons) or None))
    return checks


# --- both sides ------------------------------------------------------------------------------


def correlate_bundles(
    a: Path, b: Path, trust_dir: Path, owners: tuple[SecurityServerId, SecurityServerId]
) -> list[Check]:
    """Both bundles verify, each as a bundle of its owner's log, and describe the same exchange
    from its two sides: one the consumer's record, one the provider's, of the same signed
    request (its SHA-512 hash) answered by the same signed response."""
    trust = TrustMaterial.load(trust_dir)
    checks: list[tuple[str, str | None]] = []
    sides: list[dict[str, tuple[str, str | None]]] = []
    for path, owner in zip((a, b), owners, strict=True):
        bundle = _Bundle.read(path)
        report = _verified(bundle, trust, owner)
        failed = [c for c in report.checks if not c.ok]
        # (1) each bundle verifies on its own, as a bundle of its owner's log
        reason = "; ".join(f"({c.number}) {c.reason}" for c in failed) or None
        checks.append((f"{path.name} verifies as a bundle of {owner}'s log", reason))
        sides.append(
            {
                str(v.request.request_hash): (
                    "consumer" if v.request.request.client_server == owner else "provider",
                    v.response.token if v.response is not None else None,
                )
                for v in report.verdicts.values()
                if v.ok and v.request is not None
            }
        )
    # (2) both hold a verified record of the same signed request (its SHA-512 hash)
    same = sorted(set(sides[0]) & set(sides[1]))
    checks.append(
        (
            "both bundles hold a verified record of the same signed request",
            None if same else "the bundles describe different requests (request hashes differ)",
        )
    )
    # (3) one is the consumer's side of it and the other the provider's
    pairs = [(sides[0][h], sides[1][h]) for h in same]
    checks.append(
        (
            "one bundle is the consumer's record, the other the provider's",
            None
            if any({x[0], y[0]} == {"consumer", "provider"} for x, y in pairs)
            else "both bundles are records of the same side",
        )
    )
    # (4) the same signed response answers it on both sides
    checks.append(
        (
            "both bundles hold the same signed response",
            None
            if any(x[1] is not None and x[1] == y[1] for x, y in pairs)
            else "the responses differ",
        )
    )
    return [
        Check(i, what, reason is None, reason or "") for i, (what, reason) in enumerate(checks, 1)
    ]
