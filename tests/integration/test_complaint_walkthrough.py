"""The auditor's complaint walk-through of docs/auditor.md, run against a real federation.

A citizen complains: "a clerk at the post office looked up my family record today". The post
office's window (client ``PS/GOV/PALPOST/unified-window``) names its clerk in ``X-Road-UserId``
on every exchange; Interior's policy grants the window a person, not a family. The auditor runs
the guide's commands, as typed, on the logs the real security servers wrote (Interior's and the
post office's, real TLS, real RFC 3161 time-stamps): finds the clerk's exchanges of the day by
user id and path, picks the time-stamped tree head, exports both sides' evidence bundles,
verifies and correlates them, and checks a proof file with the trust folder alone. The same
exchange made without a user id shows what such a record cannot say.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner

from exchange.cli import main
from exchange.trust.keys import cert_pem, generate_key
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trust.tsa_service import create_tsa_app
from tests.integration.conftest import PERSON, WINDOW, Net
from tests.integration.support import new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

TSA_NAME = "Walk-through TSA"
PERSONS = "/r1/PS/GOV/MOI/population-registry/persons"
NID = PERSON["national_id"]


@dataclass(frozen=True)
class Scene:
    moi: str
    palpost: str
    clerk: str
    family_id: str
    unattributed_id: str
    day: tuple[str, str]
    out: Path


def exchange(*args: str | Path) -> tuple[int, str]:
    """``exchange ARGS`` as the auditor types it (stdout and stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


async def run(*args: str | Path) -> tuple[int, str]:
    # in a thread: `audit export` runs its own event loop, the servers run in this one
    return await asyncio.to_thread(exchange, *args)


async def _call(net: Net, path: str, clerk: str | None) -> str:
    message_id = new_id("walk")
    headers = {"X-Road-Id": message_id, "X-Road-Purpose": "citizen-service"}
    if clerk is not None:
        headers["X-Road-UserId"] = clerk
    await net.call("palpost", path, headers=headers)
    return message_id


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def scene(net: Net, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scene]:
    """The day's exchanges, with a real TSA approved so that the tree heads are time-stamped."""
    out = tmp_path_factory.mktemp("complaint")
    key = generate_key()
    tsa_cert = issue_tsa_cert(net.ca, key.public_key(), TSA_NAME)
    runner = web.AppRunner(create_tsa_app(key, tsa_cert, serial_db=out / "tsa.sqlite"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    with net.registry() as reg:
        reg.add_tsa(TSA_NAME, f"http://127.0.0.1:{runner.addresses[0][1]}/", cert_pem(tsa_cert))
    await publish(net)
    try:
        clerk, colleague = new_id("clerk"), new_id("clerk")
        await _call(net, f"{PERSONS}/{NID}", clerk)
        family_id = await _call(net, f"{PERSONS}/{NID}/family", clerk)
        await _call(net, f"{PERSONS}/{NID}", colleague)
        unattributed_id = await _call(net, f"{PERSONS}/{NID}/family", None)
        for name in ("moi", "palpost"):
            assert await net.servers[name].stamper.stamp_now() is not None
        today = dt.datetime.now(dt.UTC).date()
        day = (today.isoformat(), (today + dt.timedelta(days=1)).isoformat())
        configs = (str(net.servers[n].config.path) for n in ("moi", "palpost"))
        yield Scene(*configs, clerk, family_id, unattributed_id, day, out)
    finally:
        with net.registry() as reg:
            reg.remove_tsa(TSA_NAME)
        await publish(net)
        await runner.cleanup()


async def test_find_the_clerks_family_lookup_of_the_day(scene: Scene) -> None:
    since, until = scene.day
    code, out = await run("log", "show", "--config", scene.moi, "--user-id", scene.clerk,
                          "--path", "*/family", "--since", since, "--until", until)  # fmt: skip
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith("provider  403 Server.ServerProxy.AccessDenied"), out
    assert f"    request     GET /{NID}/family" in lines
    assert f"    user id     {scene.clerk}" in lines and f"    client      {WINDOW}" in lines
    assert f"    message id  {scene.family_id}" in lines
    assert lines[-1] == "1 record(s), as logged (`exchange log verify` checks them)"
    # the post office's own log: the clerk's exchanges of the day, both of them
    code, out = await run("log", "show", "--config", scene.palpost, "--user-id", scene.clerk,
                          "--since", since, "--until", until, "--json")  # fmt: skip
    shown = json.loads(out)
    assert [(r["side"], r["path"], r["http_status"]) for r in shown] == [
        ("consumer", f"/{NID}", 200),
        ("consumer", f"/{NID}/family", 403),
    ]


async def test_a_lookup_without_a_user_id_names_no_one(scene: Scene) -> None:
    code, out = await run("log", "show", "--config", scene.moi, "--id", scene.unattributed_id)
    assert code == 0, out
    assert "    user id     (none)" in out.splitlines()
    bundle = scene.out / "unattributed.zip"
    code, out = await run("audit", "export", "--config", scene.moi, "--id",
                          scene.unattributed_id, "-o", bundle)  # fmt: skip
    assert code == 0, out
    code, out = await run("audit", "trust-export", "--config", scene.moi, "-o", scene.out / "t0")
    code, out = await run("audit", "verify", bundle, "--trust", scene.out / "t0")
    assert code == 0, out
    assert "    user id     none stated" in out.splitlines()


async def test_the_evidence_of_both_sides_verifies_and_correlates(scene: Scene) -> None:
    code, out = await run("log", "show", "--config", scene.moi, "--id", scene.family_id, "--json")
    [record] = json.loads(out)
    code, out = await run("log", "heads", "--config", scene.moi, "--covers", str(record["seq"]),
                          "--stamped", "--limit", "1")  # fmt: skip
    assert code == 0, out
    assert out.startswith("size ") and "time-stamped" in out.splitlines()[0], out
    trust = scene.out / "trust"
    code, out = await run("audit", "trust-export", "--config", scene.moi, "-o", trust)
    assert code == 0, out
    provider, consumer = scene.out / "provider.zip", scene.out / "consumer.zip"
    for config, bundle in ((scene.moi, provider), (scene.palpost, consumer)):
        code, out = await run("audit", "export", "--config", config, "--id", scene.family_id,
                              "-o", bundle)  # fmt: skip
        assert code == 0, out
    code, out = await run("audit", "verify", provider, "--trust", trust)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"log owner: PS/GOV/MOI/ss1 (from {trust / 'owner.txt'})"
    assert (
        lines[1] == f"record {record['seq']}: the provider's record of exchange {scene.family_id}"
    )
    assert lines[2].startswith("  from the client's signed request (member PS/GOV/PALPOST, ")
    for line in (
        f"    client      {WINDOW}",
        f"    request     GET /{NID}/family",
        f"    user id     {scene.clerk}",
        "    purpose     citizen-service",
        "    status      403 Server.ServerProxy.AccessDenied",
        "    released    nothing (refused: the answer is the error)",
    ):
        assert line in lines, (line, out)
    assert lines[-1] == "provider.zip: OK"
    code, out = await run("audit", "verify", consumer, "--trust", trust,
                          "--owner", "PS/GOV/PALPOST/ss1")  # fmt: skip
    assert code == 0, out
    assert "the consumer's record of exchange" in out.splitlines()[1]
    code, out = await run("audit", "correlate", consumer, provider, "--trust", trust,
                          "--owner", "PS/GOV/PALPOST/ss1", "--owner", "PS/GOV/MOI/ss1")  # fmt: skip
    assert code == 0, out
    assert out.count(" ... ok") == 5


async def test_a_proof_file_is_evidence_with_the_trust_folder(scene: Scene) -> None:
    trust, proof = scene.out / "trust-proof", scene.out / "proof.json"
    code, out = await run("audit", "trust-export", "--config", scene.moi, "-o", trust)
    code, out = await run("log", "prove", "--config", scene.moi, "--id", scene.family_id,
                          "-o", proof)  # fmt: skip
    assert code == 0, out
    code, out = await run("log", "check-proof", proof, "--trust", trust)
    assert code == 0, out
    assert "is signed by the log's owner PS/GOV/MOI/ss1" in out
    assert "is time-stamped by an approved TSA: it existed at" in out
    assert out.splitlines()[-1].startswith(f"{proof}: OK: record(s) ")
    # the post office's trust folder names another owner: Interior's proof is not its log's
    other = scene.out / "trust-palpost"
    await run("audit", "trust-export", "--config", scene.palpost, "-o", other)
    code, out = await run("log", "check-proof", proof, "--trust", other)
    assert code == 1 and "not by the log's owner PS/GOV/PALPOST" in out, out
