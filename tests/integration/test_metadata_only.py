"""Metadata-only logging (``[messagelog] bodies = false``, issue 4 item 6): records keep the
signed request and response and the body digests, not the bodies; verification still passes and
says plainly what such records can no longer show."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.audit.bundle import bundle_notes
from exchange.cli import main
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.query import query_records
from exchange.server.logcheck import verify_server_log
from tests.integration.conftest import Net
from tests.integration.support import export_bundle_of, export_trust_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/MDP")
CONSUMER = parse_member("PS/GOV/MDC")
DESK = parse_subsystem("PS/GOV/MDC/desk")
REGISTRY = parse_subsystem("PS/GOV/MDP/registry")
POLICY = """
provider = "PS/GOV/MDP"
[[grant]]
id = "desk"
client = "PS/GOV/MDC/desk"
service = "PS/GOV/MDP/registry/echo"
methods = ["GET"]
"""
NO_BODIES = {"messagelog": {"path": "messagelog.sqlite", "bodies": False}}


async def test_metadata_only_log_verifies_and_says_what_it_cannot_show(
    net: Net, tmp_path: Path
) -> None:
    with net.registry() as reg:
        reg.add_member(PROVIDER, "Metadata provider")
        reg.add_member(CONSUMER, "Metadata consumer")
    provider = await net.add_server(
        "mdp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        extra=NO_BODIES,
    )
    consumer = await net.add_server(
        "mdc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK], extra=NO_BODIES
    )
    status, _, body = await net.call(
        "mdc", "/r1/PS/GOV/MDP/registry/echo/1", client=str(DESK), headers={"X-Road-Id": "md-1"}
    )
    assert status == 200, body
    for server in (consumer, provider):
        [record] = query_records(server.config.log_path, message_id="md-1")
        assert record.entry["bodies"] == "digests-only"
        assert "request_body" not in record.entry and "response_body" not in record.entry
        assert record.entry["request_jws"] and record.entry["response_jws"]
        assert verify_server_log(server.config).ok
    result = CliRunner().invoke(
        main, ["log", "verify", "--config", str(consumer.config.path), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "logged without bodies (metadata-only logging)" in result.output
    assert "cannot be shown" in result.output
    # an evidence bundle of such a record says what it cannot show (against a tree head over
    # it: the batch's own is stored about a millisecond after the answer)
    await consumer.log.sign_tree_head()
    bundle = await export_bundle_of(consumer, "md-1", tmp_path / "md.zip")
    [note] = bundle_notes(bundle)
    assert note.startswith("record ") and "without bodies (metadata-only logging)" in note
    trust = export_trust_of(consumer, tmp_path / "trust")
    result = CliRunner().invoke(main, ["audit", "verify", str(bundle), "--trust", str(trust)])
    assert f"note: {note}" in result.output
