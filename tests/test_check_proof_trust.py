"""``exchange log check-proof --trust``: a proof file as evidence on its own (issue 14).

Before, check-proof checked the Merkle math and that the root is the one inside the tree head's
JWS payload, never who signed that payload: a proof whose head a forger signed with any key
printed "OK". Now, with the auditor's trust folder, every tree head the file names must be signed
by a signing key of the log's owner (a certificate issued through an approved CA, valid when it
signed: the same rule as ``log verify`` and ``audit verify``, in ``trustcore.treeheads``), and
time-stamped by an approved TSA; without --trust the output says that only the math was checked.

The log is a real SQLite file written by :class:`MessageLog`; the certificates come from a real
CA and the time-stamps are real RFC 3161 tokens of an approved TSA.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.audit.proofcheck import check_proof_file
from exchange.audit.trustdir import TrustMaterial
from exchange.cli.log import group
from exchange.identifiers import parse_member
from exchange.messagelog.store import MessageLog, TreeHead
from exchange.protocol.canonical import b64url, b64url_decode
from exchange.protocol.jws import Signer, unverified_payload
from exchange.trust.keys import cert_pem, generate_key
from exchange.trust.profiles import sign_template
from exchange.trustcore.treeheads import tree_head_payload
from tests.test_archive import OWNER, Pki, pki  # noqa: F401

STAMPED = 6  # the head of size 6 is time-stamped; the one of size 8 is not
MOH = parse_member("PS/GOV/MOH")


@dataclass(frozen=True)
class Fixture:
    db: Path
    trust: Path
    heads: dict[int, TreeHead]
    pki: Pki


async def _log(path: Path, pki: Pki) -> dict[int, TreeHead]:  # noqa: F811
    heads: dict[int, TreeHead] = {}
    with MessageLog(path, pki.signer, owner=OWNER) as log:
        for i in range(8):
            await log.append({"message_id": f"m-{i}", "side": "provider", "status": "ok"})
            head = await log.sign_tree_head()
            assert head is not None
            heads[head.size] = head
        token, gen_time = pki.stamp(heads[STAMPED])
        await log.add_timestamp(STAMPED, token, "Test TSA", gen_time)
    return heads


@pytest.fixture
async def fx(tmp_path: Path, pki: Pki) -> Fixture:  # noqa: F811
    db = tmp_path / "messagelog.sqlite"
    heads = await _log(db, pki)
    trust = tmp_path / "trust"
    for sub, cert in (("ca", pki.ca.cert), ("tsa", pki.tsa_cert)):
        (trust / sub).mkdir(parents=True)
        (trust / sub / "cert.pem").write_text(cert_pem(cert))
    (trust / "owner.txt").write_text(f"{OWNER}\n")
    return Fixture(db, trust, heads, pki)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args])


def prove(fx: Fixture, out: Path, *extra: str, message_id: str = "m-2") -> Path:
    done = run("prove", "--db", fx.db, "--id", message_id, "-o", out, *extra)
    assert done.exit_code == 0, done.output
    return out


def edited(path: Path, change: Any) -> Path:
    document = orjson.loads(path.read_bytes())
    change(document)
    out = path.with_name("edited.json")
    out.write_bytes(orjson.dumps(document))
    return out


def failed(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("FAILED")]


def resigned(fx: Fixture, signer: Signer, proof: Path) -> Path:
    """The proof with its tree head re-signed by ``signer`` (same payload) and that signer's
    certificate in place of the owner's."""

    def change(document: dict[str, Any]) -> None:
        [p] = document["proofs"]
        p["tree_head_jws"] = signer.sign(unverified_payload(p["tree_head_jws"]))
        p["certificates"] = {signer.thumbprint: cert_pem(signer.cert)}

    return edited(proof, change)


# --- a genuine proof -------------------------------------------------------------------------


async def test_a_genuine_proof_is_evidence_with_the_trust_folder(
    fx: Fixture, tmp_path: Path
) -> None:
    proof = prove(fx, tmp_path / "proof.json")
    [p] = orjson.loads(proof.read_bytes())["proofs"]
    assert p["tree_size"] == STAMPED  # the latest time-stamped head, not the latest one (8)
    assert list(p["certificates"]) == [fx.pki.signer.thumbprint]
    assert b64url_decode(p["timestamp_token"])
    result = run("check-proof", proof, "--trust", fx.trust)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"log owner: {OWNER} (from {fx.trust / 'owner.txt'})"
    assert f"ok     the tree head of size {STAMPED} is signed by the log's owner {OWNER}" in (
        result.output
    )
    assert "is time-stamped by an approved TSA: it existed at 20" in result.output
    assert lines[-1].startswith(
        f"{proof}: OK: record(s) 2 of exchange m-2 are in the log of {OWNER} under its tree "
        f"head of size {STAMPED}, which existed at 20"
    ), lines[-1]
    as_json = json.loads(run("check-proof", proof, "--trust", fx.trust, "--json").output)
    assert as_json["ok"] and as_json["trust_checked"] and as_json["owner"] == str(OWNER)
    assert [c["ok"] for c in as_json["checks"]] == [True] * 4


async def test_without_trust_it_says_only_the_math_was_checked(fx: Fixture, tmp_path: Path) -> None:
    proof = prove(fx, tmp_path / "proof.json")
    result = run("check-proof", proof)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"{proof}: Merkle math OK; the tree head's signature and time-stamp were NOT checked "
        "(give --trust DIR from `exchange audit trust-export`)"
    )
    assert "signed by" not in result.output
    assert json.loads(run("check-proof", proof, "--json").output)["trust_checked"] is False


async def test_a_consistency_proof_checks_both_heads(fx: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cons.json"
    assert run("consistency", "--db", fx.db, "--from", 2, "--to", STAMPED, "-o", out).exit_code == 0
    result = run("check-proof", out, "--trust", fx.trust)
    # the head of size 2 is not time-stamped: the file proves the log grew, not when
    assert result.exit_code == 1, result.output
    assert failed(result) == [
        "FAILED the tree head of size 2 is time-stamped by an approved TSA: the proof file holds "
        "no time-stamp token for it: it proves no time (prove against a time-stamped tree head: "
        "`exchange log heads --stamped`)"
    ]
    assert f"ok     the tree head of size {STAMPED} is time-stamped" in result.output
    assert result.output.count(f"is signed by the log's owner {OWNER}") == 2


# --- what an attacker would try ---------------------------------------------------------------


async def test_a_head_signed_by_another_member_fails(fx: Fixture, tmp_path: Path) -> None:
    """Health's genuine signing key (issued by the approved CA) re-signs Interior's head: the
    Merkle math and the time-stamp... of another JWS; the signature is not the owner's."""
    key = generate_key()
    back = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    health = Signer(key, fx.pki.ca.issue(key.public_key(), sign_template(MOH), now=back))
    bad = resigned(fx, health, prove(fx, tmp_path / "proof.json"))
    result = run("check-proof", bad, "--trust", fx.trust)
    assert result.exit_code == 1, result.output
    [signature, stamp] = failed(result)
    assert signature.endswith(
        f"tree head: signed by member {MOH}, not by the log's owner {OWNER.owner} (server {OWNER})"
    ), signature
    assert "time-stamp is over another hash than the tree head" in stamp
    assert run("check-proof", bad).exit_code == 0  # the math alone cannot see it


async def test_a_head_signed_with_an_unapproved_cas_key_fails(fx: Fixture, tmp_path: Path) -> None:
    bad = resigned(fx, fx.pki.rogue, prove(fx, tmp_path / "proof.json"))
    [signature, _] = failed(run("check-proof", bad, "--trust", fx.trust))
    assert "is not issued by a trusted CA" in signature


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(lambda p: p["proof"].__setitem__(0, b64url(b"\x01" * 32)),
                     "FAILED audit path of", id="path-hash-edited"),
        pytest.param(lambda p: p.update(seq=p["seq"] + 1), "FAILED audit path of",
                     id="seq-edited"),
        pytest.param(lambda p: p.update(tree_size=8), "FAILED root and size equal those inside",
                     id="size-edited"),
        pytest.param(lambda p: p.update(certificates={}),
                     "is not in the proof file", id="certificate-removed"),
        pytest.param(lambda p: p.update(timestamp_token=b64url(b"0" * 40)),
                     "time-stamp does not verify", id="token-garbage"),
        pytest.param(lambda p: p.update(timestamp_token="%%%"),
                     "time-stamp does not verify", id="token-not-base64url"),
        pytest.param(lambda p: p.update(timestamp_token=None), "it proves no time",
                     id="token-removed"),
    ],
)  # fmt: skip
async def test_an_edited_proof_file_fails_in_one_line(
    fx: Fixture, tmp_path: Path, change: Any, reason: str
) -> None:
    proof = edited(prove(fx, tmp_path / "proof.json"), lambda d: change(d["proofs"][0]))
    result = run("check-proof", proof, "--trust", fx.trust)
    assert result.exit_code == 1, result.output
    assert any(reason in line for line in failed(result)), result.output
    assert result.output.splitlines()[-1] == f"{proof}: FAILED"


async def test_an_edited_root_in_proof_and_head_fails_the_signature(
    fx: Fixture, tmp_path: Path
) -> None:
    """The forger rewrites the head's payload to a root of their choice, so the math agrees;
    without the owner's key the signature cannot."""
    forged_root = b"\x07" * 32

    def change(document: dict[str, Any]) -> None:
        [p] = document["proofs"]
        header, payload, signature = p["tree_head_jws"].split(".")
        head = orjson.loads(b64url_decode(payload))
        head.update(root=b64url(forged_root), size=1)
        p["tree_head_jws"] = ".".join((header, b64url(orjson.dumps(head)), signature))
        p.update(root=b64url(forged_root), leaf_hash=b64url(forged_root), seq=0, tree_size=1,
                 proof=[])  # fmt: skip

    proof = edited(prove(fx, tmp_path / "proof.json"), change)
    result = run("check-proof", proof, "--trust", fx.trust)
    assert result.exit_code == 1, result.output
    assert failed(result)[0].endswith("tree head: signature: signature does not verify"), (
        result.output
    )
    assert run("check-proof", proof).exit_code == 0  # the math alone is fooled


async def test_another_owner_fails(fx: Fixture, tmp_path: Path) -> None:
    proof = prove(fx, tmp_path / "proof.json")
    result = run("check-proof", proof, "--trust", fx.trust, "--owner", "PS/GOV/MOH/ss1")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "log owner: PS/GOV/MOH/ss1 (from --owner)"
    assert "not by the log's owner PS/GOV/MOH" in failed(result)[0]


async def test_a_head_without_time_stamp_proves_no_time(fx: Fixture, tmp_path: Path) -> None:
    proof = prove(fx, tmp_path / "proof.json", "--size", "8")
    result = run("check-proof", proof, "--trust", fx.trust)
    assert result.exit_code == 1
    assert failed(result) == [
        "FAILED the tree head of size 8 is time-stamped by an approved TSA: the proof file holds "
        "no time-stamp token for it: it proves no time (prove against a time-stamped tree head: "
        "`exchange log heads --stamped`)"
    ]


async def test_prove_says_when_no_time_stamped_head_covers_the_record(
    fx: Fixture, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        group, ["prove", "--db", str(fx.db), "--id", "m-7", "-o", str(tmp_path / "p.json")]
    )
    assert result.exit_code == 0, result.output
    assert "note: the tree head of size 8 is not time-stamped yet" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--owner", "PS/GOV/MOI/ss1"], 2, "error: --owner needs --trust",
                     id="owner-without-trust"),
        pytest.param(["--trust", "{empty}"], 2, "does not exist: run `exchange audit trust-export`",
                     id="trust-folder-without-certificates"),
        pytest.param(["--trust", "{trust}", "--owner", "PS/GOV"], 2,
                     "error: --owner: invalid security server identifier 'PS/GOV'",
                     id="owner-not-a-server"),
    ],
)  # fmt: skip
async def test_usage_errors_are_one_line(
    fx: Fixture, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    proof = prove(fx, tmp_path / "proof.json")
    argv = [a.format(empty=tmp_path / "empty", trust=fx.trust) for a in args]
    result = run("check-proof", proof, *argv)
    assert result.exit_code == code, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output


def test_a_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{not json")
    result = run("check-proof", tmp_path / "p.json", "--trust", tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


async def test_a_time_stamp_older_than_its_head_proves_nothing(fx: Fixture, tmp_path: Path) -> None:
    """Whoever holds the owner's key dates a head ten minutes ahead and has it stamped now:
    the time-stamp would vouch for a head that did not exist yet. The same check as `log
    verify`'s (trustcore.treeheads.verify_head_timestamp) refuses it."""
    proof = prove(fx, tmp_path / "proof.json")
    [p] = orjson.loads(proof.read_bytes())["proofs"]
    stated = orjson.loads(unverified_payload(p["tree_head_jws"]))
    later = stated["signed_at"] + 600_000
    payload = tree_head_payload(stated["log"], OWNER, stated["size"], b64url_decode(stated["root"]),
                                later)  # fmt: skip
    token = fx.pki.signer.sign(payload)
    stamp, _ = fx.pki.stamp(TreeHead(stated["log"], stated["size"], b"", later, token))

    def change(document: dict[str, Any]) -> None:
        document["proofs"][0].update(tree_head_jws=token, timestamp_token=b64url(stamp))

    result = run("check-proof", edited(proof, change), "--trust", fx.trust)
    assert result.exit_code == 1, result.output
    [stamp_failed] = failed(result)
    assert "precedes the tree head's signing time" in stamp_failed, result.output


@pytest.mark.parametrize("command", ["verify", "correlate"])
def test_an_owner_that_is_no_server_is_a_usage_error_for_audit_too(
    tmp_path: Path, command: str
) -> None:
    from exchange.cli.audit import group as audit_group

    (tmp_path / "a.zip").write_bytes(b"")
    files = [str(tmp_path / "a.zip")] * (2 if command == "correlate" else 1)
    owners = ["--owner", "PS/GOV"] * (2 if command == "correlate" else 1)
    result = CliRunner().invoke(audit_group, [command, *files, "--trust", str(tmp_path), *owners])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --owner: invalid security server identifier")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["seq", "tree_size", "leaf_hash", "root", "proof", "tree_head_jws",
                            "timestamp_token", "certificates", "kind"]),
       value=_JSON)  # fmt: skip
def test_any_proof_file_gets_checks_never_a_crash(
    proof_document: Any, key: str, value: Any
) -> None:
    """A parser's contract: whatever a proof file holds, check-proof answers with its checks."""
    trust, document = proof_document
    broken = json.loads(json.dumps(document))
    original = broken["proofs"][0].get(key)
    broken["proofs"][0][key] = value
    for candidate in (broken, value, {"proofs": [value]}):
        report = check_proof_file(candidate, trust, OWNER)
        assert all(isinstance(c.ok, bool) for c in report.checks)
    if value != original and key != "certificates":
        assert not check_proof_file(broken, trust, OWNER).ok


@pytest.fixture
def proof_document(fx: Fixture, tmp_path: Path) -> tuple[TrustMaterial, Any]:
    proof = prove(fx, tmp_path / "proof.json")
    return TrustMaterial.load(fx.trust), orjson.loads(proof.read_bytes())
