"""Inclusion and consistency proofs out of a real message log, and ``exchange log`` commands.

The log is a real SQLite file written by :class:`MessageLog` in several batches (one signed tree
head per batch). Expected roots come from a brute-force MTH over the stored entries, written here
from RFC 9162 §2.1.1 and independent of :mod:`exchange.messagelog.merkle`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from exchange.cli.common import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE
from exchange.cli.log import group
from exchange.errors import ConfigurationError
from exchange.identifiers import SecurityServerId
from exchange.messagelog.proofs import (
    UnknownRecord,
    check_consistency,
    check_inclusion,
    consistency_between,
    inclusion_for_message,
)
from exchange.messagelog.store import MessageLog
from exchange.protocol.jws import Signer
from exchange.trust.keys import generate_key, self_signed_certificate

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")

BATCHES = (1, 2, 3, 5, 8, 13)
HEAD_SIZES = tuple(itertools.accumulate(BATCHES))
TOKEN = b"\x30\x03\x02\x01\x00"


def mth(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH by its recursive definition, over raw entries."""
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def message_id(i: int) -> str:
    """Records 4 and 5 are both sides of one exchange; every other record has its own id."""
    return "msg-4" if i == 5 else f"msg-{i}"


def entry(i: int) -> dict[str, Any]:
    return {
        "message_id": message_id(i),
        "client": "PS/GOV/MOF/tax",
        "service": "PS/GOV/MOI/population-registry/persons",
        "side": "provider" if i == 5 else "consumer",
        "status": "200",
    }


@dataclass(frozen=True)
class Log:
    path: Path
    entries: list[bytes]


async def _build(path: Path) -> None:
    key = generate_key()
    signer = Signer(key, self_signed_certificate(key, "PS/GOV/MOI/ss1 signing"))
    with MessageLog(path, signer, owner=OWNER) as log:
        done = 0
        for count in BATCHES:
            await log.append_many([entry(done + i) for i in range(count)])
            done += count
        await log.add_timestamp(HEAD_SIZES[-1], TOKEN, "test TSA", 0)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    path = tmp_path_factory.mktemp("proofs") / "messagelog.sqlite"
    asyncio.run(_build(path))
    conn = sqlite3.connect(path)
    try:
        sizes = [s for (s,) in conn.execute("SELECT size FROM tree_heads ORDER BY size")]
        entries = [e for (e,) in conn.execute("SELECT entry FROM records ORDER BY seq")]
    finally:
        conn.close()
    assert tuple(sizes) == HEAD_SIZES, "one signed tree head per batch"
    return Log(path, entries)


def run(*args: str | int | Path) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args])


def said(result: Result) -> str:
    return " ".join(result.stderr.split())


# --- the library -------------------------------------------------------------------------------


def test_inclusion_of_every_record_in_every_head(log: Log) -> None:
    for size in HEAD_SIZES:
        for seq in range(size):
            proofs = inclusion_for_message(log.path, message_id(seq), size=size)
            (proof,) = [p for p in proofs if p.seq == seq]
            assert proof.tree_size == size
            assert proof.root == mth(log.entries[:size])
            assert proof.leaf_hash == hashlib.sha256(b"\x00" + log.entries[seq]).digest()
            assert check_inclusion(proof.to_dict())


def test_latest_head_and_both_sides_of_one_exchange(log: Log) -> None:
    proofs = inclusion_for_message(log.path, "msg-4")
    assert [p.seq for p in proofs] == [4, 5]
    for p in proofs:
        assert p.tree_size == HEAD_SIZES[-1]
        assert p.root == mth(log.entries)
        assert p.timestamp_token == TOKEN
        assert check_inclusion(json.loads(json.dumps(p.to_dict())))
    earlier = inclusion_for_message(log.path, "msg-4", size=HEAD_SIZES[2])
    assert {p.timestamp_token for p in earlier} == {None}


def test_consistency_between_every_pair_of_heads(log: Log) -> None:
    for m, n in itertools.combinations_with_replacement(HEAD_SIZES, 2):
        proof = consistency_between(log.path, m, n)
        assert (proof.root_m, proof.root_n) == (mth(log.entries[:m]), mth(log.entries[:n]))
        assert check_consistency(proof.to_dict()), (m, n)


def test_a_proof_for_another_record_or_head_fails(log: Log) -> None:
    (a,) = inclusion_for_message(log.path, "msg-0")
    (b,) = inclusion_for_message(log.path, "msg-1")
    assert not check_inclusion({**a.to_dict(), "leaf_hash": b.to_dict()["leaf_hash"]})
    older = consistency_between(log.path, HEAD_SIZES[0], HEAD_SIZES[1]).to_dict()
    assert not check_inclusion({**a.to_dict(), "tree_head_jws": older["head_m_jws"]})
    swapped = consistency_between(log.path, HEAD_SIZES[1], HEAD_SIZES[3]).to_dict()
    assert not check_consistency({**swapped, "head_n_jws": older["head_m_jws"]})


def test_unknown_id_and_missing_head(log: Log) -> None:
    with pytest.raises(UnknownRecord, match="no record with X-Road-Id 'nope'"):
        inclusion_for_message(log.path, "nope")
    with pytest.raises(ConfigurationError, match="nearest signed sizes: 1, 3, 6, 11, 19, 32"):
        inclusion_for_message(log.path, "msg-0", size=7)
    with pytest.raises(ConfigurationError, match="0 < --from <= --to"):
        consistency_between(log.path, HEAD_SIZES[2], HEAD_SIZES[1])


# --- the commands ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["prove", "consistency", "check-proof"])
def test_help_has_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == EXIT_OK
    assert "Example:" in result.stdout and f"exchange log {command}" in result.stdout


def test_prove_prints_readably(log: Log) -> None:
    result = run("prove", "--db", log.path, "--id", "msg-4")
    assert result.exit_code == EXIT_OK, result.output
    assert "record seq 4 of msg-4" in result.stdout and "record seq 5 of msg-4" in result.stdout
    assert f"root:       {mth(log.entries).hex()}" in result.stdout
    assert "time-stamped" in result.stdout


def test_prove_json_to_stdout(log: Log) -> None:
    result = run("prove", "--db", log.path, "--id", "msg-7", "--size", HEAD_SIZES[3], "--json")
    assert result.exit_code == EXIT_OK, result.output
    document = json.loads(result.stdout)
    assert document["message_id"] == "msg-7"
    (proof,) = document["proofs"]
    assert proof["tree_size"] == HEAD_SIZES[3] and check_inclusion(proof)


def test_consistency_prints_readably(log: Log) -> None:
    result = run("consistency", "--db", log.path, "--from", 3, "--to", 19)
    assert result.exit_code == EXIT_OK, result.output
    assert "tree of size 3 is a prefix of tree of size 19" in result.stdout
    assert mth(log.entries[:19]).hex() in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["prove", "--id", "msg-9"], id="inclusion"),
        pytest.param(["prove", "--id", "msg-4", "--size", "11"], id="inclusion-two-records"),
        pytest.param(["consistency", "--from", "6", "--to", "32"], id="consistency"),
        pytest.param(["consistency", "--from", "11", "--to", "11"], id="consistency-same-size"),
    ],
)
def test_written_proofs_check(log: Log, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "proof.json"
    assert run(*args, "--db", log.path, "-o", out).exit_code == EXIT_OK
    result = run("check-proof", out)
    assert result.exit_code == EXIT_OK, result.output
    assert "FAILED" not in result.stdout and "OK" in result.stdout


def _flip(text: str, field: str) -> str:
    """Change one character of the first value of ``field`` (a string's, or a number's digit)."""
    at = text.index(f'"{field}": ') + len(field) + 4
    if text[at].isdigit():
        new = "1" if text[at] != "1" else "2"
    else:
        at = text.index('"', at) + 6
        new = "B" if text[at] != "B" else "C"
    return text[:at] + new + text[at + 1 :]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        pytest.param(["prove", "--id", "msg-9"], "proof", id="inclusion-path-hash"),
        pytest.param(["prove", "--id", "msg-9"], "root", id="inclusion-root"),
        pytest.param(["prove", "--id", "msg-9"], "leaf_hash", id="inclusion-leaf-hash"),
        pytest.param(["prove", "--id", "msg-9"], "seq", id="inclusion-seq"),
        pytest.param(["prove", "--id", "msg-9"], "tree_size", id="inclusion-tree-size"),
        pytest.param(["prove", "--id", "msg-9"], "kind", id="inclusion-kind"),
        pytest.param(["consistency", "--from", "6", "--to", "32"], "proof", id="consistency-path"),
        pytest.param(["consistency", "--from", "6", "--to", "32"], "root_m", id="consistency-m"),
        pytest.param(["consistency", "--from", "6", "--to", "32"], "n", id="consistency-size"),
    ],
)
def test_one_changed_byte_fails_check_proof(
    log: Log, tmp_path: Path, args: list[str], field: str
) -> None:
    out = tmp_path / "proof.json"
    assert run(*args, "--db", log.path, "-o", out).exit_code == EXIT_OK
    text = out.read_text()
    changed = _flip(text, field)
    assert sum(a != b for a, b in zip(text, changed, strict=True)) == 1
    out.write_text(changed)
    result = run("check-proof", out)
    assert result.exit_code == EXIT_CHECK_FAILED, result.output
    assert "FAILED" in result.stdout


def test_check_proof_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    out.write_text('{"kind": "inclusion",')
    result = run("check-proof", out)
    assert result.exit_code == EXIT_CHECK_FAILED
    assert "is not a JSON proof file" in said(result)


def test_prove_unknown_id_exits_1(log: Log) -> None:
    result = run("prove", "--db", log.path, "--id", "no-such-exchange")
    assert result.exit_code == EXIT_CHECK_FAILED
    assert "no record with X-Road-Id 'no-such-exchange'" in said(result)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["prove", "--id", "msg-0", "--size", "7"], id="prove-size"),
        pytest.param(["consistency", "--from", "7", "--to", "32"], id="consistency-from"),
        pytest.param(["consistency", "--from", "6", "--to", "40"], id="consistency-to"),
    ],
)
def test_size_without_signed_head_exits_2(log: Log, args: list[str]) -> None:
    result = run(*args, "--db", log.path)
    assert result.exit_code == EXIT_USAGE
    assert "no signed tree head of size" in said(result)
    assert "nearest signed sizes: " in said(result)


def test_prove_needs_config_or_db() -> None:
    result = run("prove", "--id", "msg-0")
    assert result.exit_code == EXIT_USAGE
    assert "give --config" in said(result)
